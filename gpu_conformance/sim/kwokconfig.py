"""Generate kwok's configuration (stages and pod logs) from a scenario."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from gpu_conformance.sim.outputs import behaviour
from gpu_conformance.sim.scenario import CONTAINERS, KNOWN_WORKLOADS, NodeSpec
# kwok serves logs by pod name: the simulator keys them on the names the suite gives its pods.
from gpu_conformance.workloads import RUNS_FOR_ANNOTATION, WORKLOAD_LABEL, pod_name

NOT_READY_LABEL = "sim.gpu-conformance.io/not-ready"
NODE_LEASE_S = 40  # the kubelet's default lease: renewed every 10 s
POD_CIDR = "239.255.0.1/16"
STRANDED_LABEL = "sim.gpu-conformance.io/stranded"
COMPONENT_LABEL = "sim.gpu-conformance.io/component"
_STAGES = Path(__file__).parent / "stages" / "base.yaml"

_COMPLETE_TEMPLATE = """{{{{ $now := Now }}}}
{{{{ $started := or .status.startTime $now }}}}
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  imageID: {{{{ printf "sim://%s" .image | Quote }}}}
  containerID: {{{{ printf "sim://%s" .name | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
      exitCode: {exit_code}
      finishedAt: {{{{ $now | Quote }}}}
      reason: {reason}
      startedAt: {{{{ $started | Quote }}}}
{{{{ end }}}}
conditions:
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "False"
  type: Ready
  reason: PodCompleted
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "False"
  type: ContainersReady
  reason: PodCompleted
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "True"
  type: Initialized
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "True"
  type: PodScheduled
phase: {phase}
"""

_RUNNING = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
_NOT_DELETING = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_RUN_TO_COMPLETION = {"key": ".spec.restartPolicy", "operator": "In", "values": ["Never", "OnFailure"]}


def _pod_stage(name: str, expressions: list[dict[str, Any]], template: str, delay_ms: int | None = None) -> dict[str, Any]:
    """A kwok Stage for pods: selector expressions, a status template, an optional delay."""
    spec: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": expressions},
        "next": {"statusTemplate": template},
    }
    if delay_ms is not None:
        spec["delay"] = {"durationMilliseconds": delay_ms}
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def _complete_stage(name: str, exit_code: int, extra: list[dict[str, Any]], delay_ms: int = 300) -> dict[str, Any]:
    template = _COMPLETE_TEMPLATE.format(
        exit_code=exit_code,
        reason="Completed" if exit_code == 0 else "Error",
        phase="Succeeded" if exit_code == 0 else "Failed",
    )
    stage = _pod_stage(name, [_NOT_DELETING, _RUNNING, _RUN_TO_COMPLETION, *extra], template, delay_ms)
    # A pod that says how long it runs (RUNS_FOR_ANNOTATION) completes after that long, as its command would.
    stage["spec"]["delay"]["durationFrom"] = {"jq": {"expression": f'.metadata.annotations["{RUNS_FOR_ANNOTATION}"]'}}
    return stage


def _not_ready_stage(initialize: dict[str, Any]) -> dict[str, Any]:
    """node-initialize's twin for nodes labelled not-ready: same template, exclusive selector."""
    stage = copy.deepcopy(initialize)
    stage["metadata"]["name"] = "node-initialize-not-ready"
    stage["spec"]["selector"]["matchExpressions"] = [
        {"key": '.status.conditions.[] | select( .type == "Ready" ) | .status', "operator": "NotIn", "values": ["False"]},
        {"key": f'.metadata.labels["{NOT_READY_LABEL}"]', "operator": "In", "values": ["true"]},
    ]
    return stage


def _cri_log(text: str, when: dt.datetime) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return "".join(f"{stamp} stdout F {line}\n" for line in text.splitlines())


# jq: "<stack component>@<node>" for a stack pod ("@node" for any other pod).
COMPONENT_AT_NODE = f'(.metadata.labels["{COMPONENT_LABEL}"] // "") + "@" + (.spec.nodeName // "")'

_CRASH_TEMPLATE = """{{ $now := Now }}
conditions:
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  imageID: {{ printf "sim://%s" .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 7
  lastState:
    terminated: {exitCode: 1, reason: Error, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
  state:
    waiting: {reason: CrashLoopBackOff, message: "back-off 5m0s restarting failed container (simulated)"}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _crash_stage(keys: list[str]) -> dict[str, Any]:
    """Stack pods named in the scenario crash-loop instead of becoming Ready."""
    pending = {"key": ".status.phase", "operator": "In", "values": ["Pending"]}
    at = {"key": COMPONENT_AT_NODE, "operator": "In", "values": keys}
    return _pod_stage("pod-crashloop", [_NOT_DELETING, pending, at], _CRASH_TEMPLATE)


# Each application changes the pod, which still matches, so kwok applies it again 2 s later: the
# restart count grows for as long as the pod lives (sprig's add1 is in kwok's template functions).
_RESTART_TEMPLATE = """{{ $now := Now }}
{{ $root := . }}
containerStatuses:
{{ range $i, $c := .spec.containers }}
{{ $old := index $root.status.containerStatuses $i }}
- image: {{ $c.image | Quote }}
  imageID: {{ printf "sim://%s" $c.image | Quote }}
  name: {{ $c.name | Quote }}
  ready: true
  started: true
  restartCount: {{ add1 $old.restartCount }}
  lastState:
    terminated: {exitCode: 2, reason: Error, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
  state:
    running: {startedAt: {{ $now | Quote }}}
{{ end }}
"""
RESTART_EVERY_MS = 2000


def _restart_stage(keys: list[str]) -> dict[str, Any]:
    """A Ready stack pod whose restart count goes up by one every 2 s."""
    at = {"key": COMPONENT_AT_NODE, "operator": "In", "values": keys}
    has_status = {"key": ".status.containerStatuses", "operator": "Exists"}
    return _pod_stage("pod-restarting", [_NOT_DELETING, _RUNNING, at, has_status], _RESTART_TEMPLATE, RESTART_EVERY_MS)


# jq: "<workload>@<node>" for a suite workload pod.
WORKLOAD_AT_NODE = f'(.metadata.labels["{WORKLOAD_LABEL}"] // "") + "@" + (.spec.nodeName // "")'
_POD_IP_BLOCK = "{{ $podIPs :="


def _ready_variants(ready: dict[str, Any], not_ready: list[str], no_ip: list[str]) -> list[dict[str, Any]]:
    """Twins of pod-ready for workload pods that run without becoming Ready, or Ready without a pod IP."""
    out = []
    template = ready["spec"]["next"]["statusTemplate"]
    if not_ready:
        stage = copy.deepcopy(ready)
        stage["metadata"]["name"] = "pod-running-not-ready"
        not_ready_template = re.sub(r'status: "True"(\s*)type: (Ready|ContainersReady)', r'status: "False"\1type: \2', template)
        stage["spec"]["next"]["statusTemplate"] = not_ready_template.replace("ready: true", "ready: false")
        stage["spec"]["selector"]["matchExpressions"].append({"key": WORKLOAD_AT_NODE, "operator": "In", "values": not_ready})
        out.append(stage)
    if no_ip:
        stage = copy.deepcopy(ready)
        stage["metadata"]["name"] = "pod-ready-no-ip"
        head, _, tail = template.partition(_POD_IP_BLOCK)
        stage["spec"]["next"]["statusTemplate"] = head + tail[tail.index("phase: Running"):]
        stage["spec"]["selector"]["matchExpressions"].append({"key": WORKLOAD_AT_NODE, "operator": "In", "values": no_ip})
        out.append(stage)
    if out:
        ready["spec"]["selector"]["matchExpressions"].append(
            {"key": WORKLOAD_AT_NODE, "operator": "NotIn", "values": sorted({*not_ready, *no_ip})})
    return out


def _jupyter_forward(nodes: list[tuple[str, NodeSpec]], port: int) -> dict[str, Any] | None:
    """Port 8888 of the notebook pods whose server answers goes to the simulated Jupyter on `port`."""
    names = sorted(pod_name("notebook", n) for n, spec in nodes if spec.gpus > 0 and behaviour("notebook", n, spec).answers_http)
    if not names:
        return None
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterPortForward", "metadata": {"name": "notebook-jupyter"},
            "spec": {"selector": {"matchNames": names},
                     "forwards": [{"ports": [8888], "target": {"address": "127.0.0.1", "port": port}}]}}


_STRANDED_TEMPLATE = """{{ $now := Now }}
conditions:
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: PodFailed}
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
phase: Failed
reason: UnexpectedAdmissionError
message: "Allocate failed due to no healthy devices present; cannot allocate unhealthy devices nvidia.com/gpu, which is unexpected"
startTime: {{ $now | Quote }}
"""


def _stranded_stage(ready: dict[str, Any]) -> dict[str, Any]:
    """Pods labelled stranded fail admission as the kubelet fails them when the device plugin is gone."""
    marked = {"key": f'.metadata.labels["{STRANDED_LABEL}"]', "operator": "In", "values": ["true"]}
    ready["spec"]["selector"]["matchExpressions"].append(
        {"key": f'.metadata.labels["{STRANDED_LABEL}"]', "operator": "DoesNotExist"})
    pending = {"key": ".status.phase", "operator": "In", "values": ["Pending"]}
    return _pod_stage("pod-stranded", [_NOT_DELETING, pending, marked], _STRANDED_TEMPLATE)


def _late_deletion_stages(delete: dict[str, Any], nodes: list[tuple[str, NodeSpec]]) -> list[dict[str, Any]]:
    """pod-delete's twins for nodes whose kubelet confirms deletions late (deletion_delay_s), one per delay;
    pod-delete itself is narrowed to the other nodes."""
    late: dict[int, list[str]] = {}
    for node, spec in nodes:
        if spec.deletion_delay_s:
            late.setdefault(round(spec.deletion_delay_s * 1000), []).append(node)
    if not late:
        return []
    delete["spec"]["selector"]["matchExpressions"].append(
        {"key": ".spec.nodeName", "operator": "NotIn", "values": sorted(n for members in late.values() for n in members)})
    out = []
    for delay_ms, members in sorted(late.items()):
        stage = copy.deepcopy(delete)
        stage["metadata"]["name"] = f"pod-delete-after-{delay_ms}ms"
        stage["spec"]["selector"]["matchExpressions"][-1] = {"key": ".spec.nodeName", "operator": "In", "values": sorted(members)}
        stage["spec"]["delay"] = {"durationMilliseconds": delay_ms}
        out.append(stage)
    return out


def generate(nodes: list[tuple[str, NodeSpec]], logs_dir: Path, crash_keys: list[str] | None = None,
             restart_keys: list[str] | None = None, jupyter_port: int | None = None) -> list[dict[str, Any]]:
    """All kwok config documents for these nodes; writes CRI log files under logs_dir."""
    docs: list[dict[str, Any]] = list(yaml.safe_load_all(_STAGES.read_text()))
    docs.append(_not_ready_stage(next(d for d in docs if d["metadata"]["name"] == "node-initialize")))
    not_ready = sorted(f"{w}@{n}" for n, spec in nodes for w in KNOWN_WORKLOADS if not behaviour(w, n, spec).ready)
    no_ip = sorted(f"{w}@{n}" for n, spec in nodes for w in KNOWN_WORKLOADS if not behaviour(w, n, spec).pod_ip)
    docs += _ready_variants(next(d for d in docs if d["metadata"]["name"] == "pod-ready"), not_ready, no_ip)
    docs.append(_stranded_stage(next(d for d in docs if d["metadata"]["name"] == "pod-ready")))
    if crash_keys:
        ready = next(d for d in docs if d["metadata"]["name"] == "pod-ready")
        ready["spec"]["selector"]["matchExpressions"].append({"key": COMPONENT_AT_NODE, "operator": "NotIn", "values": crash_keys})
        docs.append(_crash_stage(crash_keys))
    if restart_keys:
        docs.append(_restart_stage(restart_keys))
    docs += _late_deletion_stages(next(d for d in docs if d["metadata"]["name"] == "pod-delete"), nodes)
    # Pods that are not suite workloads run to completion successfully.
    docs.append(
        _complete_stage(
            "pod-complete-other",
            0,
            [{"key": f'.metadata.labels["{WORKLOAD_LABEL}"]', "operator": "DoesNotExist"}],
        )
    )
    forward = _jupyter_forward(nodes, jupyter_port) if jupyter_port is not None else None
    if forward is not None:
        docs.append(forward)
    logs_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    for workload in KNOWN_WORKLOADS:
        by_end: dict[tuple[int, int], list[str]] = {}
        containers: tuple[str | None, ...] = CONTAINERS.get(workload, (None,))
        # Nodes grouped by the (container -> log file) mapping their pod gets.
        by_logs: dict[tuple[tuple[str | None, str], ...], list[str]] = {}
        for node, spec in nodes:
            b = behaviour(workload, node, spec)
            if not b.keep_running:  # no completion stage: the pod stays Running
                by_end.setdefault((b.exit_code, round(b.duration_s * 1000)), []).append(node)
            files = tuple(
                (c, _log_file(logs_dir, workload, behaviour(workload, node, spec, c).output or "", now)) for c in containers
            )
            by_logs.setdefault(files, []).append(node)
        label = {"key": f'.metadata.labels["{WORKLOAD_LABEL}"]', "operator": "In", "values": [workload]}
        for (code, delay_ms), members in sorted(by_end.items()):
            on = {"key": ".spec.nodeName", "operator": "In", "values": sorted(members)}
            name = f"pod-complete-{workload}-exit-{code}-after-{delay_ms}ms"
            docs.append(_complete_stage(name, code, [label, on], delay_ms))
        for files, members in by_logs.items():
            digest = hashlib.sha256(repr(files).encode()).hexdigest()[:16]
            logs = [{"logsFile": path} | ({"containers": [c]} if c else {}) for c, path in files]
            docs.append(
                {
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "kind": "ClusterLogs",
                    "metadata": {"name": f"{workload}-{digest}"},
                    "spec": {"selector": {"matchNames": sorted(pod_name(workload, n) for n in members)}, "logs": logs},
                }
            )
    return docs


def _log_file(logs_dir: Path, workload: str, text: str, now: dt.datetime) -> str:
    """Write (once) a CRI log file holding `text`; returns its path."""
    path = logs_dir / f"{workload}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.log"
    if not path.exists():
        path.write_text(_cri_log(text, now))
    return str(path)


def write(path: Path, nodes: list[tuple[str, NodeSpec]], logs_dir: Path, crash_keys: list[str] | None = None,
          restart_keys: list[str] | None = None, jupyter_port: int | None = None) -> None:
    """Write the kwok config file (a KwokConfiguration followed by stages and logs)."""
    # kwok does not apply its defaults to options read from a file: set what it needs.
    options = {
        "podPlayStageParallelism": 16,
        "nodePlayStageParallelism": 16,
        # The simulated kubelets heartbeat as real ones do: a Lease renewed every quarter of its duration,
        # the node's status only now and then (the node-heartbeat stage). A status patch of every node
        # every 5 s was 200 writes a second at 1,000 nodes, each sent to every node watcher; on two
        # cores they fell minutes behind and the controller-manager took healthy nodes for dead ones.
        "nodeLeaseDurationSeconds": NODE_LEASE_S,
        # 1,000 nodes renew 100 Leases a second; with kwok's default 4 workers each renewal had to take under
        # 40 ms, and on a loaded machine some Leases ran past the controller-manager's grace period.
        "nodeLeaseParallelism": 16,
        "podsOnNodeSyncParallelism": 2,
        "enablePodsOnNodeSyncListPager": True,
        "enableDebuggingHandlers": True,
        # Pod IPs: valid for Services' endpoints (loopback is not), yet nothing can connect to them
        # (multicast: connect() fails at once), so the API server's pod and Service proxy fail fast and
        # the suite falls back to a port-forward, as on a cluster whose API server cannot reach pods.
        "cidr": POD_CIDR,
    }
    header = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration", "options": options}
    docs = generate(nodes, logs_dir, crash_keys, restart_keys, jupyter_port)
    path.write_text(yaml.safe_dump_all([header, *docs], sort_keys=False))

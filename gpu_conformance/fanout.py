"""Fan-out mode: per-node workloads run through the cluster itself, one DaemonSet per workload, instead of
one pod per node created by the suite. No pytest here.

Each DaemonSet's pods run the workload's containers as init containers, one after the other, each wrapped
so that it always exits 0 and leaves its real exit code and its output (gzip, base64) in its termination
message. The pod's main container only waits (pause) until the suite deletes the DaemonSet. The suite
follows the pods with its watch and reads results from their statuses: no request per node, neither to
create a pod nor to read a log (unless an output is too large for a termination message; then the init
container's log is read, as in pod mode).

A pod of a DaemonSet holds the GPUs its init containers requested for as long as it lives, so a DaemonSet
is deleted as soon as each of its pods has reported (or was given up).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpu_conformance.workloads import pin_to_nodes, pinned_nodes

FANOUT_LABEL = "gpu-conformance.io/fanout"  # on a fan-out DaemonSet and its pods: the DaemonSet's name
TIMEOUT_ENV = "GC_FANOUT_TIMEOUT_S"  # how long the wrapper lets the payload run
# An image's entrypoint the wrapper must call explicitly (workloads whose container names no command).
ENTRYPOINT_ANNOTATION = "gpu-conformance.io/entrypoint"
MESSAGE_VERSION = "gc-fanout/v1"
# The kubelet keeps 4096 bytes of a termination message: a larger output goes to the log only.
MESSAGE_LIMIT = 3900
TIMED_OUT = 124  # coreutils timeout's exit code when it stopped the payload

# POSIX sh: the payload's output goes to the log (tee) and, compressed, to the termination message.
WRAPPER = """out=/tmp/gc-fanout.out
{ timeout "$GC_FANOUT_TIMEOUT_S" "$@" 2>&1; echo $? > "$out.code"; } | tee "$out"
code=$(cat "$out.code")
body=$(gzip -c "$out" | base64 | tr -d '\\n')
if [ "${#body}" -le LIMIT ]; then printf 'VERSION %s gz\\n%s' "$code" "$body"; else printf 'VERSION %s log\\n' "$code"; fi > /dev/termination-log
exit 0""".replace("LIMIT", str(MESSAGE_LIMIT)).replace("VERSION", MESSAGE_VERSION)

PAUSE_CONTAINER = "wait"


@dataclass(frozen=True)
class Report:
    """What one wrapped container reported: the payload's exit code and output (None: read the log)."""

    exit_code: int
    output: str | None

    @property
    def timed_out(self) -> bool:
        return self.exit_code == TIMED_OUT


def encode(exit_code: int, output: str) -> str:
    """The termination message the wrapper writes (the simulated kubelets write the same)."""
    body = base64.b64encode(gzip.compress(output.encode())).decode()
    if len(body) > MESSAGE_LIMIT:
        return f"{MESSAGE_VERSION} {exit_code} log\n"
    return f"{MESSAGE_VERSION} {exit_code} gz\n{body}"


_HEADER = re.compile(rf"{re.escape(MESSAGE_VERSION)} (-?\d+) (gz|log)\n?")


def decode(message: str) -> Report | None:
    """A wrapper's termination message back into its report; None where it is not one (or is damaged)."""
    m = _HEADER.match(message)
    if m is None:
        return None
    code, how = int(m.group(1)), m.group(2)
    if how == "log":
        return Report(code, None)
    try:
        return Report(code, gzip.decompress(base64.b64decode(message[m.end():], validate=True)).decode("utf-8", "replace"))
    except (ValueError, OSError, EOFError):
        return None


def wrap(container: Mapping[str, Any], timeout: float, entrypoint: Sequence[str] = ()) -> dict[str, Any]:
    """A workload container as a wrapped init container (same name, image, resources, env and mounts)."""
    out = copy.deepcopy(dict(container))
    payload = [*(out.pop("command", None) or entrypoint), *(out.pop("args", None) or [])]
    if not payload:
        raise ValueError(f"container {container.get('name')!r} names no command: fan-out needs one to wrap "
                         f"(annotate the workload with {ENTRYPOINT_ANNOTATION})")
    out["command"] = ["sh", "-c", WRAPPER, "gc-fanout", *payload]
    out["env"] = [*out.get("env", []), {"name": TIMEOUT_ENV, "value": str(max(1, round(timeout)))}]
    out["terminationMessagePolicy"] = "File"
    return out


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class FanoutSet:
    """One DaemonSet of a group and the group key of each node it runs on."""

    manifest: Mapping[str, Any]
    keys: Mapping[str, Any]  # node -> group key

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def _shape(manifest: Mapping[str, Any]) -> str:
    """A pod manifest without what differs from node to node only by placement (its name and affinity)."""
    spec = {k: v for k, v in manifest["spec"].items() if k != "affinity"}
    meta = {k: v for k, v in manifest["metadata"].items() if k != "name"}
    return json.dumps({"metadata": meta, "spec": spec}, sort_keys=True)


def daemonsets(group: str, pods: Mapping[K, tuple[str, Mapping[str, Any]]], *, timeout: float,
               pause_image: str) -> list[FanoutSet]:
    """The DaemonSets that run a group's per-node pods (key -> (node, manifest)): one per distinct pod shape
    (pods that differ only by node), pinned to its nodes, named `<group>-<n>`; a node's second pod of one
    shape (a pair of pods) goes to a second DaemonSet."""
    shapes: list[tuple[str, list[tuple[K, str, Mapping[str, Any]]]]] = []
    for key, (node, manifest) in pods.items():
        shape = _shape(manifest)
        members = next((m for s, m in shapes if s == shape and all(n != node for _, n, _ in m)), None)
        if members is None:
            members = []
            shapes.append((shape, members))
        members.append((key, node, manifest))
    out = []
    base = re.sub(r"[^a-z0-9-]", "-", group.lower()).strip("-")[:40]
    for index, (_, members) in enumerate(shapes):
        _, _, first = members[0]
        name = f"{base}-{index}"
        meta = first["metadata"]
        labels = {**meta.get("labels", {}), FANOUT_LABEL: name}
        entrypoint = (meta.get("annotations") or {}).get(ENTRYPOINT_ANNOTATION, "")
        spec = copy.deepcopy(dict(first["spec"]))
        spec["initContainers"] = [wrap(c, timeout, entrypoint.split()) for c in spec.pop("containers")]
        spec["containers"] = [{"name": PAUSE_CONTAINER, "image": pause_image,
                               "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}}}]
        spec["restartPolicy"] = "Always"  # the only policy a DaemonSet allows
        spec["affinity"] = pin_to_nodes(sorted(node for _, node, _ in members))
        manifest = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels},
            "spec": {
                "selector": {"matchLabels": {FANOUT_LABEL: name}},
                # The suite narrows the node affinity as nodes report: that must not replace running pods.
                "updateStrategy": {"type": "OnDelete"},
                "template": {"metadata": {"labels": labels, "annotations": dict(meta.get("annotations") or {})},
                             "spec": spec},
            },
        }
        out.append(FanoutSet(manifest, {node: key for key, node, _ in members}))
    return out


@dataclass(frozen=True)
class FanoutPod:
    """A fan-out pod as the suite reads it: which DaemonSet and node, and what its wrapped containers reported."""

    daemonset: str
    target: str | None  # the node the DaemonSet made the pod for
    reports: Mapping[str, Report] = field(default_factory=dict)  # by container, those that reported
    pending: tuple[str, ...] = ()  # containers that have not reported yet
    broken: str | None = None  # a container ended without a readable report (why)
    started_at: str | None = None
    finished_at: str | None = None


def target_node(raw: Mapping[str, Any]) -> str | None:
    """The node a DaemonSet pod is for: the one its node affinity names (set before it is scheduled)."""
    nodes = pinned_nodes(raw.get("spec") or {})
    return next(iter(nodes)) if nodes and len(nodes) == 1 else None


def read(raw: Mapping[str, Any]) -> FanoutPod | None:
    """A fan-out pod's reports from its init containers' statuses; None for any other pod."""
    labels = (raw.get("metadata") or {}).get("labels") or {}
    ds = labels.get(FANOUT_LABEL)
    if not ds:
        return None
    names = [c["name"] for c in (raw.get("spec") or {}).get("initContainers") or []]
    statuses = {s.get("name"): s for s in (raw.get("status") or {}).get("initContainerStatuses") or []}
    reports: dict[str, Report] = {}
    broken = None
    starts, ends = [], []
    for name in names:
        st = statuses.get(name) or {}
        # A wrapper that ended and was started again (it never should: it exits 0) shows in lastState.
        term = (st.get("state") or {}).get("terminated") or (st.get("lastState") or {}).get("terminated")
        if not term:
            continue
        report = decode(str(term.get("message") or ""))
        if report is None:
            broken = broken or (f"init container {name} ended (exit code {term.get('exitCode')}, "
                                f"{term.get('reason', '')}) without the fan-out wrapper's report")
            continue
        reports[name] = report
        starts.append(term.get("startedAt"))
        ends.append(term.get("finishedAt"))
    return FanoutPod(str(ds), target_node(raw), reports, tuple(n for n in names if n not in reports), broken,
                     min(filter(None, starts), default=None), max(filter(None, ends), default=None))

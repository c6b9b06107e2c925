"""The simulated cluster's GPU metrics exporters: one local HTTP endpoint per GPU node, serving
dcgm-exporter (or GKE device-plugin) metrics derived from the scenario and the pods running there;
and the notebook's Jupyter server (its unauthenticated /api), where the scenario says it answers.

`sim up` runs it as a process (`python -m gpu_conformance.sim.exporter`); its loop also drives the
node agent (gpu_conformance.sim.nodeagent: device-plugin restarts and reboots) and the fan-out
player (gpu_conformance.sim.fanoutplayer: the suite's workload DaemonSet pods, which kwok leaves
alone). It keeps, for every exporter pod kwok plays, a kwok PortForward that sends the pod's metrics
port to its node's endpoint, so the suite reaches it through the API server exactly as it reaches a
real exporter pod. GPUs held by a Running pod carry that pod's `pod`/`namespace`/`container` labels
(legacy names where the scenario says so), and a load workload raises their utilization, unless the
scenario breaks that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kr8s
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from gpu_conformance.metrics import DCGM_PORT, GKE_PORT, ExporterKind
from gpu_conformance.runner import create_object
from gpu_conformance.sim.fanoutplayer import FanoutPlayer
from gpu_conformance.sim.kwokconfig import COMPONENT_LABEL
from gpu_conformance.sim.nodeagent import NodeAgent
from gpu_conformance.sim.outputs import gpu_uuid, marketing_name
from gpu_conformance.sim.scenario import NodeSpec, Scenario
from gpu_conformance.watch import Watch
from gpu_conformance.workloads import WORKLOAD_LABEL

RECONCILE_INTERVAL_S = 0.5
# How long a scrape waits for a reconcile pass that began after it (else it serves the last one).
FRESH_WAIT_S = 3.0
# dcgm-exporter refreshes its pod attribution once per collection (30 s by default), so a pod's series
# outlives it for a while; the simulator keeps a finished GPU pod's attribution this long (on GPUs no
# running pod holds), which also absorbs its own reconcile lag on a loaded machine.
LINGER_S = 15.0


def _ended_within(raw: dict[str, Any], now: float, seconds: float) -> bool:
    """Whether every container of a finished pod ended less than `seconds` ago."""
    status = raw.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return False
    ends = [((c.get("state") or {}).get("terminated") or {}).get("finishedAt") for c in status.get("containerStatuses") or []]
    if not ends or not all(ends):
        return False
    latest = max(dt.datetime.fromisoformat(str(e).replace("Z", "+00:00")).timestamp() for e in ends)
    return now - latest < seconds
JUPYTER_VERSION = "2.14.2"
# Workloads whose pods load their GPUs (and so raise utilization while they run).
LOAD_WORKLOADS = ("gpu-load", "dcgmproftester")
# The stack component whose pods serve metrics, per flavour.
SERVING_COMPONENT: Mapping[str, tuple[str, ExporterKind, int]] = {
    "gpu-operator": ("dcgm-exporter", "dcgm-exporter", DCGM_PORT),
    "gke": ("device-plugin", "gke-device-plugin", GKE_PORT),
}
_DCGM_HELP = {
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "Ratio of cycles the tensor (HMMA) pipe is active.",
}


@dataclass(frozen=True)
class GpuPod:
    """A Running pod holding GPUs on a node."""

    namespace: str
    name: str
    container: str
    gpus: int
    workload: str | None


@dataclass(frozen=True)
class NodeExporter:
    """One node's simulated exporter."""

    node: str
    spec: NodeSpec
    kind: ExporterKind
    component: str
    pod_port: int


def serving_nodes(scenarios: Sequence[Scenario]) -> list[NodeExporter]:
    """Every GPU node whose scenario runs a metrics-serving stack component there."""
    out = []
    for sc in scenarios:
        if sc.stack.flavour not in SERVING_COMPONENT:
            continue
        component, kind, port = SERVING_COMPONENT[sc.stack.flavour]
        for name, spec in sc.expanded():
            if spec.gpus > 0 and spec.gfd_labels and spec.metrics.exporter:
                out.append(NodeExporter(name, spec, kind, component, port))
    return out


def assign(pods: Sequence[GpuPod], gpus: int) -> dict[int, GpuPod]:
    """GPU index -> the pod holding it, in the order the pods are given."""
    out: dict[int, GpuPod] = {}
    index = 0
    for pod in pods:
        for _ in range(pod.gpus):
            if index < gpus:
                out[index] = pod
                index += 1
    return out


class _Metrics(Collector):
    """The metric families of one node, computed on every scrape from the current GPU pods."""

    def __init__(self, exporter: NodeExporter, pods: Sequence[GpuPod]) -> None:
        self.e = exporter
        self.pods = pods

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from (self._dcgm() if self.e.kind == "dcgm-exporter" else self._gke())

    def _attribution(self, pod: GpuPod | None) -> dict[str, str]:
        m = self.e.spec.metrics
        names = ("pod_name", "pod_namespace", "container_name") if m.legacy_labels else ("pod", "namespace", "container")
        if pod is None or not m.attribution:
            return dict.fromkeys(names, "")
        return dict(zip(names, (pod.name, pod.namespace, pod.container), strict=True))

    def _loaded(self, pod: GpuPod | None) -> bool:
        return pod is not None and pod.workload in LOAD_WORKLOADS and self.e.spec.metrics.rises_under_load

    def _dcgm(self) -> Iterator[GaugeMetricFamily]:
        spec, node = self.e.spec, self.e.node
        held = assign(self.pods, spec.gpus)
        rows = []
        for i in range(spec.gpus):
            pod = held.get(i)
            loaded = self._loaded(pod)
            labels = {"gpu": str(i), "UUID": gpu_uuid(node, i), "pci_bus_id": f"00000000:{0x18 + i * 0x10:02X}:00.0",
                      "device": f"nvidia{i}", "modelName": marketing_name(spec.product), "Hostname": node,
                      "DCGM_FI_DRIVER_VERSION": spec.driver, **self._attribution(pod)}
            used = 2048 if pod is not None else 0
            profiling = spec.metrics.profiling
            tensor = 0.93 if loaded and profiling and pod is not None and pod.workload == "dcgmproftester" else 0.0
            values = {
                "DCGM_FI_DEV_SM_CLOCK": 1980 if loaded else 345, "DCGM_FI_DEV_GPU_TEMP": 61 if loaded else 34,
                "DCGM_FI_DEV_POWER_USAGE": 612.4 if loaded else 70.5, "DCGM_FI_DEV_GPU_UTIL": 100 if loaded else 0,
                "DCGM_FI_DEV_FB_FREE": spec.memory_mib - used, "DCGM_FI_DEV_FB_USED": used, "DCGM_FI_DEV_XID_ERRORS": 0,
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 0.98 if loaded and profiling else 0.0, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": tensor,
            }
            rows.append((labels, values))
        for name, help_text in _DCGM_HELP.items():
            if name in spec.metrics.missing_families or not rows:
                continue
            fam = GaugeMetricFamily(name, help_text, labels=list(rows[0][0]))
            for labels, values in rows:
                fam.add_metric(list(labels.values()), float(values[name]))
            yield fam

    def _gke(self) -> Iterator[GaugeMetricFamily]:
        """GKE's container metrics: only GPUs a container holds have series."""
        spec, node = self.e.spec, self.e.node
        names = list(self._attribution(None))  # pod, namespace, container (or their legacy names)
        fams = {n: GaugeMetricFamily(n, h, labels=["make", "accelerator_id", "model", *names])
                for n, h in (("duty_cycle", "Percent of time the accelerator was actively processing."),
                             ("memory_used", "Accelerator memory used, in bytes."),
                             ("memory_total", "Total accelerator memory, in bytes."))}
        for i, pod in sorted(assign(self.pods, spec.gpus).items()):
            attrib = self._attribution(pod)
            labels = ["nvidia", gpu_uuid(node, i), marketing_name(spec.product), *(attrib[k] for k in attrib)]
            fams["duty_cycle"].add_metric(labels, 100.0 if self._loaded(pod) else 0.0)
            fams["memory_used"].add_metric(labels, 2048.0 * 2**20)
            fams["memory_total"].add_metric(labels, float(spec.memory_mib) * 2**20)
        up = GaugeMetricFamily("gpu_device_plugin_up", "The device plugin is serving.", labels=["node"])
        up.add_metric([node], 1.0)
        yield up
        yield from (f for n, f in fams.items() if n not in spec.metrics.missing_families)


class Exporters:
    """The HTTP endpoints and the reconcile loop that keeps kwok's port-forwards and the GPU pods current."""

    def __init__(self, api: kr8s.Api, nodes: Sequence[NodeExporter], jupyter_port: int) -> None:
        self.api = api
        self.jupyter_port = jupyter_port
        self.nodes = {n.node: n for n in nodes}
        self.pods: dict[str, list[GpuPod]] = {}
        self.lock = threading.Lock()
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.forwarded: set[tuple[str, str]] = set()
        # Scrapes see the pods as of their own time (like dcgm-exporter asking the kubelet): a scrape wakes the
        # reconcile loop and waits for a pass that began after it arrived.
        self.started = 0  # reconcile passes begun
        self.passes = 0  # reconcile passes finished
        self.passed = threading.Condition(self.lock)
        self.wake = threading.Event()

    def render(self, node: str) -> bytes:
        registry = CollectorRegistry()
        with self.lock:
            fresh = self.started + 1  # a pass running now may have listed the pods before this scrape came
            self.wake.set()
            self.passed.wait_for(lambda: self.passes >= fresh, timeout=FRESH_WAIT_S)
            pods = list(self.pods.get(node, []))
        registry.register(_Metrics(self.nodes[node], pods))
        return generate_latest(registry)

    def start(self) -> dict[str, int]:
        """One HTTP server per node on a free loopback port; node -> port."""
        for name in self.nodes:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, name))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[name] = server
        # kwok's config forwards the answering notebook pods' port 8888 here (a ClusterPortForward).
        jupyter = ThreadingHTTPServer(("127.0.0.1", self.jupyter_port), _JupyterHandler)
        jupyter.daemon_threads = True
        threading.Thread(target=jupyter.serve_forever, daemon=True).start()
        return {n: int(s.server_address[1]) for n, s in self.servers.items()}

    def reconcile(self, pods: Sequence[Mapping[str, Any]]) -> None:
        """Port-forwards for new exporter pods; the Running GPU pods of every node (of `pods`: every pod)."""
        with self.lock:
            self.started += 1
            number = self.started
        now = time.time()
        # (running first, creation time, name): a pod that just ended only keeps GPUs no running pod holds.
        by_node: dict[str, list[tuple[bool, str, GpuPod]]] = {}
        for raw in pods:
            meta, spec = raw["metadata"], raw.get("spec", {}) or {}
            node = spec.get("nodeName")
            labels = meta.get("labels", {}) or {}
            if node not in self.nodes:
                continue
            running = (raw.get("status") or {}).get("phase") == "Running"
            exporter = self.nodes[node]
            if running and labels.get(COMPONENT_LABEL) == exporter.component and (meta["namespace"], meta["name"]) not in self.forwarded:
                self._forward(meta["namespace"], meta["name"], exporter.pod_port, int(self.servers[node].server_address[1]))
            gpus = sum(int(str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)))
                       for c in spec.get("containers", []))
            if gpus and COMPONENT_LABEL not in labels and (running or _ended_within(raw, now, LINGER_S)):
                pod = GpuPod(meta["namespace"], meta["name"], spec["containers"][0]["name"], gpus, labels.get(WORKLOAD_LABEL))
                by_node.setdefault(node, []).append((not running, str(meta.get("creationTimestamp", "")), pod))
        with self.lock:
            self.pods = {n: [p for *_, p in sorted(v, key=lambda t: (t[0], t[1], t[2].name))] for n, v in by_node.items()}
            self.passes = max(self.passes, number)
            self.passed.notify_all()

    def _forward(self, namespace: str, pod: str, pod_port: int, local_port: int) -> None:
        obj = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "PortForward",
               "metadata": {"name": pod, "namespace": namespace},
               "spec": {"forwards": [{"ports": [pod_port], "target": {"address": "127.0.0.1", "port": local_port}}]}}
        create_object(self.api, obj, exist_ok=True)
        self.forwarded.add((namespace, pod))


def _serving(path: str, content_type: str, body: Callable[[], bytes]) -> type[BaseHTTPRequestHandler]:
    """A quiet handler that answers GET `path` with `body()` and everything else with 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?")[0].rstrip("/") != path:
                self.send_error(404)
                return
            data = body()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
            pass

    return Handler


# Jupyter Server's unauthenticated version endpoint, as the readiness probe and the suite read it.
_JupyterHandler = _serving("/api", "application/json", lambda: json.dumps({"version": JUPYTER_VERSION}).encode())


def _handler(exporters: Exporters, node: str) -> type[BaseHTTPRequestHandler]:
    return _serving("/metrics", "text/plain; version=0.0.4; charset=utf-8", lambda: exporters.render(node))


def _as_is(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    return raw


def _guarded(what: str, step: Callable[[], object]) -> None:
    """One step of a long-running helper loop: a failure is logged and the next round tries again."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - a long-running helper: log and go on
        print(f"exporter: {what} failed, retrying: {type(exc).__name__}: {exc}", flush=True)


def _pods(watch: Watch[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return list(watch.states().values())


def _serve_loop(exporters: Exporters, pod_watch: Watch[Mapping[str, Any]], stop: threading.Event) -> None:
    """The exporters' own loop: a scrape waits for one pass of it only (not for the node agent's or the
    fan-out player's work, which at 1,000 nodes made an idle read of every exporter take minutes)."""
    while not stop.is_set():
        _guarded("reconcile", lambda: exporters.reconcile(_pods(pod_watch)))
        exporters.wake.wait(RECONCILE_INTERVAL_S)  # or sooner, when a scrape asks for fresh pods
        exporters.wake.clear()


def _play(agent: NodeAgent, player: FanoutPlayer, pod_watch: Watch[Mapping[str, Any]],
          node_watch: Watch[Mapping[str, Any]]) -> None:
    """One round of the simulated kubelets' work: the node agent and the fan-out player see the same pods."""
    pods = _pods(pod_watch)
    nodes = {name: node for (_, name), node in node_watch.states().items()}
    _guarded("node agent", lambda: agent.tick(nodes=nodes, pods=pods))
    _guarded("fan-out player", lambda: player.tick(nodes=nodes, pods=pods))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_conformance.sim.exporter")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--scenarios", required=True, type=Path, help="JSON list of the scenarios `sim up` loaded")
    parser.add_argument("--ready-file", required=True, type=Path)
    parser.add_argument("--jupyter-port", required=True, type=int, help="where the simulated Jupyter listens")
    args = parser.parse_args(argv)
    scenarios = [Scenario.model_validate(s) for s in json.loads(args.scenarios.read_text())]
    api = kr8s.api(kubeconfig=args.kubeconfig)
    exporters = Exporters(api, serving_nodes(scenarios), args.jupyter_port)
    agent = NodeAgent(api, scenarios)
    player = FanoutPlayer(api, scenarios)
    ports = exporters.start()
    args.ready_file.write_text(json.dumps(ports))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Every pod and node, kept current by a watch each: a pass reads them from memory, not from the API
    # server (at 1,000 nodes a list of every pod and node on each pass was half a core of the two).
    with Watch(api, None, None, _as_is) as pod_watch, Watch(api, None, None, _as_is, resource="nodes") as node_watch:
        threading.Thread(target=_serve_loop, args=(exporters, pod_watch, stop), daemon=True).start()
        while not stop.is_set():
            _guarded("reading pods and nodes", lambda: _play(agent, player, pod_watch, node_watch))
            stop.wait(RECONCILE_INTERVAL_S)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

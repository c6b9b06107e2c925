"""Finding the GPU metrics exporter on the cluster and reading its /metrics through the Kubernetes API.

The suite needs no network route into the cluster: it reads each exporter pod through the API
server's pod proxy, and where the API server cannot reach the pod that way (a private network,
konnectivity, a pod IP it refuses), through a port-forward.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kr8s
from kr8s.objects import Pod

from gpu_conformance import transport
from gpu_conformance.metrics import DCGM_PORT, GKE_PORT, ExporterKind
from gpu_conformance.runner import api_call

# What marks a dcgm-exporter Service or pod (GPU Operator, Helm chart), and GKE's device plugin.
DCGM_NAMES = ("dcgm-exporter",)
DCGM_POD_LABELS = (("app", "nvidia-dcgm-exporter"), ("app.kubernetes.io/name", "dcgm-exporter"), ("app", "dcgm-exporter"))
GKE_PLUGIN_PREFIX = "nvidia-gpu-device-plugin"
SCRAPE_TIMEOUT_S = 20.0
TRANSIENT = (kr8s.ServerError, kr8s.APITimeoutError, httpx.TransportError)


class ScrapeError(Exception):
    """The exporter pod's /metrics could not be read by any transport; the message says why for each."""


class ScrapeForbidden(ScrapeError):
    """The API server refused the suite both transports (RBAC): nothing is known about the exporter."""


@dataclass(frozen=True)
class ExporterPod:
    """One exporter pod on one node."""

    node: str
    namespace: str
    name: str
    ready: bool


@dataclass(frozen=True)
class Exporter:
    """The GPU metrics exporter found for the selected nodes."""

    kind: ExporterKind
    port: int
    path: str
    found_by: str  # how it was found, for the report
    service: tuple[str, str] | None  # (namespace, name)
    pods: Mapping[str, ExporterPod] = field(default_factory=dict)  # by node


@dataclass(frozen=True)
class Fetched:
    """A /metrics response and how it was read."""

    text: str
    transport: str


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("labels", {}) or {}


def is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status", {}) or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []) or [])


def _slim(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What discovery reads of a pod (every pod of the cluster is listed: 6,000 stack pods at 1,000 nodes)."""
    meta, status = pod.get("metadata", {}), pod.get("status", {}) or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "labels") if k in meta},
            "spec": {"nodeName": (pod.get("spec", {}) or {}).get("nodeName")},
            "status": {"phase": status.get("phase"), "conditions": status.get("conditions", [])}}


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pods_by_node(pods: Iterable[Mapping[str, Any]], nodes: Sequence[str]) -> dict[str, ExporterPod]:
    """One pod per selected node (a Ready one where there are several)."""
    out: dict[str, ExporterPod] = {}
    for p in pods:
        node = (p.get("spec", {}) or {}).get("nodeName")
        if node not in nodes:
            continue
        meta = p["metadata"]
        candidate = ExporterPod(str(node), str(meta["namespace"]), str(meta["name"]), is_ready(p))
        if node not in out or (candidate.ready and not out[node].ready):
            out[str(node)] = candidate
    return out


def _service_port(svc: Mapping[str, Any], wanted: int | None) -> int | None:
    """The pod port behind the Service's metrics port (its targetPort where numeric)."""
    ports = svc.get("spec", {}).get("ports", []) or []
    for p in ports:
        if wanted is None or p.get("port") == wanted or p.get("targetPort") == wanted:
            target = p.get("targetPort")
            return int(target) if isinstance(target, int) else int(p["port"])
    return None


def discover(api: kr8s.Api, nodes: Sequence[str], *, namespace: str | None = None, service: str | None = None,
             port: int | None = None, path: str = "/metrics") -> Exporter | None:
    """The exporter serving the selected nodes: the profile's Service, else a dcgm-exporter Service or
    pods, else GKE's device plugin (container metrics on 2112). None when none runs on any selected node."""
    pods = transport.list_raw(api, "pods", convert=_slim)
    if service is not None:
        svc = next(iter(api.get("services", service, namespace=namespace)), None)
        if svc is None:
            return None
        selector = svc.raw.get("spec", {}).get("selector", {}) or {}
        members = [p for p in pods if p["metadata"]["namespace"] == namespace and _selects(selector, _labels(p))]
        target = _service_port(svc.raw, port) or port or DCGM_PORT
        return Exporter("dcgm-exporter", target, path, f"the profile's Service {namespace}/{service}",
                        (str(namespace), service), _pods_by_node(members, nodes))
    best: Exporter | None = None
    for svc in api.get("services", namespace=kr8s.ALL):
        raw = svc.raw
        name, ns = str(raw["metadata"]["name"]), str(raw["metadata"]["namespace"])
        target = _service_port(raw, port or DCGM_PORT)
        if not any(n in name for n in DCGM_NAMES) or target is None:
            continue
        selector = raw.get("spec", {}).get("selector", {}) or {}
        members = _pods_by_node([p for p in pods if p["metadata"]["namespace"] == ns and _selects(selector, _labels(p))], nodes)
        if members and (best is None or len(members) > len(best.pods)):
            best = Exporter("dcgm-exporter", target, path, f"Service {ns}/{name}", (ns, name), members)
    if best is not None:
        return best
    labelled = [p for p in pods if any(_labels(p).get(k) == v for k, v in DCGM_POD_LABELS)]
    if (members := _pods_by_node(labelled, nodes)):
        return Exporter("dcgm-exporter", port or DCGM_PORT, path, "dcgm-exporter pods (no Service)", None, members)
    gke = [p for p in pods if str(p["metadata"]["name"]).startswith(GKE_PLUGIN_PREFIX)]
    if (members := _pods_by_node(gke, nodes)):
        return Exporter("gke-device-plugin", port or GKE_PORT, path, "GKE's nvidia-gpu-device-plugin pods", None, members)
    return None



def fetch(api: kr8s.Api, pod: ExporterPod, port: int, path: str, timeout: float = SCRAPE_TIMEOUT_S,
          proxy: bool = True) -> Fetched:
    """GET `path` on the pod's `port`: through the API server's pod proxy (unless `proxy` is False: it
    failed for this pod before), else a port-forward. ScrapeForbidden when RBAC refuses both."""
    problems = []
    proxy_forbidden = not proxy
    url = f"pods/{pod.name}:{port}/proxy{path}"
    try:
        if proxy:
            status, text = proxy_get(api, pod.namespace, url, timeout)
            if status == 200:
                return Fetched(text, "pod proxy")
            proxy_forbidden = status in (401, 403)
            problems.append(f"pod proxy: HTTP {status} {short(text)}")
    except TRANSIENT as exc:
        problems.append(f"pod proxy: {type(exc).__name__}: {exc}")
    try:
        # The port-forward needs only the pod's name: no request to read the pod first (a pod that is
        # gone fails the forward itself).
        ref = Pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod.name, "namespace": pod.namespace}}, api=api)
        resp = _forwarded_get(ref, port, path, timeout)
        if resp.status_code == 200:
            return Fetched(resp.text, "port-forward")
        problems.append(f"port-forward: HTTP {resp.status_code} {short(resp.text)}")
    except (kr8s.NotFoundError, *TRANSIENT, OSError) as exc:
        problems.append(f"port-forward: {type(exc).__name__}: {exc or 'connection closed'}")
    what = f"{path} on port {port} of pod {pod.namespace}/{pod.name}: " + "; ".join(problems)
    if proxy_forbidden and portforward_forbidden(api, pod.namespace, pod.name):
        raise ScrapeForbidden(what + " (RBAC: the suite may neither proxy to nor port-forward this pod)")
    raise ScrapeError(what)


PORTFORWARD_BIND_TRIES = 5

# Every GET through a local port-forward goes through this one client: plain HTTP on loopback, so no TLS
# context (a client of its own per GET loaded the CA bundle each time: ~30 ms of CPU under the GIL, a
# fifth of a 1,000-node idle read, and memory churn beside it) and no proxy from the environment. Each
# forward's port serves one GET, so no connection is kept. httpx's clients may be shared between threads.
_LOOPBACK = httpx.Client(verify=False, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def _forwarded_get(pod: Pod, port: int, path: str, timeout: float) -> httpx.Response:
    """GET through a port-forward on a local port the kernel picked free. A port that is free when
    picked can still be taken before the forward binds it (loopback connections use ephemeral ports
    too), so a bind collision is retried on a fresh port."""
    for attempt in range(PORTFORWARD_BIND_TRIES):
        try:
            with pod.portforward(remote_port=port, local_port=free_local_port()) as local:
                return _LOOPBACK.get(f"http://127.0.0.1:{local}{path}", timeout=timeout)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == PORTFORWARD_BIND_TRIES - 1:
                raise
    raise AssertionError("unreachable")


# Ports handed out below the kernel's ephemeral range: outgoing connections take their source port from
# that range, so a port picked there can be taken by any connection before its user binds it.
_LISTEN_PORTS_FLOOR = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_local_port() -> int:
    """A loopback port nothing is bound to now, outside the ephemeral range where the kernel allows it."""
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    candidates = range(_LISTEN_PORTS_FLOOR, ephemeral_low) if ephemeral_low > _LISTEN_PORTS_FLOOR + 1000 else range(0)
    for port in random.sample(candidates, min(50, len(candidates))):
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def portforward_forbidden(api: kr8s.Api, namespace: str, pod: str) -> bool:
    """Whether RBAC refuses the suite `create pods/portforward` (kr8s hides the refused websocket upgrade).

    A plain GET on the subresource answers 403 when forbidden, 400 ("Upgrade request required") when allowed.
    """
    try:
        status, _ = proxy_get(api, namespace, f"pods/{pod}/portforward?ports=1", timeout=10)
    except TRANSIENT:
        return False
    return status in (401, 403)


def proxy_get(api: kr8s.Api, namespace: str, url: str, timeout: float = SCRAPE_TIMEOUT_S) -> tuple[int, str]:
    """GET through the API server (pod or service proxy, or a subresource probe)."""
    return api_call(api, "GET", namespace, url, timeout)


def short(text: str) -> str:
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


MONITOR_KINDS = ("servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com")


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against labels; empty matches all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _watches(monitor: Mapping[str, Any], namespace: str) -> bool:
    sel = monitor.get("spec", {}).get("namespaceSelector") or {}
    if sel.get("any"):
        return True
    names = sel.get("matchNames")
    return namespace in names if names else namespace == monitor["metadata"]["namespace"]


def monitors_selecting(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
                       monitors: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(monitors that select the Service or its pods on an existing port, near misses with the reason)."""
    ok, near = [], []
    has_service = bool(service["metadata"].get("name"))
    svc_ns = str(service["metadata"]["namespace"]) if has_service else str(pods[0]["metadata"]["namespace"]) if pods else ""
    svc_ports = {str(p.get("name")) for p in service.get("spec", {}).get("ports", []) if p.get("name")}
    svc_ports |= {str(p.get("targetPort")) for p in service.get("spec", {}).get("ports", [])}
    pod_ports = {str(cp.get("name")) for p in pods for c in p.get("spec", {}).get("containers", [])
                 for cp in c.get("ports", []) or [] if cp.get("name")}
    for m in monitors:
        kind = m.get("kind", "ServiceMonitor")
        name = f"{kind} {m['metadata']['namespace']}/{m['metadata']['name']}"
        spec = m.get("spec", {}) or {}
        if not _watches(m, svc_ns):
            continue
        if kind == "ServiceMonitor":
            if not has_service or not label_selector_matches(spec.get("selector"), service["metadata"].get("labels", {}) or {}):
                continue
            named = [str(e.get("port") or e.get("targetPort")) for e in spec.get("endpoints", []) or []]
            have = sorted(svc_ports - {"None"})
        else:
            if not any(label_selector_matches(spec.get("selector"), p["metadata"].get("labels", {}) or {}) for p in pods):
                continue
            named = [str(e.get("port")) for e in spec.get("podMetricsEndpoints", []) or []]
            have = sorted(pod_ports)
        if any(n in have for n in named):
            ok.append(name)
        else:
            near.append(f"{name} selects it but names port(s) {named}, which it does not have ({have})")
    return ok, near


def prometheus_monitors(api: kr8s.Api) -> list[dict[str, Any]] | None:
    """Every ServiceMonitor and PodMonitor; None when the Prometheus Operator's CRDs are absent."""
    crds = {c.name for c in api.get("customresourcedefinitions")}
    present = [k for k in MONITOR_KINDS if k in crds]
    if not present:
        return None
    kinds = {"servicemonitors.monitoring.coreos.com": "ServiceMonitor", "podmonitors.monitoring.coreos.com": "PodMonitor"}
    # List items carry no kind of their own: name it from the resource listed.
    return [{**m.raw, "kind": kinds[resource]} for resource in present for m in api.get(resource, namespace=kr8s.ALL)]


def service_object(api: kr8s.Api, exporter: Exporter) -> dict[str, Any]:
    """The exporter's Service as a dict (empty without one)."""
    if exporter.service is None:
        return {"metadata": {"namespace": "", "labels": {}}, "spec": {"ports": []}}
    ns, name = exporter.service
    svc = next(iter(api.get("services", name, namespace=ns)), None)
    return svc.raw if svc is not None else {"metadata": {"namespace": ns, "labels": {}}, "spec": {"ports": []}}


def pod_objects(api: kr8s.Api, exporter: Exporter) -> list[dict[str, Any]]:
    """The exporter's pods as dicts (one list per namespace they are in, not one request per pod)."""
    wanted = {(pod.namespace, pod.name) for pod in exporter.pods.values()}
    out = []
    for namespace in sorted({ns for ns, _ in wanted}):
        out += [p for p in transport.list_raw(api, "pods", namespace)
                if (namespace, str(p["metadata"]["name"])) in wanted]
    return out

"""Cluster access through kr8s, and typed facts about nodes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kr8s

from gpu_conformance import transport
from gpu_conformance.errors import ClusterUnreachable, ConfigError
from gpu_conformance.waiting import with_retries
from gpu_conformance.yamlload import read_yaml

GPU_RESOURCE = "nvidia.com/gpu"
LEGACY_GPU_RESOURCE = "alpha.kubernetes.io/nvidia-gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
# A single API call must answer within this; a dead endpoint should not hang the run.
REQUEST_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TaintFact:
    key: str
    value: str | None
    effect: str


@dataclass(frozen=True)
class NodeFacts:
    """What the suite knows about one node, converted from the API object."""

    name: str
    ready: bool
    unschedulable: bool
    initialized: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[TaintFact, ...] = ()
    gpu_capacity: int | None = None
    gpu_allocatable: int | None = None
    legacy_gpu_capacity: int | None = None

    @property
    def is_gpu_node(self) -> bool:
        """Advertises GPUs, or is labelled by GPU Feature Discovery as having them."""
        return (
            self.gpu_capacity is not None
            or self.labels.get(GPU_PRESENT_LABEL) == "true"
            or self.legacy_gpu_capacity is not None
        )

    def not_ready_reason(self) -> str | None:
        """Why a workload here could decide nothing because the node is not Ready, or None."""
        return None if self.ready else f"node {self.name} is not Ready (see GPU-NODE-002)"

    def gpu_pod_blocker(self) -> str | None:
        """Why a one-GPU pod could decide nothing here (not Ready, no allocatable GPU), or None."""
        if (why := self.not_ready_reason()) is not None:
            return why
        return None if (self.gpu_allocatable or 0) >= 1 else f"node {self.name} has no allocatable GPU (see GPU-NODE-001)"


def _count(resources: Mapping[str, Any], key: str) -> int | None:
    raw = resources.get(key)
    if raw is None:
        return None
    try:
        return int(str(raw))
    except ValueError:
        return None


def node_facts(raw: Mapping[str, Any]) -> NodeFacts:
    """Convert a Node object (as a dict) into NodeFacts."""
    meta = raw.get("metadata", {})
    spec = raw.get("spec", {})
    status = raw.get("status", {})
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    capacity = status.get("capacity", {}) or {}
    allocatable = status.get("allocatable", {}) or {}
    return NodeFacts(
        name=meta["name"],
        ready=conditions.get("Ready") == "True",
        initialized="Ready" in conditions,
        unschedulable=bool(spec.get("unschedulable", False)),
        labels=dict(meta.get("labels", {}) or {}),
        taints=tuple(TaintFact(t["key"], t.get("value"), t["effect"]) for t in spec.get("taints", []) or []),
        gpu_capacity=_count(capacity, GPU_RESOURCE),
        gpu_allocatable=_count(allocatable, GPU_RESOURCE),
        legacy_gpu_capacity=_count(capacity, LEGACY_GPU_RESOURCE),
    )


@dataclass(frozen=True)
class Target:
    """Which cluster to talk to: a kubeconfig path and an optional context."""

    kubeconfig: Path
    context: str | None = None
    server: str = "(unknown server)"


def resolve_target(kubeconfig: str | os.PathLike[str] | None, context: str | None) -> Target:
    """Pick the kubeconfig (argument, then $KUBECONFIG's first entry, then ~/.kube/config) and validate it."""
    if kubeconfig:
        path = Path(kubeconfig).expanduser()
    elif os.environ.get("KUBECONFIG"):
        path = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0]).expanduser()
    else:
        path = Path.home() / ".kube" / "config"
    return Target(path, context, validate_kubeconfig(path, context))


def validate_kubeconfig(path: Path, context: str | None) -> str:
    """The server URL of the chosen context; ConfigError names any problem, never the file's contents."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"kubeconfig {path}: not a regular file")
    data = read_yaml(path, "kubeconfig")
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), list) or not data["clusters"]:
        raise ConfigError(f"kubeconfig {path}: no clusters defined (is this a kubeconfig file?)")
    contexts = {c.get("name"): c.get("context", {}) for c in data.get("contexts") or [] if isinstance(c, dict)}
    chosen = context or data.get("current-context")
    if context and context not in contexts:
        raise ConfigError(f"kubeconfig {path}: no context named {context!r} (available: {', '.join(sorted(map(str, contexts))) or 'none'})")
    if chosen and chosen in contexts:
        cluster_name = (contexts[chosen] or {}).get("cluster")
        clusters = {c.get("name"): c.get("cluster", {}) for c in data["clusters"] if isinstance(c, dict)}
        if cluster_name not in clusters:
            raise ConfigError(f"kubeconfig {path}: context {chosen!r} names cluster {cluster_name!r}, which is not defined")
        server = (clusters[cluster_name] or {}).get("server")
        if not server:
            raise ConfigError(f"kubeconfig {path}: cluster {cluster_name!r} has no server URL")
        return str(server)
    if chosen:
        raise ConfigError(f"kubeconfig {path}: current-context {chosen!r} is not defined")
    # No context at all: kr8s falls back to the first cluster.
    return str((data["clusters"][0] or {}).get("cluster", {}).get("server", "(unknown server)"))


def connect(target: Target) -> kr8s.Api:
    """A kr8s API client for the target (every request retried after transient failures, see
    gpu_conformance.transport), after one call that proves the cluster answers."""
    try:
        # kr8s contacts the server while constructing the client (version check).
        api = kr8s.api(kubeconfig=str(target.kubeconfig), context=target.context)
        api.timeout = REQUEST_TIMEOUT_S
        # A few quick tries (a dead endpoint fails within seconds), then every request is retried.
        with_retries(api.version, attempts=3, first_backoff=0.5, max_backoff=2.0)
        transport.install(api)
    except kr8s.ServerError as exc:
        code = exc.response.status_code if exc.response is not None else None
        if code in (401, 403):
            raise ConfigError(
                f"kubeconfig {target.kubeconfig}: the API server rejected the credentials (HTTP {code}); refresh or replace them"
            ) from None
        raise ClusterUnreachable(f"API server {target.server} answered with an error: {exc}") from None
    except (httpx.HTTPError, kr8s.APITimeoutError, OSError) as exc:
        raise ClusterUnreachable(
            f"cannot reach the API server {target.server}: {type(exc).__name__}: {exc or 'no response'}"
        ) from None
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"kubeconfig {target.kubeconfig}: {exc}") from None
    return api


def list_nodes(api: kr8s.Api, label_selector: str | None = None) -> list[NodeFacts]:
    """All nodes (optionally filtered by a label selector), sorted by name."""
    nodes = transport.list_raw(api, "nodes", label_selector=label_selector or None, convert=node_facts)
    return sorted(nodes, key=lambda n: n.name)


def server_version(api: kr8s.Api) -> str:
    return str(api.version().get("gitVersion", "unknown"))

"""Session facts about the target cluster, computed once and shared across xdist workers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import kr8s
from filelock import FileLock

from gpu_conformance import nodelocks
from gpu_conformance.cluster import NodeFacts, TaintFact, list_nodes, server_version

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterFacts:
    """Read-only facts every check can rely on: server version and nodes."""

    server_version: str
    nodes: tuple[NodeFacts, ...]
    node_selector: str | None

    @cached_property
    def gpu_nodes(self) -> tuple[NodeFacts, ...]:
        return tuple(n for n in self.nodes if n.is_gpu_node)

    @cached_property
    def _by_name(self) -> dict[str, NodeFacts]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> NodeFacts:
        return self._by_name[name]


def gather(api: kr8s.Api, node_selector: str | None) -> ClusterFacts:
    """Ask the cluster once, while no recovery check disrupts a node (it would show GPUs missing)."""
    names = [n.name for n in list_nodes(api, node_selector)]
    with nodelocks.for_server(api.auth.server).shared(names):
        return ClusterFacts(server_version(api), tuple(list_nodes(api, node_selector)), node_selector)


def _to_json(facts: ClusterFacts) -> str:
    return json.dumps(asdict(facts))


def _from_json(text: str) -> ClusterFacts:
    data = json.loads(text)
    nodes = tuple(
        NodeFacts(**{**n, "taints": tuple(TaintFact(**t) for t in n["taints"])}) for n in data["nodes"]
    )
    return ClusterFacts(data["server_version"], nodes, data["node_selector"])


def shared_by_run(cache: Path | None, compute: Callable[[], T], dump: Callable[[T], bytes],
                  load: Callable[[bytes], T]) -> T:
    """`compute()` done by the first process of a run (xdist workers) and read from `cache` by the
    others; without a cache (no workers), just computed."""
    if cache is None:
        return compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if cache.is_file():
            return load(cache.read_bytes())
        value = compute()
        cache.write_bytes(dump(value))
        return value


def shared(api: kr8s.Api, node_selector: str | None, cache: Path | None) -> ClusterFacts:
    """Facts gathered by the first process of a run and read from `cache` by the others."""
    return shared_by_run(cache, lambda: gather(api, node_selector), lambda f: _to_json(f).encode(),
                         lambda b: _from_json(b.decode()))

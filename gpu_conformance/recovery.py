"""Pods stranded without GPUs: admitted while the device plugin was not (yet) registered, they fail
with `UnexpectedAdmissionError` ("no healthy devices") or `OutOfnvidia.com/gpu`, and nothing
recreates a bare pod. Pure functions over pod objects (as dicts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kr8s

GPU_RESOURCE = "nvidia.com/gpu"
STRANDED_REASONS = ("UnexpectedAdmissionError", f"OutOf{GPU_RESOURCE}")


@dataclass(frozen=True)
class StrandedPod:
    """A pod that failed its GPU allocation on a node, with who owns it (and so whether anything will redo it)."""

    namespace: str
    name: str
    node: str
    reason: str
    message: str
    owner: str | None  # "ReplicaSet/web-7d9f"; None for a bare pod that nothing recreates

    def describe(self) -> str:
        owner = f"owner {self.owner}" if self.owner else "no owner (nothing recreates it)"
        return f"{self.namespace}/{self.name} on {self.node}: {self.reason} ({self.message[:160]}); {owner}"


def stranded(pod: Mapping[str, Any]) -> StrandedPod | None:
    """The pod as a StrandedPod when it failed a GPU allocation at admission, else None."""
    status = pod.get("status") or {}
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    if status.get("phase") != "Failed" or reason not in STRANDED_REASONS:
        return None
    if reason == "UnexpectedAdmissionError" and GPU_RESOURCE not in message and "device" not in message.lower():
        return None  # admission failed for something other than a device allocation
    meta = pod.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    owner = f"{owners[0].get('kind')}/{owners[0].get('name')}" if owners else None
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    return StrandedPod(str(meta.get("namespace", "")), str(meta.get("name", "")), node, reason, message, owner)


def find_stranded(pods: Iterable[Mapping[str, Any]], nodes: Iterable[str] | None = None) -> list[StrandedPod]:
    """Every stranded pod (on the given nodes), sorted by node, namespace and name."""
    wanted = set(nodes) if nodes is not None else None
    found = [s for p in pods if (s := stranded(p)) is not None and (wanted is None or s.node in wanted)]
    return sorted(found, key=lambda s: (s.node, s.namespace, s.name))


def list_stranded(api: kr8s.Api, nodes: Iterable[str]) -> list[StrandedPod]:
    """The stranded pods on these nodes, from one list of the cluster's Failed pods."""
    failed = (p.raw for p in api.get("pods", namespace=kr8s.ALL, field_selector="status.phase=Failed"))
    return find_stranded(failed, nodes)

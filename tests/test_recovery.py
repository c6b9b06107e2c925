"""Pods stranded without GPUs: recognising them, and the run-start report of pre-existing ones."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_conformance import recovery


def _pod(phase: str, reason: str = "", message: str = "", owner: str | None = None, node: str = "gpu-1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "ml"}
    if owner:
        kind, name = owner.split("/")
        meta["ownerReferences"] = [{"kind": kind, "name": name}]
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase, "reason": reason, "message": message}}


NO_DEVICES = ("Allocate failed due to no healthy devices present; cannot allocate unhealthy devices nvidia.com/gpu, "
              "which is unexpected")


@pytest.mark.parametrize(("pod", "stranded"), [
    (_pod("Failed", "UnexpectedAdmissionError", NO_DEVICES), True),
    (_pod("Failed", "OutOfnvidia.com/gpu", "Node didn't have enough resource: nvidia.com/gpu, requested: 1, used: 8, capacity: 8"), True),
    (_pod("Failed", "UnexpectedAdmissionError", "Allocate failed due to rpc error: code = Unknown desc = device plugin unavailable"), True),
    (_pod("Failed", "UnexpectedAdmissionError", "failed to sync secret cache: timed out"), False),  # not a GPU allocation
    (_pod("Failed", "Evicted", "The node was low on resource: memory."), False),
    (_pod("Running"), False),
    (_pod("Pending", "UnexpectedAdmissionError", NO_DEVICES), False),
])
def test_stranded(pod: dict[str, Any], stranded: bool) -> None:
    assert (recovery.stranded(pod) is not None) is stranded


def test_owner_and_description() -> None:
    owned = recovery.stranded(_pod("Failed", "UnexpectedAdmissionError", NO_DEVICES, owner="ReplicaSet/trainer-7d9f"))
    assert owned is not None and owned.owner == "ReplicaSet/trainer-7d9f"
    assert owned.describe().startswith("ml/p on gpu-1: UnexpectedAdmissionError (Allocate failed due to no healthy devices")
    bare = recovery.stranded(_pod("Failed", "UnexpectedAdmissionError", NO_DEVICES))
    assert bare is not None and "no owner (nothing recreates it)" in bare.describe()


def test_only_the_selected_nodes_count() -> None:
    pods = [_pod("Failed", "UnexpectedAdmissionError", NO_DEVICES, node=n) for n in ("gpu-2", "gpu-1", "cpu-1")]
    assert [s.node for s in recovery.find_stranded(pods, ["gpu-1", "gpu-2"])] == ["gpu-1", "gpu-2"]
    assert len(recovery.find_stranded(pods)) == 3

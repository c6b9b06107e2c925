"""Taints and tolerations: GPU nodes keep pods that do not need GPUs away."""

import allure
import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.plugin import Session
from gpu_conformance.runner import PodOutcome


@pytest.mark.requirement("GPU-TAINT-001")
def test_gpu_node_carries_the_gpu_taint(gpu_node: NodeFacts, gc_session: Session, requirement: Requirement) -> None:
    wanted = gc_session.profile.taints
    if not wanted.required:
        pytest.skip("the profile does not require GPU nodes to be tainted (taints.required)")

    with allure.step("The node's taints include the profile's GPU taint"):
        observed = [f"{t.key}={t.value or ''}:{t.effect}" for t in gpu_node.taints]
        assert any(t.key == wanted.key and t.effect == wanted.effect for t in gpu_node.taints), requirement.violation(
            gpu_node.name, f"a taint {wanted.key}:{wanted.effect}", f"taints {observed or 'none'}")


@pytest.mark.requirement("GPU-TAINT-002")
def test_untolerating_pod_stays_off_and_tolerating_pod_runs(
    gpu_node: NodeFacts, untolerated_probe: PodOutcome, vector_add: PodOutcome, requirement: Requirement
) -> None:
    with allure.step("A pod pinned to the node WITHOUT the GPU toleration (and no GPU request) was submitted"):
        refused = untolerated_probe.state.unschedulable or ""
        assert "untolerated taint" in refused, requirement.violation(
            gpu_node.name, "the pod without the toleration Pending with reason 'untolerated taint'",
            untolerated_probe.describe())

    with allure.step("The same pod WITH the toleration ran"):
        assert vector_add.succeeded, requirement.violation(
            gpu_node.name, "the pod with the toleration to run to completion", vector_add.describe())

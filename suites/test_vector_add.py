"""Workloads: a CUDA vector-add pod runs on every GPU node."""

import allure
import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.runner import PodOutcome


@pytest.mark.requirement("GPU-WL-001")
@pytest.mark.nodes("smoke-sample")
def test_vector_add_passes(gpu_node: NodeFacts, vector_add: PodOutcome, requirement: Requirement) -> None:
    with allure.step("A pod requesting one GPU, pinned to this node and tolerating the GPU taint, was run"):
        observed = vector_add.describe()

    with allure.step("The scheduler placed it and it completed successfully"):
        assert vector_add.state.unschedulable is None, requirement.violation(
            gpu_node.name, "the pod to be scheduled on the node", observed)
        assert vector_add.succeeded, requirement.violation(
            gpu_node.name, "phase Succeeded with exit code 0", f"{observed}; log tail: {vector_add.logs[-300:]!r}")

    with allure.step("Its log reports the CUDA sample's verdict"):
        assert "Test PASSED" in vector_add.logs, requirement.violation(
            gpu_node.name, "log line 'Test PASSED'", f"log tail: {vector_add.logs[-300:]!r}")

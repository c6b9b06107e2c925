"""Resource accounting: the scheduler hands out GPUs as whole, countable devices."""

import allure
import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.runner import PodOutcome


@pytest.mark.requirement("GPU-SCHED-001")
def test_oversized_request_is_refused(
    gpu_nodes: tuple[NodeFacts, ...], oversized_pod: PodOutcome | None, requirement: Requirement
) -> None:
    with allure.step("A pod requesting one GPU more than the largest GPU node has, allowed on every GPU node"):
        assert oversized_pod is not None  # gpu_nodes has already failed the check when there are none
        requested = oversized_pod.spec["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]

    with allure.step("The scheduler refuses it for lack of GPUs"):
        refused = oversized_pod.state.unschedulable or ""
        assert "Insufficient nvidia.com/gpu" in refused, requirement.violation(
            None, f"a pod requesting {requested} GPUs Pending with 'Insufficient nvidia.com/gpu'", oversized_pod.describe())


@pytest.mark.requirement("GPU-SCHED-002")
def test_whole_node_pods_run_one_after_the_other(
    gpu_node: NodeFacts, gpu_hold_pair: tuple[PodOutcome, PodOutcome], gpu_hold_overlap: bool | None,
    requirement: Requirement
) -> None:
    first, second = gpu_hold_pair
    with allure.step("Two pods, each requesting every GPU of the node, were submitted together; both ran"):
        for pod in (first, second):
            assert pod.succeeded, requirement.violation(gpu_node.name, "both whole-node pods to complete", pod.describe())

    with allure.step("Their run intervals did not overlap"):
        assert not gpu_hold_overlap, requirement.violation(
            gpu_node.name, "the second whole-node pod to start after the first ended",
            f"{first.pod} ran {first.state.started_at}..{first.state.finished_at}, "
            f"{second.pod} ran {second.state.started_at}..{second.state.finished_at}")


@pytest.mark.requirement("GPU-SCHED-003")
def test_two_gpu_pod_runs(gpu_node: NodeFacts, vector_add_two_gpus: PodOutcome, requirement: Requirement) -> None:
    with allure.step('A vector-add pod requesting 2 GPUs, pinned to the node, ran to "Test PASSED"'):
        assert vector_add_two_gpus.succeeded and "Test PASSED" in vector_add_two_gpus.logs, requirement.violation(
            gpu_node.name, "a 2-GPU pod to run to 'Test PASSED'", vector_add_two_gpus.describe())

"""Node inventory: every GPU node is Ready and advertises exactly its GPUs to the scheduler."""

import allure
import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import LEGACY_GPU_RESOURCE, NodeFacts
from gpu_conformance.plugin import Session
from gpu_conformance.profile import GPU_PRODUCT_LABEL, expected_gpu_count, expected_product


@pytest.mark.requirement("GPU-NODE-001")
def test_gpu_capacity_equals_allocatable(gpu_node: NodeFacts, requirement: Requirement) -> None:
    with allure.step("Read the node's advertised nvidia.com/gpu capacity and allocatable"):
        capacity, allocatable = gpu_node.gpu_capacity, gpu_node.gpu_allocatable
        observed = f"capacity {capacity}, allocatable {allocatable}"

    with allure.step("Both present, equal, and greater than zero"):
        assert capacity is not None and allocatable is not None, requirement.violation(
            gpu_node.name, "nvidia.com/gpu in capacity and allocatable", observed)
        assert capacity > 0, requirement.violation(gpu_node.name, "capacity nvidia.com/gpu > 0", observed)
        assert allocatable == capacity, requirement.violation(
            gpu_node.name, f"allocatable nvidia.com/gpu == capacity ({capacity})", observed)


@pytest.mark.requirement("GPU-NODE-002")
def test_gpu_node_is_ready(gpu_node: NodeFacts, requirement: Requirement) -> None:
    with allure.step("The node's Ready condition"):
        assert gpu_node.ready, requirement.violation(gpu_node.name, "condition Ready=True", "Ready is not True")


@pytest.mark.requirement("GPU-NODE-003")
def test_gpu_count_matches(gpu_node: NodeFacts, gc_session: Session, requirement: Requirement) -> None:
    with allure.step("The expected physical count, from the profile's node group or the GFD count label"):
        expected, source = expected_gpu_count(gc_session.profile, gpu_node.labels)
        if expected is None:
            pytest.skip(f"no expected GPU count for {gpu_node.name}: {source}")

    with allure.step("The device plugin advertises exactly that many"):
        assert gpu_node.gpu_capacity == expected, requirement.violation(
            gpu_node.name, f"capacity nvidia.com/gpu == {expected} ({source})", f"capacity {gpu_node.gpu_capacity}")


@pytest.mark.requirement("GPU-NODE-004")
def test_gpu_product_matches(gpu_node: NodeFacts, gc_session: Session, requirement: Requirement) -> None:
    with allure.step("The product the profile expects for this node's group"):
        expected, source = expected_product(gc_session.profile, gpu_node.labels)
        if expected is None:
            pytest.skip(f"{source} ({gpu_node.name})")

    with allure.step("GPU Feature Discovery's product label says the same"):
        observed = gpu_node.labels.get(GPU_PRODUCT_LABEL)
        assert observed == expected, requirement.violation(
            gpu_node.name, f"{GPU_PRODUCT_LABEL}={expected} ({source})", f"{GPU_PRODUCT_LABEL}={observed}")


@pytest.mark.requirement("GPU-NODE-005")
def test_gpus_not_advertised_only_as_legacy_resource(gpu_node: NodeFacts, requirement: Requirement) -> None:
    with allure.step("A node with the legacy resource and without nvidia.com/gpu is unsupported"):
        legacy_only = gpu_node.legacy_gpu_capacity is not None and gpu_node.gpu_capacity is None
        assert not legacy_only, requirement.violation(
            gpu_node.name, "GPUs advertised as nvidia.com/gpu",
            f"only {LEGACY_GPU_RESOURCE}={gpu_node.legacy_gpu_capacity} (unsupported since Kubernetes 1.11)")

"""Node inventory: every GPU node advertises its GPUs to the scheduler."""

import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts


@pytest.mark.requirement("GPU-NODE-001")
def test_gpu_capacity_equals_allocatable(gpu_node: NodeFacts, requirement: Requirement) -> None:
    # Step: read the node's advertised nvidia.com/gpu capacity and allocatable.
    capacity, allocatable = gpu_node.gpu_capacity, gpu_node.gpu_allocatable
    observed = f"capacity {capacity}, allocatable {allocatable}"

    # Step: both present, equal, and greater than zero.
    assert capacity is not None and allocatable is not None, requirement.violation(
        gpu_node.name, "nvidia.com/gpu in capacity and allocatable", observed)
    assert capacity > 0, requirement.violation(gpu_node.name, "capacity nvidia.com/gpu > 0", observed)
    assert allocatable == capacity, requirement.violation(
        gpu_node.name, f"allocatable nvidia.com/gpu == capacity ({capacity})", observed)

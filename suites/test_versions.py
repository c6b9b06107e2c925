"""Versions: what driver and CUDA version every GPU node runs, whether the cluster's images can run
on it, whether a node group runs one driver, and whether the GPUs' memory is healthy."""

from collections.abc import Callable

import allure
import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.nvsmi import NvidiaSmiParseError, parse
from gpu_conformance.profile import Versions
from gpu_conformance.probe import ProbeFacts
from gpu_conformance.runner import PodOutcome
from gpu_conformance.versions import (DriverFacts, GroupDrivers, from_labels, gate, label_mismatches, memory_problems,
                                      same_version)


@pytest.mark.requirement("GPU-SMI-001")
def test_nvidia_smi_reports_driver_and_cuda(gpu_node: NodeFacts, nvidia_smi: PodOutcome, requirement: Requirement) -> None:
    with allure.step("An nvidia-smi pod requesting one GPU, pinned to the node, ran"):
        assert nvidia_smi.succeeded, requirement.violation(
            gpu_node.name, "the nvidia-smi pod to exit 0", f"{nvidia_smi.describe()}; log tail: {nvidia_smi.logs[-300:]!r}")

    with allure.step("Its output is an nvidia-smi report with the driver and CUDA versions"):
        try:
            facts = parse(nvidia_smi.logs)
        except NvidiaSmiParseError as exc:
            pytest.fail(requirement.violation(gpu_node.name, "an nvidia-smi report", f"unparseable output: {exc}"), pytrace=False)
        assert facts.driver_version and facts.cuda_version, requirement.violation(
            gpu_node.name, "driver and CUDA versions reported", f"driver {facts.driver_version}, CUDA {facts.cuda_version}")


@pytest.mark.requirement("GPU-VER-001")
def test_driver_supports_profile_cuda_versions(gpu_node: NodeFacts, wanted_versions: Versions, node_driver: DriverFacts,
                                               requirement: Requirement, evidence: Callable[[str], None]) -> None:
    with allure.step("The node's driver (nvidia-smi in a GPU pod, else its GFD labels) against the profile"):
        result = gate(node_driver.driver, wanted_versions.minimum_driver, wanted_versions.cuda)
        evidence(f"driver {node_driver.driver} ({node_driver.source}): {result.describe()}")

        assert result.passed, requirement.violation(
            gpu_node.name, wanted_versions.describe(), f"driver {node_driver.driver} from {node_driver.source}: {result.describe()}")


@pytest.mark.requirement("GPU-VER-002")
def test_one_driver_per_node_group(gpu_node: NodeFacts, node_group_drivers: GroupDrivers, node_driver: DriverFacts,
                                   requirement: Requirement, evidence: Callable[[str], None]) -> None:
    with allure.step("The drivers the node's group (profile group, else same GPU product) runs"):
        group = node_group_drivers
        evidence(f"{group.group}: {group.split()}")

    with allure.step("The node runs the driver more than half of its group runs"):
        usual = group.usual()
        assert usual is not None, requirement.violation(
            gpu_node.name, f"one driver version across {group.group}", f"no version runs on more than half of it: {group.split()}")
        assert same_version(node_driver.driver, usual), requirement.violation(
            gpu_node.name, f"driver {usual}, as on the rest of {group.group}", f"driver {node_driver.driver}; {group.split()}")


@pytest.mark.requirement("GPU-VER-003")
def test_driver_labels_match_the_pod(gpu_node: NodeFacts, smi_driver: DriverFacts, requirement: Requirement,
                                     evidence: Callable[[str], None]) -> None:
    labelled = from_labels(gpu_node.labels)
    if labelled is None:
        pytest.skip(f"node {gpu_node.name} has no GPU Feature Discovery driver labels to compare")

    with allure.step("What nvidia-smi reports inside the pod against what the node's labels claim"):
        evidence(f"labels: driver {labelled.driver}, CUDA {labelled.cuda}; in the pod: driver {smi_driver.driver}, CUDA {smi_driver.cuda}")
        mismatches = label_mismatches(labelled, smi_driver)
        assert not mismatches, requirement.violation(
            gpu_node.name, "the node's nvidia.com/cuda.* labels to match the pod's nvidia-smi", "; ".join(mismatches))


@pytest.mark.requirement("GPU-VER-004")
def test_no_uncorrected_memory_errors(gpu_node: NodeFacts, probe_facts: ProbeFacts, requirement: Requirement,
                                      evidence: Callable[[str], None]) -> None:
    with allure.step("The NVML probe held every allocatable GPU of the node and read their memory health"):
        ecc_on = sum(1 for g in probe_facts.gpus if g.ecc_mode is not None and g.ecc_mode.current)
        evidence(f"{len(probe_facts.gpus)} GPU(s) probed, ECC enabled on {ecc_on}")

    with allure.step("No GPU reports uncorrected errors or pending/failed retirement or remapping"):
        problems = memory_problems(probe_facts)
        assert not problems, requirement.violation(
            gpu_node.name, "no uncorrected memory errors and nothing pending", "; ".join(problems))

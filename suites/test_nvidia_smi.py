"""Versions: nvidia-smi runs in a GPU pod on every GPU node and reports the driver and CUDA versions."""

import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.nvsmi import NvidiaSmiParseError, parse
from gpu_conformance.runner import PodOutcome


@pytest.mark.requirement("GPU-SMI-001")
def test_nvidia_smi_reports_driver_and_cuda(gpu_node: NodeFacts, nvidia_smi: PodOutcome, requirement: Requirement) -> None:
    # Step: an nvidia-smi pod requesting one GPU, pinned to the node, ran.
    assert nvidia_smi.succeeded, requirement.violation(
        gpu_node.name, "the nvidia-smi pod to exit 0", f"{nvidia_smi.describe()}; log tail: {nvidia_smi.logs[-300:]!r}")

    # Step: its output is an nvidia-smi report with the driver and CUDA versions.
    try:
        facts = parse(nvidia_smi.logs)
    except NvidiaSmiParseError as exc:
        pytest.fail(requirement.violation(gpu_node.name, "an nvidia-smi report", f"unparseable output: {exc}"), pytrace=False)
    assert facts.driver_version and facts.cuda_version, requirement.violation(
        gpu_node.name, "driver and CUDA versions reported", f"driver {facts.driver_version}, CUDA {facts.cuda_version}")

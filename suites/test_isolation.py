"""Isolation: a pod sees the GPUs it was given and no others. Every probe pod is pinned to a GPU
node, or a negative result would prove nothing."""

import allure
import pytest

from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.isolation import parse_listing
from gpu_conformance.nvsmi import NvidiaSmiFacts
from gpu_conformance.runner import PodOutcome


@pytest.mark.requirement("GPU-ISO-001")
def test_pod_sees_exactly_the_gpu_it_requested(
    gpu_node: NodeFacts, nvidia_smi_listing: NvidiaSmiFacts, requirement: Requirement
) -> None:
    with allure.step("An nvidia-smi pod requesting one GPU, pinned to the node, printed what it sees"):
        seen = nvidia_smi_listing

    with allure.step("Exactly one GPU is visible to it"):
        assert len(seen.gpus) == 1, requirement.violation(
            gpu_node.name, "1 GPU visible to a pod that requested 1", f"{len(seen.gpus)} visible")


@pytest.mark.requirement("GPU-ISO-002")
def test_pod_without_gpu_request_sees_no_gpu(
    gpu_node: NodeFacts, isolation_nogpu: PodOutcome, requirement: Requirement
) -> None:
    with allure.step("A pod with no GPU request and NVIDIA_VISIBLE_DEVICES=all, pinned to the node, listed GPUs"):
        seen = parse_listing(isolation_nogpu.logs)

    with allure.step("It saw none"):
        assert seen.count == 0, requirement.violation(
            gpu_node.name, "0 GPUs visible to a pod without a GPU request", f"{seen.count} visible: {', '.join(seen.uuids)}")


@pytest.mark.requirement("GPU-ISO-003")
def test_only_the_requesting_container_sees_the_gpu(
    gpu_node: NodeFacts, isolation_pair: PodOutcome, requirement: Requirement
) -> None:
    with allure.step("One pod, two containers; only `with-gpu` requested one GPU. Each listed what it sees"):
        with_gpu = parse_listing(isolation_pair.container_logs["with-gpu"])
        without_gpu = parse_listing(isolation_pair.container_logs["without-gpu"])

    with allure.step("The requesting container sees its GPU; the other sees none"):
        observed = f"with-gpu sees {with_gpu.count}, without-gpu sees {without_gpu.count}"
        assert with_gpu.count == 1 and without_gpu.count == 0, requirement.violation(
            gpu_node.name, "with-gpu sees 1 GPU, without-gpu sees 0", observed)

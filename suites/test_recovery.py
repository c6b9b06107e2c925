"""Recovery: a GPU node gets its GPUs back after its device plugin restarts and after a reboot, and
no pod is left stranded without GPUs. These checks disrupt the node they run on: each holds it
alone (no other check uses it meanwhile) and they run after every other check."""

import allure
import pytest

from fixtures.recovery import Recovered, StrandedAfter, assert_no_stall
from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts

pytestmark = pytest.mark.disruptive


@pytest.mark.requirement("GPU-REC-001")
@pytest.mark.nodes("plugin-restart")
def test_gpus_return_after_device_plugin_restart(
    gpu_node: NodeFacts, plugin_restart: Recovered, requirement: Requirement, evidence
) -> None:
    with allure.step("The device-plugin pod on this node was deleted; every recovery phase was timed"):
        timeline = plugin_restart.timeline
        evidence(f"phases: {timeline.describe()}")
        recovered = timeline.seconds_until(timeline.phases[-1].name) if timeline.phases else None
        if recovered is not None:
            evidence(f"recovered (pod deleted to vector-add passed) in {recovered:.1f}s")

    with allure.step("No phase stalled: replacement pod Ready, allocatable back, vector-add passed"):
        assert_no_stall(timeline, requirement, gpu_node.name,
                        "every recovery phase to complete within the profile's recovery.plugin_restart.timeout_s")


@pytest.mark.requirement("GPU-REC-002")
@pytest.mark.nodes("reboot")
def test_gpus_return_after_node_reboot(
    gpu_node: NodeFacts, node_reboot: Recovered, requirement: Requirement, evidence
) -> None:
    with allure.step("The node was cordoned and drained (if the profile says so), rebooted by the profile's command, uncordoned"):
        timeline = node_reboot.timeline
        evidence(f"phases: {timeline.describe()}")

    with allure.step("It went down, came back Ready with its GPUs, and ran a vector-add; no phase stalled"):
        assert_no_stall(timeline, requirement, gpu_node.name,
                        "every reboot phase to complete within the profile's recovery.reboot timeouts")


@pytest.mark.requirement("GPU-REC-003")
@pytest.mark.nodes("recovered")
def test_no_pod_stranded_by_recovery(
    gpu_node: NodeFacts, stranded_after_recovery: StrandedAfter, requirement: Requirement, evidence
) -> None:
    with allure.step("The recoveries that ran on this node, and the pods stranded there before them (reported only)"):
        found = stranded_after_recovery
        evidence(f"after: {', '.join(found.recoveries)}")
        if found.before:
            evidence("stranded before the recovery (not judged): " + "; ".join(s.describe() for s in found.before))

    with allure.step("No pod newly failed its GPU allocation on the node"):
        assert not found.new, requirement.violation(
            gpu_node.name, "no pod newly failed with UnexpectedAdmissionError or OutOfnvidia.com/gpu",
            f"{len(found.new)} stranded: " + "; ".join(s.describe() for s in found.new))

"""GPU stack health: the device plugin and its companions run on every GPU node."""

import allure
import pytest

from fixtures.stack import require_flavour
from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.plugin import Session
from gpu_conformance.stack import StackFacts, not_ready, restarted_since


@pytest.mark.requirement("GPU-STACK-001")
def test_device_plugin_ready_on_node(
    gpu_node: NodeFacts, gpu_stack: StackFacts, gpu_stack_at_start: StackFacts, gc_session: Session,
    pods_deleted_by_suite: set[tuple[str, str]], requirement: Requirement,
) -> None:
    with allure.step("Which device-plugin flavour the cluster runs (profile, else detected)"):
        flavour = require_flavour(gpu_stack, gc_session)

    with allure.step("Its device-plugin pod on this node exists and is Ready"):
        pods = gpu_stack.pods_on(gpu_node.name, flavour, "device-plugin")
        assert pods, requirement.violation(gpu_node.name, f"a {flavour} device-plugin pod on the node", "none")
        bad = not_ready(pods)
        assert not bad, requirement.violation(gpu_node.name, "the device-plugin pod Ready", "; ".join(p.describe() for p in bad))

    with allure.step("And it has not restarted since the run began (a recovery check's own restart excepted)"):
        restarts = restarted_since(gpu_stack_at_start, pods, pods_deleted_by_suite)
        assert not restarts, requirement.violation(gpu_node.name, "no device-plugin restart during the run", "; ".join(restarts))


@pytest.mark.requirement("GPU-STACK-002")
def test_operator_operands_ready_on_node(
    gpu_node: NodeFacts, gpu_stack: StackFacts, gc_session: Session, requirement: Requirement
) -> None:
    require_flavour(gpu_stack, gc_session, "gpu-operator")

    with allure.step("One pod of every operand on this node, all Ready"):
        pods = gpu_stack.pods_on(gpu_node.name, "gpu-operator")
        missing = sorted(set(gpu_stack.components("gpu-operator", gpu_node.labels)) - {p.component for p in pods})
        assert not missing, requirement.violation(gpu_node.name, "a pod of every operand on the node", f"missing: {', '.join(missing)}")
        bad = not_ready(pods)
        assert not bad, requirement.violation(gpu_node.name, "every operand pod Ready", "; ".join(p.describe() for p in bad))


@pytest.mark.requirement("GPU-STACK-003")
def test_cluster_policy_ready(
    gpu_nodes: tuple[NodeFacts, ...], gpu_stack: StackFacts, gc_session: Session, requirement: Requirement
) -> None:
    require_flavour(gpu_stack, gc_session, "gpu-operator")

    with allure.step("The ClusterPolicy owning the operands on the selected nodes"):
        owners = gpu_stack.owning_policies()
        policies = [p for p in gpu_stack.cluster_policies if p.name in owners]
        assert policies, requirement.violation(None, "a ClusterPolicy owning the operands", f"none (owners named: {owners})")

    with allure.step("It reports ready"):
        for policy in policies:
            assert policy.state == "ready" and policy.ready_condition == "True", requirement.violation(
                None, f"ClusterPolicy {policy.name} state ready, condition Ready=True",
                f"state {policy.state}, Ready={policy.ready_condition}: {policy.message}")


@pytest.mark.requirement("GPU-STACK-004")
def test_gke_driver_installer_ready_on_node(
    gpu_node: NodeFacts, gpu_stack: StackFacts, gc_session: Session, requirement: Requirement
) -> None:
    require_flavour(gpu_stack, gc_session, "gke")

    with allure.step("The driver installer pod on this node exists and is Ready"):
        pods = gpu_stack.pods_on(gpu_node.name, "gke", "driver-installer")
        assert pods, requirement.violation(gpu_node.name, "an nvidia-driver-installer pod on the node", "none")
        bad = not_ready(pods)
        assert not bad, requirement.violation(gpu_node.name, "the driver installer Ready", "; ".join(p.describe() for p in bad))

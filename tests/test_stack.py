"""GPU-stack recognition (pure): DaemonSets by name and ClusterPolicy ownership, pods, policies."""

from gpu_conformance import stack
from gpu_conformance.stack import StackFacts


def _ds(name: str, owner: str | None = None, ns: str = "gpu-operator") -> dict:
    meta: dict = {"name": name, "namespace": ns}
    if owner:
        meta["ownerReferences"] = [{"kind": "ClusterPolicy", "name": owner}]
    return {"metadata": meta, "spec": {"selector": {"matchLabels": {"app": name}}}}


def test_operator_operands_are_recognised_by_their_owner() -> None:
    ref = stack.classify(_ds("nvidia-container-toolkit-daemonset", owner="cluster-policy"))
    assert ref is not None and (ref.flavour, ref.component, ref.owner) == ("gpu-operator", "container-toolkit", "cluster-policy")
    # The same name without a ClusterPolicy owner is the stand-alone device plugin only if it says so.
    assert stack.classify(_ds("nvidia-container-toolkit-daemonset")) is None


def test_standalone_and_gke_device_plugins() -> None:
    helm = stack.classify(_ds("nvdp-nvidia-device-plugin", ns="nvidia-device-plugin"))
    assert helm is not None and (helm.flavour, helm.component) == ("nvidia-device-plugin", "device-plugin")
    gke = stack.classify(_ds("nvidia-gpu-device-plugin-large-cos", ns="kube-system"))
    assert gke is not None and (gke.flavour, gke.component) == ("gke", "device-plugin")
    assert stack.classify(_ds("kube-proxy", ns="kube-system")) is None


def test_crash_looping_pod_is_not_ready_with_its_reason() -> None:
    ref = stack.classify(_ds("nvidia-device-plugin-daemonset", ns="kube-system"))
    assert ref is not None
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                      "containerStatuses": [{"restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    cp = stack.component_pod(ref, pod)
    assert (cp.ready, cp.restarts, cp.reason, cp.node) == (False, 7, "CrashLoopBackOff", "n1")
    assert "not Ready (CrashLoopBackOff), 7 restart(s)" in cp.describe()


def test_flavour_choice() -> None:
    empty = StackFacts((), (), ())
    assert stack.expected_flavour(empty, "auto")[0] is None
    assert stack.expected_flavour(empty, "gke") == ("gke", "named by the profile")
    ref = stack.classify(_ds("nvidia-gpu-device-plugin", ns="kube-system"))
    assert ref is not None
    pod = stack.component_pod(ref, {"metadata": {"name": "p"}, "spec": {"nodeName": "n"}, "status": {}})
    assert stack.expected_flavour(StackFacts((ref,), (pod,), ()), "auto")[0] == "gke"


def test_operands_a_node_opts_out_of_are_not_expected_there() -> None:
    refs = tuple(r for n in ("nvidia-driver-daemonset", "nvidia-dcgm-exporter", "nvidia-operator-validator")
                 if (r := stack.classify(_ds(n, owner="cp"))) is not None)
    facts = StackFacts(refs, (), ())
    assert facts.components("gpu-operator") == ["dcgm-exporter", "driver", "validator"]
    opted_out = {"nvidia.com/gpu.deploy.dcgm-exporter": "false", "nvidia.com/gpu.deploy.operator-validator": "false"}
    assert facts.components("gpu-operator", opted_out) == ["driver"]


def test_replacements_of_pods_the_suite_deleted_are_not_restarts() -> None:
    def pod(name: str, restarts: int = 0) -> stack.ComponentPod:
        return stack.ComponentPod("nvidia-device-plugin", "device-plugin", "kube-system/nvidia-device-plugin", name,
                                  "gpu-1", True, restarts, "Running")

    before = StackFacts((), (pod("dp-old"),), ())
    assert stack.restarted_since(before, [pod("dp-new")]) == [
        "kube-system/nvidia-device-plugin: pod dp-old was replaced by dp-new"]
    assert stack.restarted_since(before, [pod("dp-new")], {("kube-system", "dp-old")}) == []
    assert stack.restarted_since(before, [pod("dp-new", 3)], {("kube-system", "dp-old")}) == [
        "kube-system/nvidia-device-plugin pod dp-new (replacing dp-old, which the suite deleted): 3 restart(s)"]
    # Only the replacement is excused: the same pod restarting still counts.
    assert stack.restarted_since(before, [pod("dp-old", 2)], {("kube-system", "dp-old")}) != []

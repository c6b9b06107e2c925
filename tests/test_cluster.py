"""Node facts and kubeconfig validation (pure; no cluster needed)."""

from pathlib import Path

import pytest

from gpu_conformance.cluster import node_facts, validate_kubeconfig
from gpu_conformance.errors import ConfigError
from gpu_conformance.runner import pod_state


def _node(capacity: dict, allocatable: dict, labels: dict | None = None) -> dict:
    return {
        "metadata": {"name": "n1", "labels": labels or {}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"capacity": capacity, "allocatable": allocatable,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_gpu_node_facts() -> None:
    facts = node_facts(_node({"nvidia.com/gpu": "8"}, {"nvidia.com/gpu": "0"}))
    assert (facts.gpu_capacity, facts.gpu_allocatable, facts.ready, facts.is_gpu_node) == (8, 0, True, True)
    assert facts.taints[0].key == "nvidia.com/gpu" and facts.taints[0].effect == "NoSchedule"


def test_labelled_gpu_node_without_resources_is_still_a_gpu_node() -> None:
    facts = node_facts(_node({"cpu": "4"}, {"cpu": "4"}, {"nvidia.com/gpu.present": "true"}))
    assert facts.is_gpu_node and facts.gpu_capacity is None


def test_cpu_node_is_not_a_gpu_node() -> None:
    assert not node_facts(_node({"cpu": "4"}, {"cpu": "4"})).is_gpu_node


def test_pod_state_recognises_unschedulable_and_exit_codes() -> None:
    pending = {"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}}
    st = pod_state(pending)
    assert st.decided and st.unschedulable == "0/3 nodes are available"
    failed = {"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}
    assert pod_state(failed).exit_code == 1 and pod_state(failed).decided
    assert not pod_state({"status": {"phase": "Running"}}).decided


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
users:
- name: u
  user: {token: secret-token-value}
"""


@pytest.mark.parametrize(
    ("text", "context", "message"),
    [
        ("clusters: [\n", None, "line 2: not valid YAML"),
        ("just a string\n", None, "no clusters defined"),
        (KUBECONFIG, "other", "no context named 'other' (available: ctx)"),
        (KUBECONFIG.replace("cluster: c, user", "cluster: missing, user"), None, "names cluster 'missing'"),
        (KUBECONFIG.replace('server: "https://127.0.0.1:6443"', 'x: 1'), None, "has no server URL"),
    ],
)
def test_bad_kubeconfigs_give_one_line_without_secrets(tmp_path: Path, text: str, context: str | None, message: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        validate_kubeconfig(path, context)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert "secret-token-value" not in str(exc.value)


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        validate_kubeconfig(tmp_path / "absent", None)


def test_valid_kubeconfig_passes(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    validate_kubeconfig(path, "ctx")

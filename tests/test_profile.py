"""Cluster profiles: documented keys load; bad input is one line naming file, key, line and problem."""

import subprocess
import sys
from pathlib import Path

import pytest

from gpu_conformance import profile
from gpu_conformance.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "docs" / "profile.example.yaml"


def test_no_profile_means_defaults_and_auto_detection() -> None:
    p = profile.Profile()
    assert (p.device_plugin, p.taints.required, p.gpu_nodes.selector, p.groups) == ("auto", False, None, [])


def test_documented_example_loads() -> None:
    p = profile.load(EXAMPLE)
    group = p.group_of({"pool": "h100", "other": "x"})
    assert group is not None and group.gpu_count == 8
    assert profile.expected_gpu_count(p, {"pool": "h100"}) == (8, "profile group 'h100'")
    assert profile.expected_gpu_count(p, {"nvidia.com/gpu.count": "4"}) == (4, "label nvidia.com/gpu.count")
    assert profile.expected_product(p, {"pool": "h100"})[0] == "NVIDIA-H100-80GB-HBM3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("taints:\n  required: true\n  colour: red\n", "line 3: taints.colour: Extra inputs are not permitted"),
        ("timeouts:\n  workload_s: soon\n", "line 2: timeouts.workload_s: Input should be a valid number, unable to parse string as a number"),
        ("groups:\n  - name: h100\n    match_labels: {pool: h100}\n    gpu_count: -8\n",
         "line 4: groups.0.gpu_count: Input should be greater than or equal to 1"),
        ("device_plugin: nvidia\n", "line 1: device_plugin: Input should be 'auto', 'nvidia-device-plugin', 'gpu-operator' or 'gke'"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("versions:\n  minimum_driver: latest\n",
         "line 2: versions.minimum_driver: Value error, malformed driver version 'latest': expected numbers separated by dots, like 535.104.05"),
        ("versions:\n  cuda: ['12.4', '99.1']\n",
         "line 2: versions.cuda: Value error, CUDA 99.1 is not a toolkit release in the compatibility table (10.0 to 13.4, "
         "from https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#cuda-driver)"),
    ],
)
def test_bad_profiles_name_file_line_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        profile.load(path)
    separator = ": " if message.startswith("expected") else " "
    assert str(exc.value) == f"profile {path}{separator}{message}"


@pytest.mark.parametrize("content", [None, "groups:\n  - name: x\n    match_labels: {}\n"])
def test_run_with_a_bad_profile_exits_2_with_one_line(tmp_path: Path, content: str | None) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n"
                          "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n")
    path = tmp_path / "profile.yaml"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={kubeconfig}", f"--profile={path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    expected = "file not found" if content is None else "line 3: groups.0.match_labels: Dictionary should have at least 1 item"
    assert str(path) in lines[0] and expected in lines[0]


def test_versions_describe_what_the_gate_wants() -> None:
    assert profile.Versions(minimum_driver="550.54.15", cuda=["12.4", "12.8"]).describe() == \
        "a driver at or above 550.54.15 that runs CUDA 12.4, 12.8"
    assert profile.Versions(cuda=["12.4"]).describe() == "a driver that runs CUDA 12.4"
    assert profile.Versions(minimum_driver="550.54.15").describe() == "a driver at or above 550.54.15"

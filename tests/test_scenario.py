"""Scenario files: bundled ones load; bad ones fail with the key and line."""

from pathlib import Path

import pytest

from gpu_conformance.errors import ConfigError
from gpu_conformance.sim import scenario


def test_bundled_scenarios_load_and_name_their_nodes() -> None:
    assert {"healthy", "fault-allocatable-zero", "fault-vector-add"} <= set(scenario.bundled())
    healthy = scenario.load(scenario.resolve("healthy"))
    names = [n for n, _ in healthy.expanded()]
    assert names == ["gpu-h100-1", "gpu-h100-2", "gpu-h100-3", "gpu-a100-1", "cpu-1", "cpu-2"]
    gpu_specs = [s for _, s in healthy.expanded() if s.gpus]
    assert all(s.allocatable == s.gpus for s in gpu_specs)


def test_default_scenario_is_healthy() -> None:
    assert scenario.resolve(None).stem == "healthy"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nnodes:\n  - name: a\n    gpus: 2\n    gpuz: 3\n")
    with pytest.raises(ConfigError) as exc:
        scenario.load(path)
    assert str(exc.value) == f"scenario {path} line 5: nodes.0.gpuz: Extra inputs are not permitted"


def test_wrong_type_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nnodes:\n  - name: a\n    gpus: many\n")
    with pytest.raises(ConfigError, match=r"line 4: nodes\.0\.gpus: Input should be a valid integer"):
        scenario.load(path)


def test_duplicate_node_names_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nnodes:\n  - {name: a, replicas: 2}\n  - {name: a-1}\n")
    with pytest.raises(ConfigError, match="node name 'a-1' appears twice"):
        scenario.load(path)


def test_unknown_workload_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nnodes:\n  - name: a\n    workloads: {matmul: {exit_code: 1}}\n")
    with pytest.raises(ConfigError, match=r"unknown workload\(s\) \['matmul'\]"):
        scenario.load(path)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nnodes: [\n")
    with pytest.raises(ConfigError, match=r"line 3: not valid YAML"):
        scenario.load(path)

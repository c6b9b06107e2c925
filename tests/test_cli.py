"""Bad input to the command line: one clear line, the documented exit code, no traceback."""

import subprocess
import sys
from pathlib import Path



def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_conformance", *args], capture_output=True, text=True, timeout=120)


def _one_clean_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_missing_kubeconfig_is_a_usage_error(tmp_path: Path) -> None:
    proc = _cli("run", f"--kubeconfig={tmp_path / 'absent'}")
    assert proc.returncode == 2
    assert _one_clean_line(proc) == f"gpu-conformance: error: kubeconfig {tmp_path / 'absent'}: file not found"


def test_malformed_kubeconfig_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [\n  - {name: c\n")
    proc = _cli("run", f"--kubeconfig={path}")
    assert proc.returncode == 2
    assert "not valid YAML" in _one_clean_line(proc)


def test_unreachable_cluster_is_an_infrastructure_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\n"
        "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {token: t0ps3cret}\n"
    )
    proc = _cli("run", f"--kubeconfig={path}")
    assert proc.returncode == 3
    line = _one_clean_line(proc)
    assert line.startswith("gpu-conformance: error: cannot reach the API server https://127.0.0.1:1")
    assert "t0ps3cret" not in proc.stderr + proc.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = _cli("--debug", "run", f"--kubeconfig={tmp_path / 'absent'}")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_unknown_scenario_is_a_usage_error() -> None:
    proc = _cli("sim", "up", "--scenario", "no-such-scenario")
    assert proc.returncode == 2
    assert "no such file or bundled scenario" in _one_clean_line(proc)


def test_unknown_option_is_a_usage_error() -> None:
    proc = _cli("sim", "status", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sim_profile_prints_a_loadable_profile(tmp_path: Path) -> None:
    from gpu_conformance import profile

    proc = _cli("sim", "profile", "healthy")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "p.yaml"
    path.write_text(proc.stdout)
    loaded = profile.load(path)
    assert loaded.taints.required and [g.name for g in loaded.groups] == ["h100", "a100"]

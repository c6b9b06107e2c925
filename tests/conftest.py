"""Project tests: one simulated cluster per test session, started by the xdist controller (or the only process).

All bundled scenarios (and the test-only ones in tests/data/scenarios) are loaded into the one cluster; each e2e test selects its scenario's
nodes with the label sim.gpu-conformance.io/scenario=<name>.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import kr8s
import pytest

from gpu_conformance.sim import scenario
from gpu_conformance.sim.control_plane import SimCluster

pytest_plugins = ["pytester"]

_ENV = "GPU_CONFORMANCE_TEST_SIM_DIR"
TEST_SCENARIOS = Path(__file__).parent / "data" / "scenarios"
_OWNER: list[SimCluster] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-sim", action="store_true", help="do not start the simulated cluster (unit tests only)")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _is_worker(config) or config.getoption("no_sim") or os.environ.get(_ENV):
        return
    state_dir = Path(tempfile.mkdtemp(prefix="gc-test-sim-"))
    sim = SimCluster(state_dir)
    scenarios = [scenario.load(scenario.resolve(n)) for n in scenario.bundled()]
    # Test-only scenarios: nodes no detection-matrix run selects (tests that disrupt them on purpose).
    scenarios += [scenario.load(p) for p in sorted(TEST_SCENARIOS.glob("*.yaml"))]
    sim.up(scenarios)
    _OWNER.append(sim)
    os.environ[_ENV] = str(state_dir)  # inherited by xdist workers, which start after this hook


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _OWNER:
        _OWNER.pop().down()


@pytest.fixture(scope="session")
def sim_cluster() -> SimCluster:
    """The session's simulated cluster (every bundled scenario loaded)."""
    state_dir = os.environ.get(_ENV)
    if not state_dir:
        pytest.fail("the simulated cluster was not started (run without --no-sim)", pytrace=False)
    sim = SimCluster(Path(state_dir))
    if not sim.is_up():
        pytest.fail(f"the simulated cluster in {state_dir} is not running", pytrace=False)
    return sim


@pytest.fixture(scope="session")
def sim_kubeconfig(sim_cluster: SimCluster) -> Path:
    state = sim_cluster.state()
    assert state is not None
    return state.kubeconfig


@pytest.fixture(scope="session")
def sim_api(sim_kubeconfig: Path) -> kr8s.Api:
    return kr8s.api(kubeconfig=str(sim_kubeconfig))


@pytest.fixture
def run_suite(sim_kubeconfig: Path, tmp_path: Path) -> Iterator[object]:
    """Run `gpu-conformance run` on one scenario's nodes; returns (exit code, summary, output, report dir)."""
    import json
    import subprocess
    import sys

    def run(scenario_name: str, *extra: str, selector: str | None = None) -> tuple[int, dict, str, Path]:
        report_dir = tmp_path / f"reports-{scenario_name}"
        sel = selector or f"{scenario.SCENARIO_LABEL}={scenario_name}"
        cmd = [sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={sim_kubeconfig}",
               f"--report-dir={report_dir}", f"--gpu-node-selector={sel}", "--workload-timeout=60", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        summary_path = report_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        return proc.returncode, summary, out, report_dir

    yield run

"""Fan-out mode decides like pod mode: the scenarios whose checks stand on per-node workloads fail exactly
what they declare when the workloads run through DaemonSets (--fanout daemonset), and nothing the suite
made is left behind."""

from pathlib import Path

import kr8s
import pytest

from gpu_conformance.sim import matrix, scenario
from gpu_conformance.workloads import MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL

# Every per-node workload, a failing and a hanging one, leaky isolation, a pair that may overlap, no driver.
SCENARIOS = ["healthy", "fault-vector-add", "fault-workload-hangs", "fault-isolation-leaky", "fault-oversubscribed",
             "fault-driver-not-loaded", "fault-allocatable-zero"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_fan_out_fails_exactly_what_the_scenario_declares(name: str, sim_kubeconfig: Path, sim_api: kr8s.Api,
                                                          tmp_path: Path) -> None:
    sc = scenario.load(scenario.resolve(name))
    code, summary, output = matrix.run_scenario(sim_kubeconfig, sc, tmp_path, ["--fanout=daemonset"])
    verdict = matrix.evaluate(sc, summary)
    assert verdict.ok, "\n".join(verdict.problems) + "\n--- run output tail ---\n" + output[-3000:]
    assert code == (1 if sc.expect_failures else (3 if sc.expect_errors else 0)), output[-3000:]
    assert "fan-out DaemonSet(s)" in output  # the workloads did go through DaemonSets
    # This run's namespaces only: the tests beside it run the suite on the same cluster.
    mine = f"{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_LABEL}={summary['run_id']}"
    left = [ns.name for ns in sim_api.get("namespaces", label_selector=mine) if not ns.raw["metadata"].get("deletionTimestamp")]
    assert not left, f"namespaces left behind: {left}"

"""The whole catalogue against every bundled scenario: the healthy one passes everything, and each
fault scenario fails exactly the checks it declares (expect_failures / expect_errors)."""

from pathlib import Path

import pytest

from gpu_conformance.sim import matrix, scenario

SCENARIOS = scenario.bundled()


def test_there_is_a_fault_scenario_for_every_requirement() -> None:
    from gpu_conformance import catalogue

    declared = {key.split("@")[0] for name in SCENARIOS for key in scenario.load(scenario.resolve(name)).expect_failures}
    assert declared == set(catalogue.load().by_id) - PENDING_FAULTS


# Requirements whose fault scenario is not built yet (kept honest: the test above fails when one is added).
PENDING_FAULTS: set[str] = set()


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_fails_exactly_what_it_declares(name: str, sim_kubeconfig: Path, tmp_path: Path) -> None:
    sc = scenario.load(scenario.resolve(name))
    code, summary, output = matrix.run_scenario(sim_kubeconfig, sc, tmp_path)
    verdict = matrix.evaluate(sc, summary)
    assert verdict.ok, "\n".join(verdict.problems) + "\n--- run output tail ---\n" + output[-3000:]
    expected_code = 1 if sc.expect_failures else (3 if sc.expect_errors else 0)
    assert code == expected_code, output[-3000:]

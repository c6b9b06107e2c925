"""The fault matrix (gpu_conformance.sim.faults): bad input, stopped control-plane processes, a
restarted API server, signals mid-run and HTTP faults. Every row must end with its documented exit
code and line, no traceback, and none of the suite's namespaces left standing.

One test for the whole matrix: the rows disturb a simulated cluster of their own one at a time.
"""

from __future__ import annotations

from pathlib import Path

from gpu_conformance.sim import faults
from gpu_conformance.sim.control_plane import SimCluster


def test_every_fault_ends_as_the_matrix_says(tmp_path: Path) -> None:
    sim = SimCluster(tmp_path / "sim")
    try:
        state = sim.up([faults.SCENARIO])
        rows = faults.run_all(faults.Context(sim, state.kubeconfig, tmp_path))
    finally:
        sim.down(quiet=True)
    assert len(rows) == len(faults.CASES)
    wrong = [f"{r.case.fault}: {'; '.join(r.problems)}\n    said: {r.seen.line()}" for r in rows if r.problems]
    assert not wrong, "rows not as expected:\n  " + "\n  ".join(wrong) + "\n\n" + faults.table(rows)
    injected = {r.case.fault: sum(r.seen.injected.values()) for r in rows if r.case.cause.__qualname__.startswith("_through_proxy")}
    assert all(injected.values()), f"every HTTP fault row injected its faults: {injected}"

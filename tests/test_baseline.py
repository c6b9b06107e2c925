"""The upgrade gate: `gpu-conformance run --baseline PREVIOUS/summary.json`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import kr8s
import pytest

from gpu_conformance import baseline
from gpu_conformance.sim import scenario
from gpu_conformance.summary import ClusterInfo, NodeInfo, ResultEntry, Summary, Totals

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def _node(name: str, gpus: int = 8, allocatable: int = 8, driver: str | None = "580.159.04", group: str = "g") -> NodeInfo:
    return NodeInfo(name=name, group=group, gpus=gpus, allocatable=allocatable, product="H100", driver=driver, cuda="13.0")


def _result(req: str, node: str, status: str) -> ResultEntry:
    return ResultEntry(id=req, title="t", area="a", level="MUST", node=node, status=status, expected=None, observed=None,
                       remediation=None, message="", evidence="", duration_s=0.1, ai_conformance=None, nodeid=f"x[{node}]")


def _summary(nodes: list[NodeInfo], results: list[ResultEntry]) -> Summary:
    zero = Totals(passed=0, failed=0, error=0, skipped=0)
    return Summary(suite_version="0", run_id="r", gate="standard", started=T0, finished=T0, duration_s=1,
                   pytest_exit_status=0, totals=zero, totals_by_level={},
                   cluster=ClusterInfo(gpu_nodes=len(nodes), gpu_node_details=nodes),
                   run_start={}, results=results)


def test_an_unchanged_cluster_has_no_findings() -> None:
    doc = _summary([_node("a"), _node("b")], [_result("GPU-NODE-001", "a", "passed")])
    assert baseline.compare(doc, doc).findings == ()


def test_every_kind_of_regression_is_found_and_named() -> None:
    before = _summary([_node("a"), _node("b"), _node("c"), _node("d")],
                      [_result("GPU-NODE-001", "a", "passed"), _result("GPU-WL-001", "b", "passed")])
    after = _summary([_node("a", allocatable=0), _node("b", driver="570.86.15"), _node("d", driver="580.159.4"),
                      _node("e")],
                     [_result("GPU-NODE-001", "a", "failed"), _result("GPU-WL-001", "b", "error")])
    found = {(f.kind, f.node, f.regression) for f in baseline.compare(before, after).findings}
    assert found == {
        ("allocatable-dropped", "a", True),
        ("check-regressed", "a", True),
        ("driver-downgraded", "b", True),
        ("driver-drift", None, True),  # 570.86.15 on b beside 580.159.04 on a and d
        ("node-missing", "c", True),
        ("node-added", "e", False),
    }, found
    # 580.159.4 is 580.159.04 (numeric per component): no change reported for d; an error is not a regression.


def test_a_driver_upgrade_is_reported_not_failed() -> None:
    found = baseline.compare(_summary([_node("a", driver="550.127.05")], []), _summary([_node("a")], [])).findings
    assert [(f.kind, f.regression, f.detail) for f in found] == [("driver-changed", False, "driver 550.127.05 -> 580.159.04")]


def _patch(api: kr8s.Api, node: str, body: dict, subresource: str | None = None) -> None:
    from kr8s.objects import Node

    Node.get(node, api=api).patch(body, subresource=subresource)


@pytest.fixture
def degraded_later(sim_api: kr8s.Api):
    """Degrade the upgrade-gate scenario's nodes when asked; restore them afterwards."""
    def degrade() -> None:
        _patch(sim_api, "ug-gpu-1", {"status": {"allocatable": {"nvidia.com/gpu": "0"}}}, "status")
        _patch(sim_api, "ug-gpu-2", {"metadata": {"labels": {
            "nvidia.com/cuda.driver-version.full": "570.86.15", "nvidia.com/cuda.driver.major": "570",
            "nvidia.com/cuda.driver.minor": "86", "nvidia.com/cuda.driver.rev": "15"}}})
        _patch(sim_api, "ug-gpu-3", {"metadata": {"labels": {scenario.SCENARIO_LABEL: "upgrade-gate-gone"}}})

    yield degrade
    _patch(sim_api, "ug-gpu-1", {"status": {"allocatable": {"nvidia.com/gpu": "8"}}}, "status")
    _patch(sim_api, "ug-gpu-2", {"metadata": {"labels": {
        "nvidia.com/cuda.driver-version.full": "580.159.04", "nvidia.com/cuda.driver.major": "580",
        "nvidia.com/cuda.driver.minor": "159", "nvidia.com/cuda.driver.rev": "04"}}})
    _patch(sim_api, "ug-gpu-3", {"metadata": {"labels": {scenario.SCENARIO_LABEL: "upgrade-gate"}}})


def test_a_degraded_cluster_fails_the_gate_with_its_regressions(run_suite, degraded_later, tmp_path: Path) -> None:
    import yaml

    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(scenario.load(Path(__file__).parent / "data" / "scenarios" / "upgrade-gate.yaml")
                                      .profile.model_dump(mode="json")))
    code, healthy, out, report_dir = run_suite("upgrade-gate", f"--profile={profile}", "--gate=smoke")
    assert code == 0, out
    kept = tmp_path / "baseline.json"
    kept.write_text((report_dir / "summary.json").read_text())

    degraded_later()
    code, summary, out, _ = run_suite("upgrade-gate", f"--profile={profile}", "--gate=smoke", f"--baseline={kept}")
    assert code == 1, out
    regressions = {(r["kind"], r["node"]) for r in summary["baseline"]["regressions"]}
    assert regressions == {("allocatable-dropped", "ug-gpu-1"), ("check-regressed", "ug-gpu-1"),
                           ("driver-downgraded", "ug-gpu-2"), ("driver-drift", None), ("node-missing", "ug-gpu-3")}, out
    assert "REGRESSION driver-downgraded ug-gpu-2: driver 580.159.04 -> 570.86.15 (a downgrade)" in out
    assert "baseline " in out and "5 regression(s)" in out


def test_a_baseline_that_is_not_a_summary_is_a_usage_error(run_suite, tmp_path: Path) -> None:
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"schema": "gpu-conformance/summary/v1", "results": []}))
    code, _, out, _ = run_suite("upgrade-gate", f"--baseline={bad}", "-k", "capacity")
    assert code == 2 and "--baseline" in out and "not a summary.json of this gpu-conformance version" in out
    assert "Traceback" not in out


def test_a_run_that_could_not_read_its_nodes_is_not_compared() -> None:
    unknown = _summary([], [])
    unknown.cluster.gpu_nodes = None
    with pytest.raises(baseline.BaselineUndecided, match="this run could not read the cluster's nodes"):
        baseline.compare(_summary([_node("a")], []), unknown)

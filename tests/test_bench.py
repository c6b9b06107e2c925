"""gpu_conformance.sim.bench: the pytest floor (trivial results through the suite's reporters) and the table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from gpu_conformance.sim import bench


def test_the_pytest_floor_writes_every_result_through_the_suites_reporters(tmp_path: Path) -> None:
    rss = bench.floor(nodes=3, results=30, work=tmp_path)

    reports = tmp_path / "floor" / "reports"
    cases = ET.parse(reports / "junit.xml").getroot().iter("testcase")
    names = sorted(c.get("name", "") for c in cases)
    assert len(names) == 30
    assert names[0] == "test_result[GPU-FLOOR-000-1]" and "test_result[GPU-FLOOR-009-3]" in names
    assert len(list((reports / "allure-results").glob("*-result.json"))) == 30
    assert "GPU-FLOOR-009-3" in (reports / "report.html").read_text()
    assert rss > 10  # a Python process with pytest loaded, in MiB


def test_the_table_gives_the_floor_beside_the_suites_peak() -> None:
    row = bench.Row(nodes=10, baseline_s=1.5, baseline_requests=49, suite_s=48.0, suite_exit=0,
                    suite_totals={"passed": 225, "skipped": 30}, suite_requests=400, suite_rss_mb=94.4, floor_rss_mb=61.2)

    header, _, line = bench.table([row], "standard").splitlines()

    assert header.endswith("| suite peak RSS | pytest floor RSS |")
    assert line.endswith("| 94 MiB | 61 MiB |")
    assert "| 32.00 |" in line and "| 225 passed, 30 skipped |" in line

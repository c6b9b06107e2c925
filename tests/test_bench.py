"""gpu_conformance.sim.bench: a child's own peak RSS, the pytest floor (trivial results through the suite's
reporters) and the table."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpu_conformance.sim import bench, matrix


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
    no_summary = bench.table([dataclasses.replace(row, suite_exit=3, suite_totals={}, floor_rss_mb=None)], "standard")
    assert no_summary.splitlines()[2].endswith("| no summary (exit 3) | 400 | 40.0 | 49 | 94 MiB | n/a |")


def test_the_growth_is_read_with_the_baselines_growth_divided_out_and_subtracted() -> None:
    small = bench.Row(nodes=10, baseline_s=2.0, baseline_requests=49, suite_s=50.0, suite_exit=0,
                      suite_totals={"passed": 1}, suite_requests=1, suite_rss_mb=1.0, floor_rss_mb=1.0)
    large = dataclasses.replace(small, nodes=1000, baseline_s=200.0, suite_s=500.0)

    line = bench.table([small, large], "standard").splitlines()[-1]

    assert line.startswith("Suite time at 1000 nodes / at 10 nodes: 10.00x (kubectl baseline: 100.00x).")
    assert "divided out: 0.10x" in line
    assert "beyond the baseline's: 300.0 s against 48.0 s, 6.25x." in line


# A module that holds MiB of memory (its first argument), touched page by page.
BALLAST = "import sys\nheld = bytearray(int(sys.argv[1]) * 2**20)\nfor i in range(0, len(held), 4096):\n    held[i] = 1\n"


@pytest.mark.skipif(platform.system() != "Linux", reason="the peak is read from /proc")
def test_a_childs_peak_rss_is_its_own_not_its_parents(tmp_path: Path) -> None:
    (tmp_path / "ballast.py").write_text(BALLAST)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    parent = bytearray(300 * 2**20)  # this process: 300 MiB more while it starts its children
    for i in range(0, len(parent), 4096):
        parent[i] = 1

    small = bench.run_measured("ballast", ["1"], tmp_path / "small.log", env=env)
    large = bench.run_measured("ballast", ["200"], tmp_path / "large.log", env=env)
    usage = matrix.run_child([sys.executable, "-m", "ballast", "1"], tmp_path / "usage.log", 60, env=env)

    assert small.code == 0 and large.code == 0
    assert small.peak_rss_mib < 100  # a Python process holding 1 MiB
    assert 200 < large.peak_rss_mib < 300
    assert usage.peak_rss_mib > 300  # what the resource usage says for the same small child: the parent's peak

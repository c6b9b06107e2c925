"""summary.json and ai-conformance.json: published schemas, AI Conformance status rules, redaction."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from gpu_conformance import catalogue
from gpu_conformance.cli_tools import SCHEMAS, report_schema
from gpu_conformance.summary import ClusterInfo, Result, Supporting, ai_evidence, ai_status, build_summary

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_published_schema_is_the_one_the_suite_writes(name: str) -> None:
    published = json.loads((DOCS / f"{name}.schema.json").read_text())
    assert published == report_schema(name), f"regenerate: gpu-conformance schema {name} > docs/{name}.schema.json"


def _s(status: str, level: str = "MUST") -> Supporting:
    return Supporting(id="GPU-X-001", node="n", status=status, level=level, nodeid="t")  # type: ignore[arg-type]


@pytest.mark.parametrize(("statuses", "expected"), [
    ([("passed", "MUST"), ("failed", "MUST")], "failed"),
    ([("passed", "MUST"), ("failed", "SHOULD")], "passed"),  # a SHOULD failure is reported, not failing the requirement
    ([("passed", "MUST"), ("error", "MUST")], "error"),
    ([("skipped", "MUST")], "skipped"),
    ([], "skipped"),
    ([("passed", "MUST"), ("skipped", "MUST")], "passed"),
    ([("failed", "SHOULD"), ("skipped", "MUST")], "passed"),  # decided, nothing a MUST failed: not "skipped"
])
def test_an_ai_conformance_requirement_takes_its_status_from_its_results(statuses: list, expected: str) -> None:
    assert ai_status([_s(st, lvl) for st, lvl in statuses]) == expected


def test_every_mapped_result_supports_its_ai_requirement_once_and_secrets_are_redacted() -> None:
    cat = catalogue.load()
    results = [Result("a[n1]", "GPU-NODE-001", "n1", "failed", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4eHh4In0.c2lnbmF0dXJl", 0.1,
                      expected="x", observed="y"),
               Result("b[n1]", "GPU-MET-001", "n1", "passed", "", 0.2),
               Result("c[n1]", "GPU-NODE-002", "n1", "passed", "", 0.2)]  # maps to no AI requirement
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    doc = build_summary(results, cat, started=t0, suite_version="0", run_id="r", gate="standard", exitstatus=1,
                        cluster=ClusterInfo())
    assert "eyJ" not in doc.results[1].message and doc.results[1].id == "GPU-NODE-001"
    assert (doc.results[1].expected, doc.results[1].remediation) == ("x", cat["GPU-NODE-001"].remediation)
    assert doc.totals.model_dump() == {"passed": 2, "failed": 1, "error": 0, "skipped": 0}
    evidence = {r.id: r for r in ai_evidence(doc, cat).requirements}
    assert set(evidence) == set(cat.ai_conformance)
    assert evidence["driver_runtime_management"].status == "failed"
    assert evidence["accelerator_metrics"].status == "passed" and len(evidence["accelerator_metrics"].results) == 1
    assert evidence["gpu_sharing"].status == "skipped" and evidence["gpu_sharing"].results == []
    assert sum(len(r.results) for r in evidence.values()) == 2

"""Check outcomes, summary.json and the CNCF AI Conformance evidence file.

Outcomes: passed / failed (non-conformant) / error (undecided) / skipped (capability absent).
The file formats are pydantic models: `gpu-conformance schema summary` prints their JSON Schema.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpu_conformance.catalogue import Catalogue
from gpu_conformance.redaction import redact, redact_any

STATUSES = ("passed", "failed", "error", "skipped")
Status = Literal["passed", "failed", "error", "skipped"]
SUMMARY_SCHEMA = "gpu-conformance/summary/v2"
AI_SCHEMA = "gpu-conformance/ai-conformance/v1"
AI_FILE = "ai-conformance.json"
_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class Result:
    """One check result as the run recorded it."""

    nodeid: str
    id: str
    node: str | None
    status: str
    message: str
    duration_s: float
    evidence: str = ""  # what the check measured, recorded whatever the outcome
    expected: str | None = None  # of a failed check: the parts of its message
    observed: str | None = None


def _is_conformance_failure(exc: BaseException) -> bool:
    # AssertionError from plain asserts; pytest.fail() raises _pytest.outcomes.Failed.
    return isinstance(exc, AssertionError) or type(exc).__name__ == "Failed"


def failure_text(exc: BaseException) -> str:
    """The message of a failed check, without pytest's assertion-rewriting details."""
    text = str(getattr(exc, "msg", None) or exc)
    # Drop pytest's assertion rewriting details; the message itself names expected/observed.
    return text.split("\nassert ", 1)[0]


def outcome_of(report: Any, excinfo: Any) -> tuple[str | None, str]:
    """(status, message) of one test phase report, or (None, "") when the phase decides nothing."""
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    if report.passed:
        return ("passed", "") if report.when == "call" else (None, "")
    exc = excinfo.value if excinfo is not None else None
    if exc is None:
        return "error", str(report.longrepr)[:_MAX_MESSAGE]
    if _is_conformance_failure(exc) and report.when != "teardown":
        return "failed", failure_text(exc)[:_MAX_MESSAGE]
    return "error", f"{type(exc).__name__}: {failure_text(exc)[:_MAX_MESSAGE]}"


def totals(statuses: Iterable[str]) -> dict[str, int]:
    counts = Counter(statuses)
    return {s: counts.get(s, 0) for s in STATUSES}


# --- summary.json ------------------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Totals(_Doc):
    passed: int
    failed: int
    error: int
    skipped: int


class ResultEntry(_Doc):
    """One check on one node (or cluster-wide: node null)."""

    id: str = Field(description="requirement id, e.g. GPU-NODE-001")
    title: str
    area: str
    level: Literal["MUST", "SHOULD", ""]
    node: str | None
    status: Status
    expected: str | None = Field(description="what the requirement expects (failed results)")
    observed: str | None = Field(description="what the suite observed (failed results)")
    remediation: str | None = Field(description="how to fix it (failed results)")
    message: str = Field(description="the failure, error or skip message; empty on a pass")
    evidence: str = Field(description="what the check measured, whatever the outcome")
    duration_s: float
    ai_conformance: str | None = Field(description="the CNCF AI Conformance requirement this result supports")
    nodeid: str = Field(description="the pytest node id")


class NodeInfo(_Doc):
    """One selected GPU node as the run found it (the upgrade gate compares these)."""

    name: str
    group: str | None = Field(description="profile node group, else GPU product")
    gpus: int | None = Field(description="nvidia.com/gpu capacity")
    allocatable: int | None
    product: str | None
    driver: str | None
    cuda: str | None


class ClusterInfo(_Doc):
    """What the run found the cluster to be (also Allure's environment.properties)."""

    server: str | None = None
    kubernetes_version: str | None = None
    nodes: int | None = None
    gpu_nodes: int | None = None
    gpus: int | None = None
    gpu_models: list[str] = []
    driver_versions: list[str] = []
    cuda_versions: list[str] = []
    device_plugin: list[str] = []
    gpu_node_details: list[NodeInfo] = []


class Summary(_Doc):
    """summary.json: one entry per check result, totals, the cluster, the run."""

    schema_: str = Field(default=SUMMARY_SCHEMA, alias="schema", pattern="^gpu-conformance/summary/v2$")
    suite_version: str
    run_id: str
    gate: str
    started: dt.datetime
    finished: dt.datetime
    duration_s: float
    pytest_exit_status: int
    totals: Totals
    totals_by_level: dict[str, Totals]
    cluster: ClusterInfo
    run_start: dict[str, Any] = Field(description="found before the first check (reported, never failed)")
    results: list[ResultEntry]
    baseline: dict[str, Any] | None = Field(default=None, description="comparison with --baseline (gpu-conformance run)")


def entries(results: Iterable[Result], cat: Catalogue) -> list[ResultEntry]:
    """Report entries, sorted by requirement and node, with the catalogue's fields and secrets redacted."""
    out = []
    for r in sorted(results, key=lambda r: (r.id, r.node or "", r.nodeid)):
        req = cat.by_id.get(r.id)
        failed = r.status == "failed"
        out.append(ResultEntry(
            id=r.id, title=req.title if req else "", area=req.area if req else "", level=req.level if req else "",
            node=r.node, status=r.status,  # type: ignore[arg-type]
            expected=redact(r.expected) if failed and r.expected is not None else None,
            observed=redact(r.observed) if failed and r.observed is not None else None,
            remediation=req.remediation if failed and req else None,
            message=redact(r.message), evidence=redact(r.evidence), duration_s=r.duration_s,
            ai_conformance=req.ai_conformance if req else None, nodeid=r.nodeid))
    return out


def build_summary(results: list[Result], cat: Catalogue, *, started: dt.datetime, suite_version: str, run_id: str,
                  gate: str, exitstatus: int, cluster: ClusterInfo, run_start: dict[str, Any] | None = None) -> Summary:
    finished = dt.datetime.now(dt.timezone.utc)
    rows = entries(results, cat)
    levels = sorted({r.level for r in rows if r.level})
    return Summary(
        suite_version=suite_version, run_id=run_id, gate=gate, started=started, finished=finished,
        duration_s=round((finished - started).total_seconds(), 3), pytest_exit_status=exitstatus,
        totals=Totals(**totals(r.status for r in rows)),
        totals_by_level={lvl: Totals(**totals(r.status for r in rows if r.level == lvl)) for lvl in levels},
        cluster=cluster, run_start=redact_any(run_start or {}), results=rows)


def write_json(path: Path, doc: BaseModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised by pydantic directly: no dict of every result beside the text (25,000 at 1,000 nodes).
    path.write_text(doc.model_dump_json(indent=2, by_alias=True) + "\n", encoding="utf-8")


def load_summary(path: Path) -> Summary:
    """A summary.json written by this version (ValidationError or ValueError when it is not one)."""
    return Summary.model_validate_json(path.read_text())


# --- CNCF AI Conformance evidence ----------------------------------------------------------------


class Supporting(_Doc):
    id: str
    node: str | None
    status: Status
    level: str
    nodeid: str


class AiRequirement(_Doc):
    id: str = Field(description="the CNCF AI Conformance requirement, e.g. accelerator_metrics")
    description: str
    status: Status = Field(description="failed if any supporting MUST result failed; else error if any errored; "
                                       "else skipped if every result was skipped (or there is none); else passed")
    requirements: list[str] = Field(description="the catalogue requirements mapped to it")
    results: list[Supporting]


class AiEvidence(_Doc):
    schema_: str = Field(default=AI_SCHEMA, alias="schema", pattern="^gpu-conformance/ai-conformance/v1$")
    suite_version: str
    run_id: str
    requirements: list[AiRequirement]


def ai_status(results: list[Supporting]) -> Status:
    """An AI Conformance requirement's status from its supporting results."""
    statuses = {r.status for r in results}
    if any(r.status == "failed" and r.level == "MUST" for r in results):
        return "failed"
    if "error" in statuses:
        return "error"
    if statuses <= {"skipped"}:
        return "skipped"
    return "passed"  # passed, with any SHOULD failures listed among the results


def ai_evidence(summary: Summary, cat: Catalogue) -> AiEvidence:
    """For each AI Conformance id the catalogue maps to: its derived status and its supporting results."""
    reqs = []
    for ai_id, description in sorted(cat.ai_conformance.items()):
        mapped = sorted(r.id for r in cat.by_id.values() if r.ai_conformance == ai_id)
        support = [Supporting(id=r.id, node=r.node, status=r.status, level=r.level, nodeid=r.nodeid)
                   for r in summary.results if r.ai_conformance == ai_id]
        reqs.append(AiRequirement(id=ai_id, description=description, status=ai_status(support),
                                  requirements=mapped, results=support))
    return AiEvidence(suite_version=summary.suite_version, run_id=summary.run_id, requirements=reqs)

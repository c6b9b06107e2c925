"""Check outcomes and summary.json: passed / failed (non-conformant) / error (undecided) / skipped."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpu_conformance.catalogue import Catalogue

STATUSES = ("passed", "failed", "error", "skipped")
_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class Result:
    """One check result for summary.json."""

    nodeid: str
    id: str
    node: str | None
    status: str
    message: str
    duration_s: float
    evidence: str = ""  # what the check measured, recorded whatever the outcome


def _is_conformance_failure(exc: BaseException) -> bool:
    # AssertionError from plain asserts; pytest.fail() raises _pytest.outcomes.Failed.
    return isinstance(exc, AssertionError) or type(exc).__name__ == "Failed"


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc)
    # Drop pytest's assertion rewriting details; the message itself names expected/observed.
    text = text.split("\nassert ", 1)[0]
    return text[:_MAX_MESSAGE]


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
        return "failed", _message(exc)
    return "error", f"{type(exc).__name__}: {_message(exc)}"


def totals(results: list[Result]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {s: counts.get(s, 0) for s in STATUSES}


def write_summary(path: Path, results: list[Result], cat: Catalogue, *, started: dt.datetime,
                  suite_version: str, exitstatus: int, run_start: dict[str, Any] | None = None) -> None:
    """Write summary.json: one entry per check result plus totals, and what the run found at its start."""
    entries = []
    for r in sorted(results, key=lambda r: (r.id, r.node or "", r.nodeid)):
        req = cat.by_id.get(r.id)
        entry = asdict(r)
        entry.update({"title": req.title if req else "", "level": req.level if req else ""})
        entries.append(entry)
    doc = {
        "schema": "gpu-conformance/summary/v1",
        "suite_version": suite_version,
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "pytest_exit_status": exitstatus,
        "totals": totals(results),
        "run_start": run_start or {},
        "results": entries,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")

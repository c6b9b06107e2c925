"""The detection matrix: the whole suite on every bundled scenario, compared with what each
scenario declares it must break (expect_failures / expect_errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpu_conformance import catalogue
from gpu_conformance.errors import SimError
from gpu_conformance.sim import scenario as scenarios
from gpu_conformance.sim.scenario import SCENARIO_LABEL, Scenario

README_START = "<!-- detection-matrix:start -->"
README_END = "<!-- detection-matrix:end -->"


def result_key(result: Mapping[str, Any]) -> str:
    """`REQ-ID@node` for per-node results, `REQ-ID` for cluster-level ones."""
    return f"{result['id']}@{result['node']}" if result.get("node") else str(result["id"])


@dataclass(frozen=True)
class Verdict:
    """How one scenario's run compares with its declared expectations."""

    scenario: str
    statuses: dict[str, str]  # result key -> passed/failed/error/skipped
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def evaluate(sc: Scenario, summary: Mapping[str, Any]) -> Verdict:
    """Exactly the declared failures and errors, and nothing else failing or erroring."""
    statuses = {result_key(r): str(r["status"]) for r in summary.get("results", [])}
    messages = {result_key(r): str(r.get("message", ""))[:300] for r in summary.get("results", [])}
    problems = []
    for wanted, status in ((sc.expect_failures, "failed"), (sc.expect_errors, "error")):
        for key in wanted:
            if statuses.get(key) != status:
                problems.append(f"{key}: expected {status}, observed {statuses.get(key, 'no result')} {messages.get(key, '')}")
    declared = set(sc.expect_failures) | set(sc.expect_errors)
    for key, status in sorted(statuses.items()):
        if status in ("failed", "error") and key not in declared:
            problems.append(f"{key}: unexpected {status}: {messages[key]}")
    if not statuses:
        problems.append("no results (the run did not complete)")
    return Verdict(sc.name, statuses, tuple(problems))


def run_scenario(kubeconfig: Path, sc: Scenario, work: Path, extra: Sequence[str] = ()) -> tuple[int, dict[str, Any], str]:
    """`gpu-conformance run` on one scenario's nodes with its profile; (exit code, summary, output)."""
    work.mkdir(parents=True, exist_ok=True)
    profile = work / "profile.yaml"
    profile.write_text(yaml.safe_dump(sc.profile.model_dump(mode="json")))
    report_dir = work / "reports"
    cmd = [sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={kubeconfig}", f"--report-dir={report_dir}",
           f"--profile={profile}", f"--gpu-node-selector={SCENARIO_LABEL}={sc.name}", *sc.suite_args, *extra]
    run = run_child(cmd, work / "suite.log", timeout=900)
    path = report_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    return run.code, summary, run.output


@dataclass(frozen=True)
class ChildRun:
    code: int
    output: str  # stdout and stderr, interleaved
    # The resource usage's maxrss: the largest of the child and its waited-for children, and on Linux at least
    # this process's own peak when it started the child (see gpu_conformance.sim.peak for the child's alone).
    peak_rss_mib: float


# An interrupted child gets SIGTERM (the suite then deletes what it made) and this long before SIGKILL.
CHILD_GRACE_S = 60.0


def run_child(cmd: Sequence[str], log: Path, timeout: float, *, own_session: bool = False,
              env: Mapping[str, str] | None = None) -> ChildRun:
    """Run `cmd` (a `gpu-conformance run`), its output to `log`. Past `timeout`, or when this thread is
    interrupted (Ctrl-C, SIGTERM), the child gets SIGTERM and cleans up before it ends. `own_session`: a
    terminal's Ctrl-C reaches only this process, which passes it on once (else the child gets it too).
    `env`: the child's environment (default: this process's)."""
    with log.open("w") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=own_session,
                                env=None if env is None else dict(env))
        timer = threading.Timer(timeout, proc.terminate)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.terminate()
            try:
                proc.wait(CHILD_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return ChildRun(proc.returncode, log.read_text(errors="replace"), usage.ru_maxrss / 1024)


def _cell(req_id: str, verdict: Verdict, sc: Scenario) -> str:
    mine = {k: s for k, s in verdict.statuses.items() if k.split("@")[0] == req_id}
    declared = set(sc.expect_failures) | set(sc.expect_errors)
    bad = sorted(k for k, s in mine.items() if s in ("failed", "error"))
    missed = sorted(k for k in declared if k.split("@")[0] == req_id and k not in bad)
    if missed:
        return "MISSED " + ", ".join(k.partition("@")[2] or "cluster" for k in missed)
    if bad:
        nodes = ", ".join(k.partition("@")[2] or "cluster" for k in bad)
        label = "FAIL" if all(mine[k] == "failed" for k in bad) else "ERROR"
        return f"**{label}** {nodes}" if all(k in declared for k in bad) else f"UNEXPECTED {label} {nodes}"
    if not mine:
        return "-"
    return "pass" if any(s == "passed" for s in mine.values()) else "skip"


def table(results: Sequence[tuple[Scenario, Verdict]]) -> str:
    """A markdown table: requirements x scenarios."""
    cat = catalogue.load()
    head = "| requirement | " + " | ".join(sc.name for sc, _ in results) + " |"
    rule = "|---|" + "---|" * len(results)
    rows = [f"| {rid} {cat[rid].title} | " + " | ".join(_cell(rid, v, sc) for sc, v in results) + " |"
            for rid in sorted(cat.by_id)]
    detected = sum(len(sc.expect_failures) + len(sc.expect_errors) for sc, v in results)
    missed = sum(1 for _, v in results for p in v.problems if "expected" in p and "unexpected" not in p)
    false = sum(1 for _, v in results for p in v.problems if "unexpected" in p)
    foot = (f"\nDeclared failures and errors detected: {detected - missed}/{detected}; "
            f"unexpected failures or errors: {false}; scenarios matching their declaration: "
            f"{sum(v.ok for _, v in results)}/{len(results)}.")
    return "\n".join([head, rule, *rows]) + "\n" + foot


def write_section(readme: Path, begin: str, end: str, text: str) -> None:
    """Replace what stands between two marker lines of the README (a generated table)."""
    doc = readme.read_text()
    if begin not in doc or end not in doc:
        raise SimError(f"{readme}: no {begin} ... {end} section to replace")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def write_readme(readme: Path, text: str) -> None:
    """Replace the matrix between its markers in the README."""
    write_section(readme, README_START, README_END, text)


def main(kubeconfig: Path | None, jobs: int, readme: Path | None) -> int:
    """Run every bundled scenario (on a fresh simulated cluster unless one is given), print the matrix."""
    from gpu_conformance.sim.control_plane import SimCluster

    all_scenarios = [scenarios.load(scenarios.resolve(n)) for n in scenarios.bundled()]
    all_scenarios.sort(key=lambda s: (s.name != "healthy", s.name))
    with tempfile.TemporaryDirectory(prefix="gc-matrix-") as tmp:
        sim = None
        if kubeconfig is None:
            sim = SimCluster(Path(tmp) / "sim")
            state = sim.up(all_scenarios)
            kubeconfig = state.kubeconfig
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                runs = list(pool.map(lambda sc: run_scenario(kubeconfig, sc, Path(tmp) / sc.name), all_scenarios))
        finally:
            if sim is not None:
                sim.down(quiet=True)
    results = [(sc, evaluate(sc, summary)) for sc, (_, summary, _) in zip(all_scenarios, runs, strict=True)]
    text = table(results)
    print(text)
    for (sc, verdict), (code, summary, output) in zip(results, runs, strict=True):
        for problem in verdict.problems:
            print(f"  {sc.name}: {problem}", file=sys.stderr)
        if not summary:
            tail = "\n    ".join(output.strip().splitlines()[-3:])
            print(f"  {sc.name}: the run exited {code}:\n    {tail}", file=sys.stderr)
    if readme is not None:
        write_readme(readme, text)
        print(f"written to {readme}", file=sys.stderr)
    return 0 if all(v.ok for _, v in results) else 1

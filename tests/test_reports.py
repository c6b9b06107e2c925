"""The reports of one failing run agree with each other, and render in a browser the way they read.

One run of the suite on a fault scenario (failures, errors, passes and skips) writes every report;
the cross-check compares summary.json, junit.xml, report.html's data, allure-results/ and
ai-conformance.json result by result. The browser checks render the Allure report (`allure generate`,
the npm `allure-commandline` pinned in package.json) and report.html in headless Chromium and read the
counts and a failed requirement's evidence off the rendered pages. Missing tools fail the browser checks
with the install hint (`./dev setup`); GPU_CONFORMANCE_SKIP_BROWSER=1 skips them on purpose.
"""

from __future__ import annotations

import functools
import html
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import browser
import pytest
from browser import Element, squash
from filelock import FileLock

from gpu_conformance import catalogue
from gpu_conformance.sim import matrix, scenario

# Failures and errors on one node, passes on its healthy twin, and skipped checks: every outcome.
SCENARIO = "fault-driver-not-loaded"
STATUSES = ("passed", "failed", "error", "skipped")
# Our outcome -> the outcome pytest-html shows, and the Allure status ("broken": the test itself could not decide).
HTML_OUTCOME = {"passed": "Passed", "failed": "Failed", "error": "Error", "skipped": "Skipped"}
ALLURE_STATUS = {"passed": "passed", "failed": "failed", "error": "broken", "skipped": "skipped"}
JUNIT_COUNT = {"failed": "failures", "error": "errors", "skipped": "skipped"}
AI_SCHEMA = "gpu-conformance/ai-conformance/v1"
ALLURE_GENERATE_TIMEOUT_S = 300  # a cold JVM on a loaded 2-core machine; about 15 s when idle

Key = tuple[str, str]  # (requirement id, node or "" for a cluster-level check): one result each


@dataclass(frozen=True)
class FaultRun:
    """`gpu-conformance run` on the fault scenario: exit code, output and the report dir it wrote."""

    code: int
    output: str
    report_dir: Path

    @functools.cached_property
    def summary(self) -> dict[str, Any]:
        path = self.report_dir / "summary.json"
        assert path.is_file(), f"the run wrote no {path}; exit {self.code}, output tail:\n{self.output[-3000:]}"
        return json.loads(path.read_text())

    @property
    def results(self) -> list[dict[str, Any]]:
        return list(self.summary["results"])

    def by_key(self) -> dict[Key, dict[str, Any]]:
        results = self.results
        keyed = {key_of(r["id"], r["node"]): r for r in results}
        assert len(keyed) == len(results), f"summary.json has two results for one (requirement, node): {results}"
        return keyed

    @functools.cached_property
    def nodes(self) -> set[str]:
        """The nodes the run's per-node results are about."""
        return {r["node"] for r in self.results if r["node"]}

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "failed"]


def key_of(req_id: str, node: str | None) -> Key:
    return (req_id, node or "")


@pytest.fixture(scope="module")
def fault_run(sim_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> FaultRun:
    """The one run of this module, shared by the xdist workers of the session (the first one runs it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # the session's dir, above each worker's own
    work = shared / f"reports-{SCENARIO}"
    done = shared / f"reports-{SCENARIO}.json"
    with FileLock(str(shared / f"reports-{SCENARIO}.lock")):
        if not done.is_file():
            sc = scenario.load(scenario.resolve(SCENARIO))
            code, _, output = matrix.run_scenario(sim_kubeconfig, sc, work)
            done.write_text(json.dumps({"code": code, "output": output}))
    recorded = json.loads(done.read_text())
    return FaultRun(int(recorded["code"]), str(recorded["output"]), work / "reports")


# --- reading each report -------------------------------------------------------------------------


@dataclass(frozen=True)
class JunitCase:
    name: str
    status: str  # passed / failed / error / skipped
    message: str  # the failure's (or error's, or skip's) message attribute
    text: str  # its body
    properties: dict[str, str]


def junit(path: Path) -> tuple[dict[str, int], dict[Key, JunitCase]]:
    """junit.xml: the testsuite's counts, and its test cases by (requirement, node) property."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    assert len(suites) == 1, f"{path}: expected one <testsuite>, found {len(suites)}"
    counts = {k: int(suites[0].get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    cases: dict[Key, JunitCase] = {}
    for case in suites[0].iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        status, message, text = "passed", "", ""
        for tag, st in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                status, message, text = st, el.get("message", ""), el.text or ""
                break
        name = f"{case.get('classname')}::{case.get('name')}"
        assert "requirement" in props, f"{path}: test case {name} has no requirement property: {props}"
        key = key_of(props["requirement"], props.get("node"))
        assert key not in cases, f"{path}: two test cases for {key}: {cases[key].name} and {name}"
        cases[key] = JunitCase(name, status, message, text, props)
    return counts, cases


@dataclass(frozen=True)
class HtmlRow:
    test_id: str
    outcome: str  # as pytest-html shows it: Passed, Failed, Error, Skipped, ...
    cells: dict[str, str]  # column header -> the cell's text


def html_rows(path: Path) -> list[HtmlRow]:
    """report.html's results as its embedded data holds them (pytest-html 4: the data-jsonblob attribute)."""
    page = path.read_text()
    blob = re.search(r'data-jsonblob="([^"]*)"', page)
    assert blob, f"{path}: no data-jsonblob attribute (not a pytest-html 4 report?)"
    data = json.loads(html.unescape(blob.group(1)))
    headers = html_headers(browser.parse(page))
    rows = []
    for test_id, entries in data["tests"].items():
        for entry in entries:
            cells = [td for td in browser.parse("<table><tr>" + "".join(entry["resultsTableRow"]) + "</tr></table>")
                     .find_all("td")]
            assert len(cells) == len(headers), f"{path}: {test_id} has {len(cells)} cells for headers {headers}"
            rows.append(HtmlRow(test_id, entry["result"], dict(zip(headers, (c.text() for c in cells), strict=True))))
    return rows


def html_headers(page: Element) -> list[str]:
    """The results table's column headers."""
    head = page.find(id="results-table-head")
    assert head is not None, "report.html has no results table head"
    return [th.text() for th in head.find_all("th")]


def allure_results(results_dir: Path) -> list[dict[str, Any]]:
    files = sorted(results_dir.glob("*-result.json"))
    assert files, f"{results_dir}: no *-result.json"
    return [json.loads(f.read_text()) for f in files]


def labels(result: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in result.get("labels", []):
        out.setdefault(label["name"], []).append(label["value"])
    return out


def allure_key(result: dict[str, Any], nodes: set[str]) -> Key:
    """(requirement id, node) of an Allure result: its tag label, and its story label when that is one of
    the run's `nodes` (a cluster-level check's story names no node, e.g. "cluster-wide")."""
    lab = labels(result)
    req = [t for t in lab.get("tag", []) if re.fullmatch(r"GPU-[A-Z]+-\d{3}", t)]
    assert len(req) == 1, f"Allure result {result.get('fullName')} has no single requirement-id tag: {lab}"
    stories = lab.get("story", [])
    assert len(stories) <= 1, f"Allure result {result.get('fullName')} has several stories: {stories}"
    return key_of(req[0], stories[0] if stories and stories[0] in nodes else None)


def totals_of(statuses: list[str]) -> dict[str, int]:
    counts = Counter(statuses)
    return {s: counts.get(s, 0) for s in STATUSES}


# --- the cross-check -----------------------------------------------------------------------------


def test_the_fault_run_has_every_outcome_and_writes_every_report(fault_run: FaultRun) -> None:
    assert fault_run.code == 1, f"expected exit 1 (conformance failure), got {fault_run.code}:\n{fault_run.output[-3000:]}"
    crash = fault_run.output.find("INTERNALERROR")
    assert crash < 0, f"the run crashed, so its reports are partial:\n{fault_run.output[crash:][-3000:]}"
    verdict = matrix.evaluate(scenario.load(scenario.resolve(SCENARIO)), fault_run.summary)
    assert verdict.ok, "the run did not detect what the scenario declares:\n" + "\n".join(verdict.problems)
    totals = fault_run.summary["totals"]
    assert all(totals[s] > 0 for s in STATUSES), f"{SCENARIO} should give every outcome at least once: {totals}"
    for name in ("summary.json", "ai-conformance.json", "junit.xml", "report.html", "allure-results/environment.properties"):
        assert (fault_run.report_dir / name).is_file(), f"{name} missing from {fault_run.report_dir}"


def test_summary_totals_match_its_results(fault_run: FaultRun) -> None:
    summary = fault_run.summary
    assert summary["totals"] == totals_of([r["status"] for r in summary["results"]])
    by_level = summary.get("totals_by_level")
    assert by_level is not None, "summary.json has no totals_by_level"
    levels = {r["id"]: r["level"] for r in summary["results"]}
    for level in ("MUST", "SHOULD"):
        expected = totals_of([r["status"] for r in summary["results"] if levels[r["id"]] == level])
        got = by_level.get(level, totals_of([]))  # a level no result has may be left out
        assert got == expected, f"totals_by_level[{level}] {got} != counted from the results {expected}"


def test_junit_agrees_with_summary(fault_run: FaultRun) -> None:
    totals = fault_run.summary["totals"]
    counts, cases = junit(fault_run.report_dir / "junit.xml")
    results = fault_run.by_key()
    assert set(cases) == set(results), (f"only in junit.xml: {sorted(set(cases) - set(results))}; "
                                        f"only in summary.json: {sorted(set(results) - set(cases))}")
    wrong = {k: (cases[k].status, r["status"]) for k, r in results.items() if cases[k].status != r["status"]}
    assert not wrong, f"(junit.xml, summary.json) statuses differ: {wrong}"
    expected = {"tests": sum(totals.values()), **{JUNIT_COUNT[s]: totals[s] for s in JUNIT_COUNT}}
    assert counts == expected, f"junit.xml counts {counts} != summary.json totals {totals} (as JUnit counts {expected})"
    for r in fault_run.failed():
        case = cases[key_of(r["id"], r["node"])]
        assert r["id"] in case.message + case.text, f"{case.name}: the JUnit failure does not name {r['id']}"
        assert r.get("remediation"), f"summary.json result {r['id']}@{r['node']} has no remediation"
        assert squash(r["remediation"]) in squash(case.message), (
            f"{case.name}: the JUnit failure message is not the remediation:\n  message: {case.message!r}\n"
            f"  remediation: {r['remediation']!r}")


def test_html_data_agrees_with_summary(fault_run: FaultRun) -> None:
    totals = fault_run.summary["totals"]
    rows = html_rows(fault_run.report_dir / "report.html")
    by_id = {row.test_id: row for row in rows}
    assert len(by_id) == len(rows), f"report.html has more than one row for a test: {Counter(r.test_id for r in rows)}"
    results = {r["nodeid"]: r for r in fault_run.results}
    assert set(by_id) == set(results), f"report.html tests differ from summary.json: {set(by_id) ^ set(results)}"
    wrong = {t: (by_id[t].outcome, r["status"]) for t, r in results.items() if by_id[t].outcome != HTML_OUTCOME[r["status"]]}
    assert not wrong, f"(report.html outcome, summary.json status) differ: {wrong}"
    shown = Counter(row.outcome for row in rows)
    expected = {HTML_OUTCOME[s]: n for s, n in totals.items() if n}
    assert dict(shown) == expected, f"report.html rows per outcome {dict(shown)} != summary.json totals {totals}"
    for r in fault_run.failed():
        row = by_id[r["nodeid"]]
        assert row.cells.get("Requirement") == r["id"], f"{r['nodeid']}: Requirement cell {row.cells}"
        assert row.cells.get("Node") == r["node"], f"{r['nodeid']}: Node cell {row.cells}"
        assert squash(r["remediation"]) in row.cells.get("Remediation", ""), f"{r['nodeid']}: Remediation cell {row.cells}"


def test_allure_results_agree_with_summary(fault_run: FaultRun) -> None:
    results = fault_run.by_key()
    allure = allure_results(fault_run.report_dir / "allure-results")
    keyed: dict[Key, dict[str, Any]] = {}
    for res in allure:
        key = allure_key(res, fault_run.nodes)
        assert key not in keyed, f"two Allure results for {key}: {keyed[key]['fullName']} and {res['fullName']}"
        keyed[key] = res
    assert set(keyed) == set(results), (f"only in allure-results: {sorted(set(keyed) - set(results))}; "
                                        f"only in summary.json: {sorted(set(results) - set(keyed))}")
    wrong = {k: (keyed[k]["status"], r["status"]) for k, r in results.items() if keyed[k]["status"] != ALLURE_STATUS[r["status"]]}
    assert not wrong, f"(Allure status, summary.json status) disagree: {wrong}"
    cat = catalogue.load()
    for key, r in results.items():
        req, lab = cat[r["id"]], labels(keyed[key])
        expected = {"epic": [req.area], "feature": [f"{req.id} {req.title}"],
                    "severity": ["critical" if req.level == "MUST" else "normal"]}
        got = {name: lab.get(name) for name in expected}
        assert got == expected, f"Allure labels of {key}: {got} != {expected}"
        description = squash(keyed[key].get("description", ""))
        assert squash(req.statement) in description, f"Allure description of {key} lacks the statement: {description!r}"
        if r.get("evidence"):
            names = [a.get("name") for a in keyed[key].get("attachments", [])]
            assert "evidence" in names, f"Allure result {key} has evidence in summary.json but attachments {names}"
    for r in fault_run.failed():
        res = keyed[key_of(r["id"], r["node"])]
        assert res.get("attachments"), f"the failed Allure result {r['id']}@{r['node']} has no evidence attachments"
        message = res.get("statusDetails", {}).get("message", "")
        assert r["id"] in message and squash(r["remediation"]) in squash(message), (
            f"Allure result {r['id']}@{r['node']}: status message does not name the requirement and remediation: {message!r}")


def test_ai_conformance_evidence_agrees_with_summary(fault_run: FaultRun) -> None:
    doc = json.loads((fault_run.report_dir / "ai-conformance.json").read_text())
    assert doc.get("schema") == AI_SCHEMA
    cat = catalogue.load()
    listed: dict[tuple[str, str, str], tuple[str, str]] = {}  # (ai id, requirement, node) -> (status, nodeid)
    derived: dict[str, str] = {}
    for entry in doc["requirements"]:
        assert entry["id"] in cat.ai_conformance, f"unknown AI-conformance id {entry['id']!r}"
        derived[entry["id"]] = entry["status"]
        for sup in entry["results"]:
            k = (entry["id"], sup["id"], sup["node"] or "")
            assert k not in listed, f"{k} listed twice in ai-conformance.json"
            listed[k] = (sup["status"], sup["nodeid"])
    expected = {(cat[r["id"]].ai_conformance, r["id"], r["node"] or ""): (r["status"], r["nodeid"])
                for r in fault_run.results if cat[r["id"]].ai_conformance}
    assert listed == expected, (f"ai-conformance.json supporting results differ from summary.json:\n"
                                f"  only there: {sorted(set(listed.items()) - set(expected.items()))}\n"
                                f"  only in summary.json: {sorted(set(expected.items()) - set(listed.items()))}")
    for ai_id in {k[0] for k in expected}:
        statuses = {s for (a, _, _), (s, _) in expected.items() if a == ai_id}
        assert ai_id in derived, f"ai-conformance.json leaves out {ai_id}, which results support"
        if "failed" in statuses:
            assert derived[ai_id] == "failed", f"{ai_id}: a supporting result failed, derived status {derived[ai_id]}"
        if derived[ai_id] == "passed":
            assert statuses <= {"passed", "skipped"}, f"{ai_id} passed with supporting statuses {statuses}"


# --- the browser checks --------------------------------------------------------------------------


def test_no_credential_of_the_kubeconfig_reaches_a_report(fault_run: FaultRun, sim_kubeconfig: Path) -> None:
    import base64

    import yaml

    user = yaml.safe_load(sim_kubeconfig.read_text())["users"][0]["user"]
    secrets = [v for k, v in user.items() if k in ("client-key-data", "client-certificate-data", "token") and v]
    key_pem = (base64.b64decode(user["client-key-data"]).decode() if "client-key-data" in user
               else (sim_kubeconfig.parent / user["client-key"]).read_text())
    secrets += [line for line in key_pem.splitlines() if len(line) >= 40]  # the private key itself
    assert secrets, "the simulated cluster's kubeconfig holds no credential to look for"
    leaked = [str(p.relative_to(fault_run.report_dir)) for p in sorted(fault_run.report_dir.rglob("*")) if p.is_file()
              if any(secret in p.read_text(errors="replace") for secret in secrets)]
    assert leaked == [], f"a kubeconfig credential appears in {leaked}"
    assert not any(secret in fault_run.output for secret in secrets)


def test_missing_browser_fails_with_the_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(browser.SKIP_ENV, raising=False)
    monkeypatch.setenv(browser.CHROMIUM_ENV, str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match=r"Chromium .*no-chromium.* not found.*run \./dev setup"):
        browser.require_tools()
    monkeypatch.setenv(browser.SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="GPU_CONFORMANCE_SKIP_BROWSER=1"):
        browser.require_tools()


def generate_allure(allure: Path, results: Path, out: Path) -> Path:
    """`allure generate` of `results` into `out` (the single-page app and its data/*.json)."""
    proc = subprocess.run([str(allure), "generate", "--clean", "-o", str(out), str(results)],
                          capture_output=True, text=True, timeout=ALLURE_GENERATE_TIMEOUT_S, check=False)
    assert proc.returncode == 0 and (out / "index.html").is_file(), f"allure generate failed:\n{proc.stdout}{proc.stderr}"
    return out


def _overview_ready(page: Element) -> bool:
    return page.find(cls="splash__title") is not None and bool(page.find_all(cls="bar__fill"))


def allure_overview_counts(page: Element) -> tuple[int, dict[str, int]]:
    """The rendered overview's test-case total and its per-status counts (the Suites widget's bars, summed)."""
    total = page.find(cls="splash__title")
    suites = page.find(cls="widget", data_id="suites")
    assert total is not None and suites is not None, f"no summary or Suites widget on the overview: {page.text()[:2000]}"
    rows = [row for row in suites.find_all(cls="table__row") if row.find(cls="bar") is not None]
    subtitle = suites.find(cls="widget__subtitle")
    items = f"{len(rows)} item{'s' if len(rows) != 1 else ''} total"
    assert subtitle is not None and subtitle.text() == items, (
        f"the Suites widget shows {len(rows)} rows of {subtitle.text() if subtitle else '?'}: its counts would be partial")
    counts = Counter[str]()
    for bar in suites.find_all(cls="bar__fill"):
        (status,) = (c.removeprefix("bar__fill_status_") for c in bar.classes if c.startswith("bar__fill_status_"))
        counts[status] += int(bar.text())
    return int(total.text()), dict(counts)


def _result_ready(page: Element) -> bool:
    return page.find(cls="test-result-overview") is not None and page.find(cls="test-result") is not None


def test_allure_fixture_stages_each_ended_with_a_status(fault_run: FaultRun) -> None:
    """pytest 9.1 gives every fixture an internal finalizer that allure-pytest opens as a tear-down stage and ends
    only after the container is written; the Allure report showed it as an 'unknown' tear-down under every check.
    Real tear-downs stay."""
    files = sorted((fault_run.report_dir / "allure-results").glob("*-container.json"))
    containers = [json.loads(f.read_text()) for f in files]
    assert containers, "allure-results/ has no fixture containers"
    stages = [(c["uuid"], when, s) for c in containers for when in ("befores", "afters") for s in c.get(when, [])]
    never_ended = [(uuid, when, s["name"]) for uuid, when, s in stages if "status" not in s]
    assert not never_ended, f"{len(never_ended)} fixture stage(s) without a status, e.g. {never_ended[:5]}"
    teardowns = {s["name"].split("::")[0] for _, when, s in stages if when == "afters"}
    assert "namespace_factory" in teardowns, f"the namespaces' tear-down is missing from Allure: {sorted(teardowns)}"


def test_allure_report_renders_counts_and_a_failure(fault_run: FaultRun, tmp_path: Path) -> None:
    tools = browser.require_tools()
    totals = fault_run.summary["totals"]
    results_dir = fault_run.report_dir / "allure-results"
    report = generate_allure(tools.allure, results_dir, tmp_path / "allure-report")
    r = fault_run.failed()[0]
    key = key_of(r["id"], r["node"])
    cases = [json.loads(p.read_text()) for p in sorted((report / "data" / "test-cases").glob("*.json"))]
    (case,) = [c for c in cases if c["status"] == "failed" and allure_key(c, fault_run.nodes) == key]
    (raw,) = [res for res in allure_results(results_dir)
              if res["status"] == "failed" and allure_key(res, fault_run.nodes) == key]
    with browser.serve(report) as base:
        overview = browser.render(tools.chromium, f"{base}/index.html", _overview_ready, what="the Allure overview")
        result_page = browser.render(tools.chromium, f"{base}/index.html#testresult/{case['uid']}", _result_ready,
                                     what=f"the Allure page of {r['id']} on {r['node']}")
    total, shown = allure_overview_counts(overview)
    expected = {ALLURE_STATUS[s]: n for s, n in totals.items() if n}
    assert (total, shown) == (sum(totals.values()), expected), (
        f"the Allure overview shows {total} test cases, by status {shown}; summary.json totals {totals}")
    env = overview.find(cls="widget", data_id="environment")
    assert env is not None and "There are no environment variables" not in env.text(), (
        f"the Allure overview shows no environment (environment.properties): {env.text() if env else None}")
    # The failed result's page: requirement id, node, remediation, and its evidence attachments.
    result = result_page.find(cls="test-result")
    assert result is not None
    text = result.text()
    for what, value in (("requirement id", r["id"]), ("node", r["node"]), ("remediation", squash(r["remediation"]))):
        assert value in text, f"the Allure page of {r['id']}@{r['node']} does not show its {what} {value!r}:\n{text[:3000]}"
    attached = {squash(a["name"]) for a in raw.get("attachments", [])}
    listed = {el.text() for el in result.find_all(cls="attachment-row__name")}
    assert attached and attached <= listed, (
        f"the Allure page of {r['id']}@{r['node']} lists attachments {sorted(listed)}; the result has {sorted(attached)}")


def _html_ready(page: Element) -> bool:
    return bool(page.find_all("tbody", cls="results-table-row"))


def test_html_report_renders_counts_and_failures(fault_run: FaultRun) -> None:
    tools = browser.require_tools()
    totals = fault_run.summary["totals"]
    page = browser.render(tools.chromium, (fault_run.report_dir / "report.html").resolve().as_uri(), _html_ready,
                          what="report.html's results table")
    headers = html_headers(page)
    rows = [tb for tb in page.find_all("tbody", cls="results-table-row") if tb.find(cls="col-result") is not None]
    shown = Counter(cell.text() for tb in rows for cell in tb.find_all("td", cls="col-result"))
    expected = {HTML_OUTCOME[s]: n for s, n in totals.items() if n}
    assert dict(shown) == expected, f"report.html shows rows per outcome {dict(shown)}; summary.json totals {totals}"
    filters = _filter_counts(page)
    for status, n in totals.items():
        outcome = HTML_OUTCOME[status].lower()
        assert filters.get(outcome) == n, f"report.html's {outcome} filter shows {filters.get(outcome)}, summary.json {n}"
    by_test: dict[str, dict[str, str]] = {}
    for tb in rows:
        row = tb.find("tr", cls="collapsible")
        assert row is not None
        cells = [td.text() for td in row.find_all("td")]
        assert len(cells) == len(headers), f"a rendered row has {len(cells)} cells for headers {headers}"
        named = dict(zip(headers, cells, strict=True))
        # A setup or teardown error's row names its phase after the test's node id.
        by_test[re.sub(r"::(setup|teardown)$", "", named["Test"])] = named
    for r in fault_run.failed():
        shown_row = by_test.get(r["nodeid"])
        assert shown_row is not None, f"report.html shows no row for {r['nodeid']}"
        assert shown_row["Result"] == "Failed", shown_row
        for column, value in (("Requirement", r["id"]), ("Node", r["node"]), ("Remediation", squash(r["remediation"]))):
            assert value in shown_row.get(column, ""), (
                f"report.html row of {r['nodeid']}: {column} does not show {value!r}: {shown_row}")


def _filter_counts(page: Element) -> dict[str, int]:
    """The counts next to report.html's outcome filters ("2 Failed," ...), by outcome class."""
    counts: dict[str, int] = {}
    filters = page.find(cls="filters")
    assert filters is not None, "report.html has no outcome filters"
    for span in filters.find_all("span"):
        m = re.match(r"(\d+) ", span.text())
        if m and span.classes:
            counts[min(span.classes)] = int(m.group(1))
    return counts

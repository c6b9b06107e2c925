"""The pytest plugin, exercised through pytester: outcomes stay apart, markers are validated."""

import json

import pytest

OUTCOMES = '''
import pytest

@pytest.mark.requirement("GPU-NODE-001")
def test_pass():
    pass

@pytest.mark.requirement("GPU-NODE-002")
def test_fail():
    observed = 1
    assert observed == 2, "GPU-NODE-002 node n1: expected 2, observed 1"

@pytest.mark.requirement("GPU-NODE-003")
def test_error():
    raise RuntimeError("the API server went away")

@pytest.mark.requirement("GPU-NODE-004")
def test_skip():
    pytest.skip("dcgm-exporter not installed")

@pytest.fixture
def broken():
    raise ConnectionError("cannot list nodes")

@pytest.mark.requirement("GPU-WL-001")
def test_setup_error(broken):
    pass

@pytest.fixture
def no_gpu_nodes():
    pytest.fail("GPU-WL-001: expected at least one GPU node, observed 0", pytrace=False)

@pytest.mark.requirement("GPU-SMI-001")
def test_fixture_verdict(no_gpu_nodes):
    pass
'''

EXPECTED = {
    "test_pass": ("passed", ""),
    "test_fail": ("failed", "GPU-NODE-002 node n1: expected 2, observed 1"),
    "test_error": ("error", "RuntimeError: the API server went away"),
    "test_skip": ("skipped", "dcgm-exporter not installed"),
    "test_setup_error": ("error", "ConnectionError: cannot list nodes"),
    "test_fixture_verdict": ("failed", "GPU-WL-001: expected at least one GPU node, observed 0"),
}


def _statuses(summary: dict) -> dict[str, tuple[str, str]]:
    return {r["nodeid"].split("::")[1]: (r["status"], r["message"]) for r in summary["results"]}


@pytest.mark.parametrize("xdist", [False, True], ids=["single", "xdist"])
def test_failed_error_and_skipped_stay_apart(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(test_checks=OUTCOMES)
    summary_path = pytester.path / "summary.json"
    args = [f"--summary-json={summary_path}", "-p", "no:cacheprovider"] + (["-n", "2"] if xdist else [])
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    summary = json.loads(summary_path.read_text())
    assert _statuses(summary) == EXPECTED
    assert summary["totals"] == {"passed": 1, "failed": 2, "error": 2, "skipped": 1}
    titles = {r["nodeid"].split("::")[1]: (r["id"], r["title"], r["level"]) for r in summary["results"]}
    assert titles["test_pass"] == ("GPU-NODE-001", "GPU capacity and allocatable advertised", "MUST")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('@pytest.mark.requirement("GPU-XXX-999")\ndef test_x(): pass\n', "*unknown requirement id 'GPU-XXX-999'*"),
        ('@pytest.mark.requirement("GPU-NODE-001")\n@pytest.mark.requirement("GPU-WL-001")\ndef test_x(): pass\n',
         "*declares 2 requirement ids; exactly one is allowed*"),
        ('@pytest.mark.requirement("GPU-NODE-001")\ndef test_a(): pass\n@pytest.mark.requirement("GPU-NODE-001")\ndef test_b(): pass\n',
         "*requirement id GPU-NODE-001 is already verified by test_*::test_a*"),
    ],
    ids=["unknown-id", "two-ids-on-one-check", "one-id-on-two-checks"],
)
def test_bad_requirement_markers_fail_collection(pytester: pytest.Pytester, source: str, message: str) -> None:
    pytester.makepyfile("import pytest\n" + source)
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_every_suite_check_declares_exactly_one_known_requirement() -> None:
    import ast
    from pathlib import Path

    from gpu_conformance import catalogue

    cat = catalogue.load()
    seen = []
    for path in sorted((Path(__file__).parent.parent / "suites").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                ids = [d.args[0].value for d in node.decorator_list
                       if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "requirement"]
                assert len(ids) == 1 and ids[0] in cat, (path.name, node.name, ids)
                seen.append(ids[0])
    assert len(seen) == len(set(seen)) == len(cat.by_id)  # one check per requirement, none orphaned


def test_check_without_requirement_in_suites_fails_collection(tmp_path_factory: pytest.TempPathFactory) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    # A suites directory of its own: one written into the checkout's suites/ would be collected by
    # suite runs that other tests start at the same time.
    suites = tmp_path_factory.mktemp("checkout") / "suites"
    suites.mkdir()
    stray = suites / "test_zz_stray_for_collection_test.py"
    stray.write_text("def test_unmarked():\n    pass\n")
    env = {**os.environ, "GPU_CONFORMANCE_SUITES_DIR": str(suites)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(stray)],
                          capture_output=True, text=True, cwd=suites.parent, timeout=120, env=env)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "test_unmarked: declares no requirement id" in proc.stderr


def test_xdist_workers_share_the_controllers_run_id(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ids='''
import pytest
from gpu_conformance.plugin import session_of

@pytest.mark.parametrize("i", range(6))
def test_record(i, request):
    (request.config.rootpath / f"id-{i}.txt").write_text(session_of(request.config).run_id)
''')
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert result.ret == 0
    ids = {p.read_text() for p in pytester.path.glob("id-*.txt")}
    assert len(ids) == 1, ids


def test_a_teardown_error_after_a_skip_is_recorded_as_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_td='''
import pytest

@pytest.fixture
def leaky():
    yield
    raise RuntimeError("could not delete the namespace")

@pytest.mark.requirement("GPU-NODE-001")
def test_skipped(leaky):
    pytest.skip("capability absent")
''')
    import json

    summary = pytester.path / "summary.json"
    pytester.runpytest_subprocess(f"--summary-json={summary}", "-p", "no:cacheprovider")
    (result,) = json.loads(summary.read_text())["results"]
    assert result["status"] == "error" and "could not delete the namespace" in result["message"]


def test_allure_fixture_containers_list_each_test_once(pytester: pytest.Pytester) -> None:
    """The plugin's constant-time membership for Allure containers keeps their children as allure-pytest does:
    every test that used the fixture, once, in the order they ran."""
    pytester.makepyfile(test_many='''
import pytest

@pytest.fixture(scope="session")
def shared():
    return 1

@pytest.fixture
def per_test(shared, request):
    request.getfixturevalue("late")  # a fixture first asked for while the test runs

@pytest.fixture(scope="session")
def late():
    return 2

@pytest.mark.parametrize("i", range(5))
def test_uses(i, per_test):
    pass
''')
    results = pytester.path / "allure"
    assert pytester.runpytest_subprocess(f"--alluredir={results}", "-p", "no:cacheprovider").ret == 0
    tests = {t["uuid"]: t["name"] for f in results.glob("*-result.json") if (t := json.loads(f.read_text()))}
    containers = [json.loads(f.read_text()) for f in results.glob("*-container.json")]
    children = {c["befores"][0]["name"]: c.get("children", []) for c in containers if c.get("befores")}
    order = sorted(tests, key=lambda u: tests[u])
    assert children["shared"] == order
    assert children["late"] == order
    assert all(len(children_of) == 1 for name, children_of in children.items() if name == "per_test")

"""The performance benchmark: the suite on simulated clusters of growing size, beside a kubectl baseline.

For each size: a fresh simulated cluster of N healthy 8-GPU nodes; the baseline (the same per-node
vector-add pods, `kubectl apply` then `kubectl wait`); then `gpu-conformance run` with the chosen gate.
Measured: wall times, the ratio, the API requests each made (the API server's audit log records the
benchmark identity only), and the suite's peak memory (its process's own, see gpu_conformance.sim.peak). Beside it, the
pytest floor: the peak RSS of a pytest run with as many trivial results as the suite had and the same
reporters (JUnit, HTML, Allure), no cluster and no checks: what pytest and its reporters keep per result
alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpu_conformance.errors import SimError
from gpu_conformance.progress import say
from gpu_conformance.sim import binaries, matrix, peak
from gpu_conformance.sim.control_plane import SimCluster, audited_requests
from gpu_conformance.sim.scenario import SCENARIO_LABEL, NodeSpec, Scenario, Taint
from gpu_conformance.workloads import GPU_TOLERATION, render

GPUS_PER_NODE = 8
BASELINE_TIMEOUT_S = 1800
SUITE_TIMEOUT_S = 7200


def readme_markers(fanout: str) -> tuple[str, str]:
    """The README section each mode's table replaces (pod mode keeps the original markers)."""
    mode = "" if fanout == "pods" else f"-{fanout}"
    return f"<!-- benchmark{mode}:begin -->", f"<!-- benchmark{mode}:end -->"


@dataclass(frozen=True)
class Row:
    """One cluster size's measurements."""

    nodes: int
    baseline_s: float
    baseline_requests: int
    suite_s: float
    suite_exit: int
    suite_totals: dict[str, int]
    suite_requests: int
    suite_rss_mb: float
    floor_rss_mb: float | None

    @property
    def ratio(self) -> float:
        return self.suite_s / self.baseline_s if self.baseline_s else float("inf")


def scenario_of(nodes: int) -> Scenario:
    """N healthy, tainted 8x H100 nodes run by the GPU Operator."""
    return Scenario.model_validate({
        "name": f"bench-{nodes}",
        "description": f"{nodes} healthy 8x H100 nodes for the benchmark",
        "stack": {"flavour": "gpu-operator"},
        "profile": {"taints": {"required": True}, "metrics": {"required": True, "load_s": 6},
                    "groups": [{"name": "h100", "match_labels": {"pool": "h100"}, "gpu_count": GPUS_PER_NODE,
                                "product": "NVIDIA-H100-80GB-HBM3"}]},
        "nodes": [NodeSpec(name=f"b{nodes}-gpu", replicas=nodes, gpus=GPUS_PER_NODE, product="NVIDIA-H100-80GB-HBM3",
                           driver="580.159.04", cuda="13.0", labels={"pool": "h100"},
                           taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")]).model_dump()],
    })


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, timeout: float = 600) -> None:
    proc = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SimError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()[-500:]}")


def baseline(kubectl: Path, kubeconfig: Path, nodes: list[str], work: Path) -> float:
    """Seconds for kubectl to create one vector-add pod per node and see every one Succeeded."""
    namespace = "bench-kubectl-baseline"
    docs = [doc for node in nodes for doc in render("vector-add", namespace=namespace, node=node, run_id="bench",
                                                     tolerations=[dict(GPU_TOLERATION)])]
    manifest = work / "baseline.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    _kubectl(kubectl, kubeconfig, "create", "namespace", namespace)
    started = time.monotonic()
    _kubectl(kubectl, kubeconfig, "apply", "-f", str(manifest), timeout=BASELINE_TIMEOUT_S)
    _kubectl(kubectl, kubeconfig, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pods", "--all",
             "-n", namespace, f"--timeout={BASELINE_TIMEOUT_S}s", timeout=BASELINE_TIMEOUT_S + 60)
    took = time.monotonic() - started
    _kubectl(kubectl, kubeconfig, "delete", "namespace", namespace, "--wait=true", timeout=600)
    return took


def suite(kubeconfig: Path, sc: Scenario, gate: str, work: Path, extra: Sequence[str]) -> tuple[float, int, dict[str, int], float]:
    """(seconds, exit code, totals, peak RSS MiB) of one `gpu-conformance run`."""
    profile = work / "profile.yaml"
    profile.write_text(yaml.safe_dump(sc.profile.model_dump(mode="json")))
    report_dir = work / "reports"
    args = ["run", f"--kubeconfig={kubeconfig}", f"--profile={profile}", f"--gpu-node-selector={SCENARIO_LABEL}={sc.name}",
            f"--gate={gate}", f"--report-dir={report_dir}", *extra]
    started = time.monotonic()
    run = run_measured("gpu_conformance", args, work / "suite.log", own_session=True)
    took = time.monotonic() - started
    summary = report_dir / "summary.json"
    totals = json.loads(summary.read_text())["totals"] if summary.is_file() else {}
    return took, run.code, totals, run.peak_rss_mib


def run_measured(module: str, args: Sequence[str], log: Path, **options: Any) -> matrix.ChildRun:
    """`python -m module args` as a child (see matrix.run_child), its peak RSS its own (see sim.peak);
    where it could not write one (no /proc), the resource usage's, which counts this process's too."""
    out = log.with_suffix(".peak")
    cmd = [sys.executable, "-m", "gpu_conformance.sim.peak", str(out), module, *args]
    run = matrix.run_child(cmd, log, SUITE_TIMEOUT_S, **options)
    own = peak.read(out)
    return run if own is None else dataclasses.replace(run, peak_rss_mib=own)


# The floor's test file: RESULTS results, each named like a per-node check (requirement id, node).
FLOOR_TESTS = """\
import os

import pytest

NODES = int(os.environ["GC_FLOOR_NODES"])
RESULTS = int(os.environ["GC_FLOOR_RESULTS"])


@pytest.mark.parametrize("case", range(RESULTS), ids=lambda i: f"GPU-FLOOR-{i // NODES:03d}-{i % NODES + 1}")
def test_result(case):
    assert case >= 0
"""


def floor(nodes: int, results: int, work: Path) -> float:
    """Peak RSS (MiB) of pytest producing `results` trivial passed results with the suite's reporters."""
    from gpu_conformance.cli import report_args

    tests = work / "floor" / "test_floor.py"
    tests.parent.mkdir(parents=True, exist_ok=True)
    tests.write_text(FLOOR_TESTS)
    (tests.parent / "pytest.ini").write_text("[pytest]\n")
    args = [str(tests), f"--rootdir={tests.parent}", "-c", str(tests.parent / "pytest.ini"),
            "-p", "no:gpu_conformance", "-p", "no:cacheprovider", "-q", *report_args(tests.parent / "reports")]
    env = {**os.environ, "GC_FLOOR_NODES": str(max(1, nodes)), "GC_FLOOR_RESULTS": str(results)}
    run = run_measured("pytest", args, tests.parent / "pytest.log", env=env)
    if run.code != 0 or f"{results} passed" not in run.output:
        raise SimError(f"the pytest floor run ({results} results) did not pass (exit {run.code}): {run.output.strip()[-500:]}")
    return run.peak_rss_mib


def measure(nodes: int, gate: str, extra: Sequence[str], keep: Path | None = None) -> Row:
    """One size: a fresh simulated cluster, the kubectl baseline, then the suite."""
    kubectl = binaries.ensure_tool("kubectl")
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"gc-bench-{nodes}-", dir=keep))
    sim = SimCluster(work / "sim")
    sc = scenario_of(nodes)
    try:
        state = sim.up([sc])
        kubeconfig = state.state_dir / "bench.kubeconfig"
        names = [f"b{nodes}-gpu-{i}" for i in range(1, nodes + 1)]
        say(f"bench {nodes} nodes: kubectl baseline ({nodes} vector-add pods)")
        before = audited_requests(state.state_dir)
        base_s = baseline(kubectl, kubeconfig, names, work)
        base_requests = audited_requests(state.state_dir) - before
        say(f"bench {nodes} nodes: baseline {base_s:.1f}s; the suite ({gate} gate)")
        before = audited_requests(state.state_dir)
        suite_s, code, totals, rss = suite(kubeconfig, sc, gate, work, extra)
        requests = audited_requests(state.state_dir) - before
        say(f"bench {nodes} nodes: suite {suite_s:.1f}s (exit {code}, {totals}), {requests} requests, {rss:.0f} MiB")
        results = sum(totals.values())
        floor_rss = None  # no results (the suite wrote no summary): nothing to compare with
        if results:
            say(f"bench {nodes} nodes: the pytest floor ({results} trivial results, the same reporters)")
            floor_rss = floor(nodes, results, work)
            say(f"bench {nodes} nodes: pytest floor {floor_rss:.0f} MiB")
        return Row(nodes, base_s, base_requests, suite_s, code, totals, requests, rss, floor_rss)
    finally:
        if keep is None:
            sim.down(quiet=True)
            shutil.rmtree(work, ignore_errors=True)
        else:
            _down_keeping_logs(sim, work)


def _down_keeping_logs(sim: SimCluster, work: Path) -> None:
    """Stop the cluster and keep its processes' logs (the audit log among them) as work/sim-logs; the rest of
    its state (etcd's data, keys, kubeconfigs) goes."""
    sim.down(quiet=True, keep_logs=True)
    logs = sim.state_dir / "logs"
    if logs.is_dir():
        shutil.move(logs, work / "sim-logs")
    shutil.rmtree(sim.state_dir, ignore_errors=True)


def table(rows: Sequence[Row], gate: str, fanout: str = "pods") -> str:
    """The results as a Markdown table, with what produced them."""
    lines = [f"| GPU nodes (8 GPUs each) | kubectl baseline | suite, {gate} gate, fanout {fanout} | ratio | suite results | "
             "API requests (suite) | per node | API requests (kubectl) | suite peak RSS | pytest floor RSS |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        results = ", ".join(f"{v} {k}" for k, v in r.suite_totals.items() if v) or f"no summary (exit {r.suite_exit})"
        lines.append(f"| {r.nodes} | {r.baseline_s:.1f} s | {r.suite_s:.1f} s | {r.ratio:.2f} | {results} | "
                     f"{r.suite_requests} | {r.suite_requests / r.nodes:.1f} | {r.baseline_requests} | {r.suite_rss_mb:.0f} MiB | {_mib(r.floor_rss_mb)} |")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        lines.append("")
        lines.append(growth(first, last))
    return "\n".join(lines)


def growth(first: Row, last: Row) -> str:
    """The suite's growth from the smallest to the largest size, read two ways with the baseline's own growth
    taken out: divided out (a ratio of growths), and subtracted (the suite's time beyond the baseline's)."""
    suite, base = last.suite_s / first.suite_s, last.baseline_s / first.baseline_s
    beyond_first, beyond_last = first.suite_s - first.baseline_s, last.suite_s - last.baseline_s
    beyond = f"{beyond_last / beyond_first:.2f}x" if beyond_first > 0 else "n/a"
    return (f"Suite time at {last.nodes} nodes / at {first.nodes} nodes: {suite:.2f}x (kubectl baseline: {base:.2f}x). "
            f"The baseline's growth divided out: {suite / base:.2f}x; the suite's time beyond the baseline's: "
            f"{beyond_last:.1f} s against {beyond_first:.1f} s, {beyond}.")


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def machine() -> str:
    cpus = os.cpu_count() or 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0.0
    return f"{platform.machine()}, {cpus} CPU cores, {mem:.0f} GiB, Python {platform.python_version()}"


def write_readme(readme: Path, text: str, fanout: str = "pods") -> None:
    matrix.write_section(readme, *readme_markers(fanout), text)


def main(sizes: Sequence[int], gate: str, extra: Sequence[str], readme: Path | None, keep: Path | None,
         fanout: str = "pods") -> int:
    started = time.monotonic()
    rows = [measure(n, gate, [*extra, f"--fanout={fanout}"], keep) for n in sizes]
    text = table(rows, gate, fanout)
    cmd = f"gpu-conformance sim bench --nodes {','.join(map(str, sizes))} --gate {gate} --fanout {fanout}"
    produced = (f"Produced by `{cmd}` on {time.strftime('%Y-%m-%d')}: {machine()}; "
                f"{time.monotonic() - started:.0f} s in all.")
    print(text)
    print()
    print(produced)
    if readme is not None:
        write_readme(readme, f"{text}\n\n{produced}", fanout)
    return 0 if all(r.suite_exit == 0 for r in rows) else 1

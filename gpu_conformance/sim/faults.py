"""The fault matrix: what the gate does when its input is bad or the cluster misbehaves under it.

Each row is one fault and the outcome it must produce: the documented exit code, the one line that
says why, no traceback, and nothing of the run left behind (no namespace of the suite's that is not
being deleted). `gpu-conformance sim faults` runs every row against a simulated cluster of its own,
prints the table and can write it into the README.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import kr8s
import yaml

from gpu_conformance.progress import say
from gpu_conformance.sim import matrix
from gpu_conformance.sim.control_plane import SimCluster
from gpu_conformance.sim.faultproxy import Fault, FaultProxy
from gpu_conformance.sim.scenario import SCENARIO_LABEL, NodeSpec, Scenario, Taint
from gpu_conformance.waiting import WaitTimeout, wait_for
from gpu_conformance.workloads import MANAGED_BY, MANAGED_BY_LABEL

README_BEGIN = "<!-- fault-matrix:begin -->"
README_END = "<!-- fault-matrix:end -->"
SCENARIO = Scenario(
    name="fault-matrix", description="Two healthy tainted 8x H100 nodes for the fault matrix.",
    nodes=[NodeSpec(name=f"fm-gpu-{i}", gpus=8, taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")])
           for i in (1, 2)],
)
# The smoke gate (node facts, one vector-add per node group) keeps each row short; a workload that
# cannot start is given up after this long.
RUN_ARGS = ("--gate=smoke", "--workload-timeout=20")
TRACEBACK = "Traceback (most recent call last)"
BAD_PROFILE = "taints: {required: maybe}\n"


@dataclass(frozen=True)
class Observed:
    """One run under a fault: exit code, its output, what it left behind, the faults the proxy gave."""

    code: int | None
    output: str
    leftovers: tuple[str, ...] = ()
    injected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """The line that says why: the error line, else the verdict line."""
        lines = self.output.strip().splitlines()
        for prefix in ("gpu-conformance: error:", "== gpu-conformance", "gpu-conformance:"):
            found = [ln for ln in lines if ln.startswith(prefix)]
            if found:
                return found[-1]
        return lines[-1] if lines else "(no output)"


@dataclass
class Context:
    """The simulated cluster the rows run against, and a scratch directory."""

    sim: SimCluster
    kubeconfig: Path
    work: Path

    def api(self) -> kr8s.Api:
        return kr8s.api(kubeconfig=str(self.kubeconfig))

    def run(self, name: str, *extra: str, kubeconfig: Path | None = None,
            during: Callable[[subprocess.Popen[str]], None] | None = None) -> Observed:
        """`gpu-conformance run` on the matrix's nodes; `during(process)` acts while it runs."""
        report_dir = self.work / name / "reports"
        kc = kubeconfig or self.kubeconfig
        cmd = [sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={kc}", f"--report-dir={report_dir}",
               f"--gpu-node-selector={SCENARIO_LABEL}={SCENARIO.name}", *RUN_ARGS, *extra]
        started = time.monotonic()
        log = self.work / name / "output.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
            try:
                if during is not None:
                    during(proc)
                proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return Observed(proc.returncode, log.read_text(), self.leftovers(), seconds=time.monotonic() - started)

    def leftovers(self) -> tuple[str, ...]:
        """The suite's namespaces that are not being deleted."""
        found = self.api().get("namespaces", label_selector={MANAGED_BY_LABEL: MANAGED_BY})
        return tuple(sorted(str(ns.name) for ns in found if not ns.metadata.get("deletionTimestamp")))

    def run_started(self, proc: subprocess.Popen[str], timeout: float = 120) -> None:
        """Wait until the run has created a namespace of its own (its workloads are under way)."""
        api = self.api()
        before = set(self.namespaces(api))

        def started() -> bool:
            return bool(set(self.namespaces(api)) - before) or proc.poll() is not None

        wait_for(started, bool, what="the run to create its first namespace", timeout=timeout,
                 tolerate=(kr8s.ServerError, OSError), max_interval=0.5)

    @staticmethod
    def namespaces(api: kr8s.Api) -> list[str]:
        return [str(ns.name) for ns in api.get("namespaces", label_selector={MANAGED_BY_LABEL: MANAGED_BY})]


@dataclass(frozen=True)
class Case:
    """One row: the fault, what must come of it, and how to cause it."""

    fault: str
    expect: str
    codes: tuple[int, ...]
    says: str  # a regex the output must contain
    cause: Callable[[Context], Observed]

    def check(self, seen: Observed) -> list[str]:
        """What differs from the expectation (empty: as expected)."""
        problems = []
        if seen.code not in self.codes:
            problems.append(f"exit {seen.code}, expected {' or '.join(map(str, self.codes))}")
        if not re.search(self.says, seen.output):
            problems.append(f"output does not say /{self.says}/")
        if TRACEBACK in seen.output:
            problems.append("a traceback reached the output")
        if seen.leftovers:
            problems.append(f"left behind: {', '.join(seen.leftovers)}")
        return problems


def _file(ctx: Context, name: str, text: str) -> Path:
    path = ctx.work / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def _with_user(ctx: Context, name: str, user: dict[str, str], server: str | None = None) -> Path:
    """A copy of the cluster's kubeconfig with another user (and server)."""
    config = yaml.safe_load(ctx.kubeconfig.read_text())
    config["users"][0]["user"] = user
    if server is not None:
        config["clusters"][0]["cluster"]["server"] = server
    return _file(ctx, name, yaml.safe_dump(config))


def _dead_endpoint() -> str:
    from gpu_conformance.sim.control_plane import free_local_port

    return f"https://127.0.0.1:{free_local_port()}"


def _component_down(process: str) -> Callable[[Context], Observed]:
    def cause(ctx: Context) -> Observed:
        ctx.sim.stop_process(process)
        try:
            return ctx.run(f"{process}-down")
        finally:
            ctx.sim.start_process(process)

    return cause


def _apiserver_restart(ctx: Context) -> Observed:
    def during(proc: subprocess.Popen[str]) -> None:
        ctx.run_started(proc)
        ctx.sim.stop_process("kube-apiserver")
        time.sleep(2)  # the API is gone for a while, not only the length of a restart
        ctx.sim.start_process("kube-apiserver")

    return ctx.run("apiserver-restart", during=during)


def _signal(sig: signal.Signals) -> Callable[[Context], Observed]:
    def during(ctx: Context, proc: subprocess.Popen[str], proxy: FaultProxy) -> None:
        wait_for(lambda: proxy.injected["held"] or proc.poll() is not None, bool,
                 what="the run's first pod creation (held by the proxy)", timeout=120, max_interval=0.2)
        proc.send_signal(sig)

    # The run's first pod creation is answered 20 s late, so the signal lands while the run waits on its
    # workloads (the smoke gate's wave alone can finish before a signal sent on its first namespace lands).
    held = Fault("held", r"^POST /api/v1/namespaces/[^/]+/pods$", times=1, delay_s=20.0)
    return _through_proxy(f"signal-{sig.name}", held, during=during)


def _through_proxy(name: str, *faults: Fault,
                   during: Callable[[Context, subprocess.Popen[str], FaultProxy], None] | None = None) -> Callable[[Context], Observed]:
    def cause(ctx: Context) -> Observed:
        state = ctx.sim.state()
        assert state is not None
        with FaultProxy(state.server, state.state_dir / "pki", list(faults)) as proxy:
            seen = ctx.run(name, kubeconfig=proxy.write_kubeconfig(ctx.work / f"{name}.kubeconfig"),
                           during=None if during is None else (lambda proc: during(ctx, proc, proxy)))
            return Observed(seen.code, seen.output, seen.leftovers, dict(proxy.injected), seen.seconds)

    return cause


WATCHES = r"^GET /api/v1/(namespaces/[^/]+/)?pods\?.*watch=true"


def _collision(times: int) -> Fault:
    """The suite's namespace creations answered as a generateName collision the server did not resolve."""
    return Fault("409", r"^POST /api/v1/namespaces$", times=times, status=409, reason="AlreadyExists",
                 message='namespaces "gc-taken" already exists')


PASSED, FAILED, USAGE, INFRA = 0, 1, 2, 3
VERDICT = r"== gpu-conformance \(smoke gate\): \d+ passed, 0 failed, 0 error"
UNDECIDED = r"== gpu-conformance \(smoke gate\): \d+ passed, 0 failed, [1-9]\d* error"

CASES: tuple[Case, ...] = (
    Case("kubeconfig missing", "usage error", (USAGE,), r"error: kubeconfig .*(not found|no such|does not exist)",
         lambda ctx: ctx.run("kc-missing", kubeconfig=ctx.work / "no-such-kubeconfig")),
    Case("kubeconfig is a directory", "usage error", (USAGE,), r"error: kubeconfig .*not a regular file",
         lambda ctx: ctx.run("kc-dir", kubeconfig=ctx.work)),
    Case("kubeconfig is not YAML", "usage error", (USAGE,), r"error: kubeconfig",
         lambda ctx: ctx.run("kc-malformed", kubeconfig=_file(ctx, "malformed.kubeconfig", "clusters: [\n  - {name: x\n"))),
    Case("kubeconfig context unknown", "usage error", (USAGE,), r"error: kubeconfig .*no context named 'nope'",
         lambda ctx: ctx.run("kc-context", "--context=nope")),
    Case("credentials rejected (expired token)", "usage error", (USAGE,), r"rejected the credentials \(HTTP 401\)",
         lambda ctx: ctx.run("kc-expired", kubeconfig=_with_user(ctx, "expired.kubeconfig", {"token": "expired-token"}))),
    Case("API endpoint dead", "infrastructure error", (INFRA,), r"error: cannot reach the API server",
         lambda ctx: ctx.run("kc-dead", kubeconfig=_with_user(ctx, "dead.kubeconfig", yaml.safe_load(
             ctx.kubeconfig.read_text())["users"][0]["user"], server=_dead_endpoint()))),
    Case("profile malformed", "usage error", (USAGE,), r"error: profile",
         lambda ctx: ctx.run("profile-bad", f"--profile={_file(ctx, 'bad-profile.yaml', BAD_PROFILE)}")),
    Case("unknown requirement id selected (-k)", "usage error", (USAGE,), r"error: -k names unknown requirement id\(s\) GPU-NOPE-999",
         lambda ctx: ctx.run("unknown-id", "-k", "GPU-NOPE-999")),
    Case("no GPU node matches the selector", "conformance failure", (FAILED,), r"observed 0 GPU nodes",
         lambda ctx: ctx.run("no-gpus", f"--gpu-node-selector={SCENARIO_LABEL}=no-such-scenario")),
    Case("kube-scheduler stopped", "errors: pods never placed, said so", (INFRA,),
         r"never placed by a scheduler \(is kube-scheduler running\?\)", _component_down("kube-scheduler")),
    Case("kwok stopped (every kubelet gone)", "errors: pods placed, never started, said so", (INFRA,),
         r"placed, never started by the node \(is its kubelet running\?\)", _component_down("kwok")),
    # The suite's requests are retried across the restart, but the simulated kubelets (kwok) resume
    # their pods only once their own watches come back: a pod may not finish in time (undecided).
    Case("kube-apiserver restarted mid-run", "pass, or errors where pods stalled; never a failure", (PASSED, INFRA),
         r"== gpu-conformance \(smoke gate\): \d+ passed, 0 failed", _apiserver_restart),
    Case("SIGTERM mid-run (CI job cancelled)", "infrastructure error, cleaned up", (INFRA,), r"error: interrupted; the results above are incomplete",
         _signal(signal.SIGTERM)),
    Case("Ctrl-C mid-run", "infrastructure error, cleaned up", (INFRA,), r"error: interrupted; the results above are incomplete", _signal(signal.SIGINT)),
    Case("503 on the first 3 pod creations", "pass: retried", (PASSED,), VERDICT,
         _through_proxy("create-503", Fault("503", r"^POST /api/v1/namespaces/[^/]+/pods$", times=3, status=503))),
    Case("429 with Retry-After: 2 on 3 node lists", "pass: retried after 2 s", (PASSED,), VERDICT,
         _through_proxy("list-429", Fault("429", r"^GET /api/v1/nodes", times=3, status=429, retry_after=2))),
    Case("5 answers 3 s late", "pass", (PASSED,), VERDICT,
         _through_proxy("slow", Fault("slow", r"^GET /api/v1/", times=5, after=3, delay_s=3.0))),
    Case("5 answers cut off mid-body (truncated JSON)", "pass: reads retried", (PASSED,), VERDICT,
         _through_proxy("cut", Fault("cut", r"^GET /api/v1/", times=5, after=5, cut=True))),
    Case("3 connections dropped without an answer", "pass: reads retried", (PASSED,), VERDICT,
         _through_proxy("drop", Fault("drop", r"^GET /api/v1/", times=3, after=8, drop=True))),
    Case("pod watch streams cut after their first event, 5 times", "pass: the watch resumed", (PASSED,), VERDICT,
         _through_proxy("watch-cut", Fault("cut", WATCHES, times=5, cut=True))),
    Case("pod watch answers 410 Gone (resourceVersion too old), 3 times", "pass: listed again", (PASSED,), VERDICT,
         _through_proxy("watch-gone", Fault("410", WATCHES, times=3, status=410, reason="Expired"))),
    Case("pod watch forbidden (403: no watch verb)", "pass: a list on every look", (PASSED,), VERDICT,
         _through_proxy("watch-forbidden", Fault("403", WATCHES, times=10**6, status=403, reason="Forbidden"))),
    Case("namespace name collision on the first 2 creations (409 AlreadyExists)", "pass: a fresh name asked for", (PASSED,), VERDICT,
         _through_proxy("ns-collision", _collision(times=2))),
    Case("namespace name always collides (409 AlreadyExists)", "errors, never a verdict", (INFRA,), r"already exists",
         _through_proxy("ns-collision-always", _collision(times=10**6))),
    Case("pod creation always answers 500", "errors, never a verdict", (INFRA,), UNDECIDED,
         _through_proxy("create-500", Fault("500", r"^POST /api/v1/namespaces/[^/]+/pods$", times=10**6, status=500))),
)


@dataclass(frozen=True)
class Row:
    case: Case
    seen: Observed
    problems: tuple[str, ...]


def run_all(ctx: Context, cases: Sequence[Case] = CASES) -> list[Row]:
    """Every case in turn (they disturb the cluster: never two at once)."""
    rows = []
    for i, case in enumerate(cases, 1):
        say(f"fault matrix {i}/{len(cases)}: {case.fault}")
        try:
            seen = case.cause(ctx)
        except (WaitTimeout, OSError, subprocess.SubprocessError) as exc:
            seen = Observed(None, f"(the fault could not be caused: {type(exc).__name__}: {exc})")
        rows.append(Row(case, seen, tuple(case.check(seen))))
        say(f"  exit {seen.code} in {seen.seconds:.0f}s: {'as expected' if not rows[-1].problems else '; '.join(rows[-1].problems)}")
    return rows


def _cell(text: str, width: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Sequence[Row]) -> str:
    """The matrix as Markdown."""
    lines = ["| fault | expected | exit | what the run said | faults injected | as expected |", "|---|---|---:|---|---:|---|"]
    for r in rows:
        injected = ", ".join(f"{n} x{c}" for n, c in r.seen.injected.items()) or "-"
        lines.append(f"| {r.case.fault} | {r.case.expect} (exit {'/'.join(map(str, r.case.codes))}) | {r.seen.code} | "
                     f"{_cell(r.seen.line())} | {injected} | {'yes' if not r.problems else 'NO: ' + _cell('; '.join(r.problems))} |")
    return "\n".join(lines)


def main(readme: Path | None, cases: Sequence[Case] = CASES) -> int:
    """Start a simulated cluster of its own, run the rows, print (and write) the matrix."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gc-faults-") as tmp:
        work = Path(tmp)
        sim = SimCluster(work / "sim")
        try:
            state = sim.up([SCENARIO])
            rows = run_all(Context(sim, state.kubeconfig, work), cases)
        finally:
            sim.down(quiet=True)
    text = table(rows)
    produced = (f"Produced by `gpu-conformance sim faults` on {time.strftime('%Y-%m-%d')} "
                f"({os.cpu_count()} CPU cores): {sum(not r.problems for r in rows)}/{len(rows)} rows as expected, "
                f"{time.monotonic() - started:.0f} s in all.")
    print(text)
    print()
    print(produced)
    if readme is not None:
        matrix.write_section(readme, README_BEGIN, README_END, f"{text}\n\n{produced}")
    return 0 if all(not r.problems for r in rows) else 1

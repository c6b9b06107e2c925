"""The `gpu-conformance` command line."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gpu_conformance import __version__, cli_tools, redaction
from gpu_conformance.catalogue import GATES
from gpu_conformance.errors import ConfigError, ExitCode, GpuConformanceError
from gpu_conformance.summary import AI_FILE, Summary, load_summary, write_json

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
PROJECT_ROOT = SUITES_DIR.parent

EXIT_CODES_HELP = """exit codes:
  0  every check passed
  1  conformance failure: at least one check failed
  2  usage or configuration error (bad arguments, kubeconfig, scenario; no checks selected)
  3  cluster unreachable or infrastructure error (the suite could not decide)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu-conformance", description="Conformance suite for Kubernetes clusters with NVIDIA GPUs.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"gpu-conformance {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the conformance suite against a cluster",
                         description="Run suites/ against a cluster; extra arguments go to pytest (e.g. -k, -n auto).",
                         epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--kubeconfig", help="kubeconfig of the cluster (default: $KUBECONFIG, ~/.kube/config)")
    run.add_argument("--context", help="kubeconfig context (default: current-context)")
    run.add_argument("--report-dir", default="reports", help="where reports are written (default: reports/)")
    run.add_argument("--profile", help="cluster profile (YAML): expected GPU nodes, counts, products, taints, images")
    run.add_argument("--gpu-node-selector", help="label selector limiting which nodes are considered")
    run.add_argument("--workload-timeout", type=_seconds, help="seconds a workload pod may take to finish (default 300)")
    run.add_argument("--image", action="append", default=[], metavar="WORKLOAD=IMAGE", help="override a workload image")
    run.add_argument("--gate", choices=GATES, default="standard",
                     help="which checks run: smoke (node facts, stack health, metrics exposure, one vector-add per node "
                          "group), standard (default), full (adds the notebook and the privileged dcgmproftester check), "
                          "disruptive (adds the opt-in node reboot; --reboot-nodes or --reboot-count select it)")
    run.add_argument("--fanout", choices=("pods", "daemonset"),
                     help="how per-node workloads reach the nodes (default: the profile's fanout, else pods): one pod "
                          "per node and workload created by the suite, or one DaemonSet per workload (large clusters)")
    run.add_argument("--baseline", type=Path, metavar="SUMMARY_JSON",
                     help="a previous run's summary.json: fail on GPUs or nodes gone, drivers downgraded or drifting "
                          "within a node group, and checks that passed there and fail now")
    run.add_argument("--in-cluster", action="store_true",
                     help="inside a pod: use its service account instead of a kubeconfig (see deploy/incluster/)")

    sim = sub.add_parser("sim", help="the simulated GPU cluster (real control plane, kwok nodes)")
    sim.add_argument("--state-dir", type=Path, help="state directory (default: $GPU_CONFORMANCE_SIM_DIR or ~/.local/state/gpu-conformance/sim)")
    simsub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    up = simsub.add_parser("up", help="start the simulated cluster (idempotent)")
    up.add_argument("--scenario", action="append", default=[], metavar="FILE_OR_NAME",
                    help="scenario file or bundled scenario name (repeatable; default: healthy)")
    up.add_argument("--kubeconfig-out", type=Path, help="also copy the admin kubeconfig here")
    simsub.add_parser("down", help="stop every process the simulated cluster started and remove its state")
    simsub.add_parser("status", help="print the simulated cluster's state as JSON")
    simsub.add_parser("build", help="build (or find) the control-plane binaries and cache them")
    simsub.add_parser("scenarios", help="list the bundled scenarios")
    prof = simsub.add_parser("profile", help="print the cluster profile a bundled scenario is meant to be run with")
    prof.add_argument("scenario", nargs="?", default="healthy", metavar="FILE_OR_NAME")
    mx = simsub.add_parser("matrix", help="run the suite on every bundled scenario and print the detection matrix")
    mx.add_argument("--kubeconfig", type=Path, help="a running simulated cluster with every bundled scenario loaded "
                                                  "(default: start a fresh one)")
    mx.add_argument("--jobs", type=int, default=3, help="scenarios run at once (default 3)")
    mx.add_argument("--write-readme", type=Path, metavar="README", help="replace the matrix section of this README")
    bn = simsub.add_parser("bench", help="time the suite on simulated clusters of growing size beside a kubectl baseline",
                           description="For each size: a fresh simulated cluster of N healthy 8-GPU nodes, the kubectl "
                                       "baseline (one vector-add pod per node: kubectl apply, kubectl wait), then "
                                       "`gpu-conformance run`. Prints wall times, their ratio, API requests, the suite's peak RSS "
                                       "and the pytest floor's (as many trivial results through the same reporters).")
    bn.add_argument("--nodes", default="10,100,1000", help="comma-separated cluster sizes (default 10,100,1000)")
    bn.add_argument("--gate", choices=GATES, default="standard", help="the suite's gate (default standard)")
    bn.add_argument("--fanout", choices=("pods", "daemonset"), default="pods",
                    help="how the suite runs its per-node workloads (default pods)")
    bn.add_argument("--write-readme", type=Path, metavar="README", help="replace this mode's benchmark section of this README")
    bn.add_argument("--keep", type=Path, metavar="DIR", help="keep each size's reports, the suite's log and the simulator's process logs under DIR")
    fm = simsub.add_parser("faults", help="run the suite under bad input and cluster faults; print the fault matrix",
                           description="On a simulated cluster of its own: bad kubeconfigs and profiles, stopped "
                                       "control-plane processes, a restarted API server, signals mid-run and HTTP faults "
                                       "(5xx, 429 with Retry-After, late, cut-off and dropped answers). Each row must end "
                                       "with its documented exit code and line, no traceback and nothing left behind.")
    fm.add_argument("--write-readme", type=Path, metavar="README", help="replace the fault matrix section of this README")
    fm.add_argument("--only", metavar="TEXT", help="only the rows whose fault contains TEXT (case-insensitive)")
    rb = simsub.add_parser("reboot", help="reboot a simulated node (its scenario's `recovery` says how it comes back)")
    rb.add_argument("node")
    rb.add_argument("--kubeconfig", type=Path, help="the simulated cluster's kubeconfig (default: the one in --state-dir)")

    cli_tools.register(sub)

    clean = sub.add_parser("cleanup", help="delete namespaces left behind by earlier runs (by label) and uncordon nodes they left cordoned")
    clean.add_argument("--kubeconfig")
    clean.add_argument("--context")
    clean.add_argument("--run-id", help="only what this run left (default: every run's leftovers)")
    return p


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 < value < 86400):
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # A cancelled CI job sends SIGTERM: every command unwinds as on Ctrl-C (fixtures clean up, `sim bench`
    # stops its cluster and its suite).
    previous_handler = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        if args.command == "run":
            args.kubeconfig = cli_tools.incluster_kubeconfig(args.in_cluster, args.kubeconfig)
            return _run(args, extra)
        if args.command == "sim":
            return _sim(args)
        if args.command == "cleanup":
            return _cleanup(args)
        if args.command in cli_tools.COMMANDS:
            return cli_tools.dispatch(args)
        parser.error(f"unknown command {args.command}")
    except GpuConformanceError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"gpu-conformance: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("gpu-conformance: interrupted", file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    except Exception as exc:  # the last line of defence: one line, no traceback unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"gpu-conformance: error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    import pytest

    from gpu_conformance import profile as profiles
    from gpu_conformance.cluster import connect, resolve_target

    if not SUITES_DIR.is_dir():
        raise ConfigError(f"suites directory not found at {SUITES_DIR}; run from a gpu-conformance checkout (pip install -e .)")
    target = resolve_target(args.kubeconfig, args.context)
    if args.profile:
        profiles.load(Path(args.profile))  # a bad profile is a usage error (exit 2) before anything runs
    previous = _load_baseline(args.baseline) if args.baseline else None
    _check_selected_ids(extra)
    connect(target)  # fail fast with one line when the cluster is unreachable
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    allure_dir = report_dir / "allure-results"
    if allure_dir.exists():
        shutil.rmtree(allure_dir)  # results of an earlier run would be merged into this one
    summary = report_dir / "summary.json"
    summary.unlink(missing_ok=True)
    pytest_args = [
        str(SUITES_DIR), f"--rootdir={PROJECT_ROOT}", "-c", str(PROJECT_ROOT / "pyproject.toml"),
        f"--kubeconfig={target.kubeconfig}", *report_args(report_dir), f"--summary-json={summary}", f"--gate={args.gate}",
    ]
    if target.context:
        pytest_args.append(f"--context={target.context}")
    if args.profile:
        pytest_args.append(f"--profile={args.profile}")
    if args.gpu_node_selector:
        pytest_args.append(f"--gpu-node-selector={args.gpu_node_selector}")
    if args.workload_timeout:
        pytest_args.append(f"--workload-timeout={args.workload_timeout}")
    pytest_args += [f"--image={i}" for i in args.image]
    if args.fanout:
        pytest_args.append(f"--fanout={args.fanout}")
    if any(a == "-n" or a.startswith(("-n=", "--numprocesses")) or re.fullmatch(r"-n(\d+|auto|logical)", a) for a in extra) \
            and not any(a.startswith("--dist") for a in extra):
        pytest_args.append("--dist=loadfile")  # per-node workload runs are module-scoped: keep a module on one worker
    code = int(pytest.main(pytest_args + extra))
    redaction.register_kubeconfig(target.kubeconfig)
    redaction.scrub_dir(report_dir)  # whatever the report plugins wrote on their own (captured output, tracebacks)
    return _verdict(code, summary, report_dir, previous, args.baseline)


REQUIREMENT_ID = re.compile(r"\b[A-Z][A-Z0-9]*-[A-Z][A-Z0-9]*-\d{3}\b")


def report_args(report_dir: Path) -> list[str]:
    """pytest's options for the run's reports (JUnit XML, HTML, Allure results under `report_dir`) and output."""
    return [
        f"--junitxml={report_dir / 'junit.xml'}", f"--html={report_dir / 'report.html'}", "--self-contained-html",
        f"--alluredir={report_dir / 'allure-results'}", "-o", "junit_family=xunit2", "-rfE", "-p", "no:anyio",
        "-p", "no:hypothesispytest",  # a test tool (installed with the project's tests): its summary walks every report
        "--tb=short",
    ]


def _check_selected_ids(extra: Sequence[str]) -> None:
    """Requirement ids named in -k must exist: a typo would otherwise select nothing (or less) silently."""
    from gpu_conformance import catalogue

    expressions = [extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "-k"] + [a[2:] for a in extra if a.startswith("-k") and len(a) > 2]
    known = catalogue.load()
    unknown = sorted({m for e in expressions for m in REQUIREMENT_ID.findall(e) if m not in known})
    if unknown:
        raise ConfigError(f"-k names unknown requirement id(s) {', '.join(unknown)}; "
                          f"the catalogue has {', '.join(sorted(known.by_id))}")


def _load_baseline(path: Path) -> Summary:
    """A previous run's summary.json; anything else is a usage error (exit 2)."""
    from pydantic import ValidationError

    try:
        return load_summary(path)
    except OSError as exc:
        raise ConfigError(f"--baseline {path}: cannot read it ({exc.strerror or exc})") from None
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) and exc.errors() else None
        why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(exc).splitlines()[0]
        raise ConfigError(f"--baseline {path}: not a summary.json of this gpu-conformance version ({why})") from None


def _verdict(pytest_code: int, summary: Path, report_dir: Path, baseline: Summary | None = None,
             baseline_path: Path | None = None) -> int:
    if pytest_code == pytest_exit("NO_TESTS_COLLECTED"):
        print("gpu-conformance: error: no checks selected (check -k/-m and the suite path)", file=sys.stderr)
        return int(ExitCode.USAGE)
    if pytest_code == pytest_exit("USAGE_ERROR"):
        return int(ExitCode.USAGE)
    if not summary.is_file():
        print(f"gpu-conformance: error: the run did not complete (pytest exit {pytest_code})", file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    doc = load_summary(summary)
    totals = doc.totals.model_dump()
    print(f"\n== gpu-conformance ({doc.gate} gate): "
          + ", ".join(f"{totals[k]} {k}" for k in ("passed", "failed", "error", "skipped")))
    for r in doc.results:
        if r.status == "failed":
            print(_short(f"   FAILED {r.id} {r.node or '(cluster)'}: expected {r.expected}, observed {r.observed}"
                         if r.expected is not None else f"   FAILED {r.id} {r.node or '(cluster)'}: {r.message}"))
        elif r.status == "error":
            print(_short(f"   ERROR  {r.id} {r.node or '(cluster)'}: {r.message}"))
    ai_path = summary.with_name(AI_FILE)
    if ai_path.is_file():
        ai = json.loads(ai_path.read_text())
        print("   CNCF AI Conformance: " + ", ".join(f"{a['id']} {a['status']}" for a in ai["requirements"]))
    regressions = _compare_baseline(doc, summary, baseline, baseline_path) if baseline is not None else 0
    print(f"   reports: {report_dir}/ (report.html, junit.xml, allure-results/, summary.json, {AI_FILE})")
    if pytest_code == pytest_exit("INTERRUPTED"):
        print("gpu-conformance: error: interrupted; the results above are incomplete and are not a verdict",
              file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    if totals["failed"] or regressions > 0:
        return int(ExitCode.CONFORMANCE_FAILURE)
    if regressions < 0:  # the comparison could not be made: undecided, never a pass
        return int(ExitCode.INFRASTRUCTURE)
    if totals["error"] or pytest_code not in (0, 1):
        return int(ExitCode.INFRASTRUCTURE)
    if pytest_code == 1:  # failures outside any requirement (should not happen): never report a pass
        return int(ExitCode.CONFORMANCE_FAILURE)
    return int(ExitCode.PASSED)


def _short(line: str, width: int = 220) -> str:
    line = " ".join(line.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _compare_baseline(doc: Summary, summary: Path, baseline: Summary, baseline_path: Path | None) -> int:
    """Compare with the baseline, print the findings, record them in summary.json; the number of regressions
    (-1: the comparison could not be made)."""
    from gpu_conformance import baseline as gate

    try:
        found = gate.compare(baseline, doc)
    except gate.BaselineUndecided as exc:
        print(f"   baseline {baseline_path}: cannot compare: {exc}", file=sys.stderr)
        doc.baseline = {"source": str(baseline_path), "undecided": str(exc)}
        write_json(summary, doc)
        return -1
    doc.baseline = found.as_json(str(baseline_path))
    write_json(summary, doc)
    print(f"   baseline {baseline_path}: {len(found.regressions)} regression(s), "
          f"{len(found.findings) - len(found.regressions)} other change(s)")
    for f in found.findings:
        print(_short(f"   {f.describe()}"))
    return len(found.regressions)


def pytest_exit(name: str) -> int:
    import pytest

    return int(getattr(pytest.ExitCode, name))


def _sim(args: argparse.Namespace) -> int:
    from gpu_conformance.sim import binaries, scenario
    from gpu_conformance.sim.control_plane import SimCluster

    sim = SimCluster(args.state_dir)
    if args.sim_command == "up":
        names = args.scenario or [None]
        scenarios = []
        for name in names:
            path = scenario.resolve(name)
            if not path.is_file():
                raise ConfigError(f"scenario {name!r}: no such file or bundled scenario (bundled: {', '.join(scenario.bundled())})")
            scenarios.append(scenario.load(path))
        sim.up(scenarios, args.kubeconfig_out)
        return 0
    if args.sim_command == "down":
        sim.down()
        return 0
    if args.sim_command == "status":
        st = sim.status()
        print(json.dumps(st, indent=2))
        return 0 if st["up"] else int(ExitCode.INFRASTRUCTURE)
    if args.sim_command == "build":
        binaries.ensure()
        for name, path in binaries.ensure(allow_build=False).paths.items():
            print(f"{name}: {path}")
        return 0
    if args.sim_command == "profile":
        import yaml

        path = scenario.resolve(args.scenario)
        if not path.is_file():
            raise ConfigError(f"scenario {args.scenario!r}: no such file or bundled scenario")
        print(yaml.safe_dump(scenario.load(path).profile.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.sim_command == "matrix":
        from gpu_conformance.sim import matrix

        return matrix.main(args.kubeconfig, max(1, args.jobs), args.write_readme)
    if args.sim_command == "bench":
        from gpu_conformance.sim import bench

        try:
            sizes = [int(n) for n in args.nodes.split(",") if n.strip()]
        except ValueError:
            raise ConfigError(f"--nodes expects sizes like 10,100,1000, got {args.nodes!r}") from None
        if not sizes or min(sizes) < 1:
            raise ConfigError("--nodes needs at least one size of 1 or more")
        return bench.main(sizes, args.gate, [], args.write_readme, args.keep, args.fanout)
    if args.sim_command == "faults":
        from gpu_conformance.sim import faults

        if args.only and args.write_readme:
            raise ConfigError("--only and --write-readme do not go together: the README keeps the whole matrix")
        cases = [c for c in faults.CASES if not args.only or args.only.lower() in c.fault.lower()]
        if not cases:
            raise ConfigError(f"--only {args.only!r} matches no row of the fault matrix")
        return faults.main(args.write_readme, cases)
    if args.sim_command == "reboot":
        state = sim.state() if args.kubeconfig is None else None
        return _reboot(args.node, args.kubeconfig or (state.kubeconfig if state else None))
    if args.sim_command == "scenarios":
        for name in scenario.bundled():
            sc = scenario.load(scenario.resolve(name))
            print(f"{name}: {sc.description}")
        return 0
    raise ConfigError(f"unknown sim command {args.sim_command}")


def _reboot(node: str, kubeconfig: Path | None) -> int:
    """Ask the simulated cluster's node agent to reboot a node: exit 1 when there is no such node."""
    import kr8s

    from gpu_conformance.cluster import connect, resolve_target
    from gpu_conformance.sim.nodeagent import request_reboot

    api = connect(resolve_target(kubeconfig, None))
    try:
        request_reboot(api, node)
    except kr8s.NotFoundError:
        print(f"gpu-conformance: error: node {node!r} not found", file=sys.stderr)
        return int(ExitCode.CONFORMANCE_FAILURE)
    print(f"[gpu-conformance sim] reboot of {node} requested")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from gpu_conformance import disruption, runner
    from gpu_conformance.cluster import connect, resolve_target

    api = connect(resolve_target(args.kubeconfig, args.context))
    names = runner.delete_run_namespaces(api, args.run_id)
    print(f"deleted {len(names)} namespace(s) created by gpu-conformance" + (f": {', '.join(names)}" if names else ""))
    nodes = disruption.restore_cordons(api, args.run_id)
    print(f"uncordoned {len(nodes)} node(s) a killed run left cordoned" + (f": {', '.join(nodes)}" if nodes else ""))
    return 0

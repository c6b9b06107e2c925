"""Stand-alone tool subcommands of `gpu-conformance`: `compat`, `parse nvidia-smi`, `probe`, and the in-cluster
Job's `job-run` and `results`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpu_conformance.errors import ConfigError, ExitCode

# Report files with a published schema (docs/*.schema.json hold the same).
SCHEMAS = ("summary", "ai-conformance")


def report_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of summary.json or ai-conformance.json."""
    from gpu_conformance.summary import AiEvidence, Summary

    model = Summary if name == "summary" else AiEvidence
    return model.model_json_schema(by_alias=True)


# Names of the subcommands this module adds; cli.main() dispatches them here.
COMMANDS: frozenset[str] = frozenset({"compat", "parse", "probe", "job-run", "results", "schema"})


def register(sub: Any) -> None:
    """Add this module's subcommands to the `gpu-conformance` parser."""
    compat = sub.add_parser(
        "compat", help="is a driver compatible with a CUDA toolkit? (JSON; exit 0 yes, 1 no, 2 bad version)",
        description="Decide from NVIDIA's release-notes table whether a Linux driver runs a CUDA toolkit: "
                    "natively, under CUDA minor-version compatibility, or not at all.")
    compat.add_argument("--driver", required=True, help="NVIDIA driver version, e.g. 535.104.05")
    compat.add_argument("--cuda", required=True, help="CUDA toolkit version, e.g. 12.4 or 12.4.1")

    parse = sub.add_parser("parse", help="parse tool output into JSON facts")
    what = parse.add_subparsers(dest="parse_what", required=True, metavar="WHAT")
    smi = what.add_parser("nvidia-smi", help="nvidia-smi output: default table, -L, -q -x or --query-gpu CSV")
    smi.add_argument("file", type=Path, metavar="FILE", help="file holding the output ('-' for stdin)")

    sub.add_parser("probe", help="print this machine's driver and GPU facts from NVML as JSON (exit 3 without NVML)")

    schema = sub.add_parser("schema", help="print the JSON Schema of a report file: summary.json or ai-conformance.json")
    schema.add_argument("report", choices=sorted(SCHEMAS))

    job = sub.add_parser(
        "job-run", help="what the in-cluster Job runs: `run --in-cluster`, then the report dir as an archive in the log",
        description="Run the suite with the pod's service account (`gpu-conformance run --in-cluster`), then print "
                    "the report dir as a base64 tar.gz between BEGIN/END lines at the end of the log "
                    "(`gpu-conformance results` takes it back). Exits with the run's exit code.",
        usage="gpu-conformance job-run [--report-dir DIR] [-- RUN_OPTIONS_AND_PYTEST_ARGS...]")
    job.add_argument("--report-dir", default="reports", help="where the run writes its reports (default: reports/)")
    job.add_argument("run_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                     help="after `--`: options of `gpu-conformance run` and pytest arguments, e.g. -- -m 'not disruptive'")

    results = sub.add_parser(
        "results", help="fetch an in-cluster Job's reports from its log; exits with the run's exit code",
        description="Read the log of the newest pod of the Job (or a saved log), unpack the report archive into "
                    "--out and print the run's exit code. Exit code: the run's; 3 when the archive is missing, "
                    "cut short or damaged.")
    results.add_argument("--namespace", default="gpu-conformance", help="the Job's namespace (default: gpu-conformance)")
    results.add_argument("--job", default="gpu-conformance", help="the Job's name (default: gpu-conformance)")
    results.add_argument("--log-file", type=Path, help="read this saved log instead (`kubectl logs job/NAME > FILE`; '-' for stdin)")
    results.add_argument("--out", type=Path, default=Path("reports"), help="where to unpack the reports (default: reports/)")
    results.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    results.add_argument("--context", help="kubeconfig context (default: current-context)")


def dispatch(args: argparse.Namespace) -> int:
    """Run one of this module's subcommands; returns the exit code."""
    if args.command == "compat":
        return _compat(args.driver, args.cuda)
    if args.command == "parse":
        return _parse_nvidia_smi(args.file)
    if args.command == "probe":
        from gpu_conformance import probe

        return probe.main()
    if args.command == "schema":
        print(json.dumps(report_schema(args.report), indent=2))
        return int(ExitCode.PASSED)
    if args.command == "job-run":
        return _job_run(args.report_dir, list(args.run_args), args.debug)
    if args.command == "results":
        return _results(args)
    raise ConfigError(f"unknown command {args.command}")


def _compat(driver: str, cuda: str) -> int:
    from gpu_conformance import compat

    try:
        result = compat.check(driver, cuda)
    except compat.CompatError as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(asdict(result), indent=2))
    return int(ExitCode.PASSED if result.compatible else ExitCode.CONFORMANCE_FAILURE)


def _parse_nvidia_smi(path: Path) -> int:
    from gpu_conformance import nvsmi

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        facts = nvsmi.parse(text)
    except nvsmi.NvidiaSmiParseError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    print(json.dumps(asdict(facts), indent=2))
    return int(ExitCode.PASSED)


def incluster_kubeconfig(in_cluster: bool, kubeconfig: str | None) -> str | None:
    """For `run`: with --in-cluster, a kubeconfig written for the pod's service account; else `kubeconfig`."""
    from gpu_conformance import incluster

    return incluster.run_kubeconfig(in_cluster, kubeconfig)


def _job_run(report_dir: str, run_args: list[str], debug: bool) -> int:
    from gpu_conformance import cli, incluster

    if run_args[:1] == ["--"]:
        run_args = run_args[1:]
    elif run_args:
        raise ConfigError(f"job-run: put run options and pytest arguments after `--` (got {run_args[0]!r})")
    argv = ["run", "--in-cluster", f"--report-dir={report_dir}", *run_args]
    effective = Path(cli._parser().parse_known_args(argv)[0].report_dir)  # a --report-dir after `--` wins
    code = cli.main((["--debug"] if debug else []) + argv)
    sys.stderr.flush()
    print(f"gpu-conformance: run exit code {code}; report dir {effective} follows as an archive", flush=True)
    incluster.write_archive(effective, code, sys.stdout)
    return code


EXIT_MEANINGS = {0: "every check passed", 1: "conformance failure", 2: "usage or configuration error",
                 3: "cluster unreachable or infrastructure error"}


def _results(args: argparse.Namespace) -> int:
    from gpu_conformance import incluster

    if args.log_file is not None:
        try:
            text = sys.stdin.read() if str(args.log_file) == "-" else args.log_file.read_text(errors="replace")
            lines = text.splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.log_file}: {exc.strerror or exc}") from None
        where = str(args.log_file)
    else:
        from gpu_conformance.cluster import connect, resolve_target

        api = connect(resolve_target(args.kubeconfig, args.context))
        pod, phase, lines = incluster.job_pod_log(api, args.namespace, args.job)
        where = f"the log of pod {args.namespace}/{pod} (phase {phase})"
    try:
        archive = incluster.decode(lines)
    except incluster.ArchiveError as exc:
        raise incluster.ArchiveError(f"{where}: {exc}") from None
    files = incluster.unpack(archive, args.out)
    meaning = EXIT_MEANINGS.get(archive.exit_code, "unknown")
    print(f"run exit code {archive.exit_code} ({meaning}): {incluster.summary_line(args.out)}")
    print(f"reports: {args.out}/ ({len(files)} file(s) from {where})")
    return archive.exit_code

"""Stand-alone tool subcommands of `gpu-conformance`: `compat`, `parse nvidia-smi` and `probe`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpu_conformance.errors import ConfigError, ExitCode

# Names of the subcommands this module adds; cli.main() dispatches them here.
COMMANDS: frozenset[str] = frozenset({"compat", "parse", "probe"})


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


def dispatch(args: argparse.Namespace) -> int:
    """Run one of this module's subcommands; returns the exit code."""
    if args.command == "compat":
        return _compat(args.driver, args.cuda)
    if args.command == "parse":
        return _parse_nvidia_smi(args.file)
    if args.command == "probe":
        from gpu_conformance import probe

        return probe.main()
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

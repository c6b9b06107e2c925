"""Stand-alone tool subcommands of `gpu-conformance` (parsing, probing, compatibility)."""

from __future__ import annotations

import argparse
from typing import Any

# Names of the subcommands this module adds; cli.main() dispatches them here.
COMMANDS: frozenset[str] = frozenset()


def register(sub: Any) -> None:
    """Add this module's subcommands to the `gpu-conformance` parser."""


def dispatch(args: argparse.Namespace) -> int:
    """Run one of this module's subcommands; returns the exit code."""
    raise NotImplementedError(args.command)

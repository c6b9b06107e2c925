"""Progress lines on stderr for long steps (builds, cluster start-up, workload runs)."""

from __future__ import annotations

import sys


def say(msg: str, topic: str = "") -> None:
    """Print one progress line, e.g. `[gpu-conformance sim] building etcd ...`."""
    prefix = f"[gpu-conformance {topic}]" if topic else "[gpu-conformance]"
    print(f"{prefix} {msg}", file=sys.stderr, flush=True)

"""Progress lines on stderr for long steps (builds, cluster start-up, workload runs)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import ContextManager

# What lets a line through output capture (pytest's, during a run); none outside pytest.
_uncaptured: Callable[[], ContextManager[object]] | None = None


def show_through(uncaptured: Callable[[], ContextManager[object]] | None) -> None:
    """Print progress lines inside `uncaptured()` (pytest's capture manager suspends capture there)."""
    global _uncaptured
    _uncaptured = uncaptured


def say(msg: str, topic: str = "") -> None:
    """Print one progress line, e.g. `[gpu-conformance sim] building etcd ...`."""
    prefix = f"[gpu-conformance {topic}]" if topic else "[gpu-conformance]"
    through = _uncaptured is not None and threading.current_thread() is threading.main_thread()
    with _uncaptured() if through else contextlib.nullcontext():  # type: ignore[misc]
        print(f"{prefix} {msg}", file=sys.stderr, flush=True)

"""Progress lines on stderr for long steps (builds, cluster start-up, workload runs)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
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


# Long waits say how far they got this often.
EVERY_S = 15.0


class Ticker:
    """`due()` holds once every `seconds` (the first time `seconds` after it was made): for progress lines
    inside a wait's loop."""

    def __init__(self, seconds: float = EVERY_S) -> None:
        self.seconds = seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True

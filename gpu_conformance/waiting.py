"""The one waiting helper: tenacity-based polling whose timeout shows what was last observed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_exponential

T = TypeVar("T")


class WaitTimeout(Exception, Generic[T]):
    """A wait ran out of time; carries the last observed state and recent events."""

    def __init__(self, what: str, timeout: float, last: T | None, last_text: str, events: Sequence[str], error: BaseException | None) -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        self.last_text = last_text
        self.events = list(events)
        self.error = error
        parts = [f"timed out after {timeout:.0f}s waiting for {what}", f"last observed: {last_text}"]
        if error is not None:
            parts.append(f"last error: {type(error).__name__}: {error}")
        if self.events:
            parts.append("recent events:\n  " + "\n  ".join(self.events[-10:]))
        super().__init__("; ".join(parts[:3]) + ("\n" + parts[3] if len(parts) > 3 else ""))


class _NotYet(Exception):
    """Internal: the probe raised one of the tolerated exceptions."""


def wait_for(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float,
    describe: Callable[[T], str] = repr,
    events: Callable[[], Sequence[str]] | None = None,
    tolerate: tuple[type[BaseException], ...] = (),
    first_interval: float = 0.1,
    max_interval: float = 2.0,
) -> T:
    """Call `probe` until `done(result)` holds; raise WaitTimeout with the last state otherwise.

    Exceptions listed in `tolerate` count as "not yet" (e.g. connection refused while a server starts).
    """
    last: list[T] = []
    last_error: list[BaseException] = []

    def attempt() -> bool:
        try:
            value = probe()
        except tolerate as exc:  # type: ignore[misc]
            last_error[:] = [exc]
            return False
        last[:] = [value]
        last_error.clear()
        return done(value)

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=first_interval, min=first_interval, max=max_interval),
        retry=retry_if_result(lambda ok: not ok) | retry_if_exception_type(_NotYet),
        reraise=False,
    )
    try:
        retrying(attempt)
    except RetryError:
        value = last[0] if last else None
        text = describe(value) if last else "nothing (no successful observation)"  # type: ignore[arg-type]
        try:
            recent = list(events()) if events is not None else []
        except Exception as exc:  # events are diagnostics: never mask the timeout itself
            recent = [f"(could not list events: {exc})"]
        raise WaitTimeout(what, timeout, value, text, recent, last_error[0] if last_error else None) from None
    return last[0]

"""The one waiting helper (tenacity-based polling whose timeout shows what was last observed), and the
retry policy for API calls that failed for transient reasons (applied to every request by
gpu_conformance.transport; with_retries for calls whose retry needs its own rules)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import httpx
import kr8s
from tenacity import (RetryCallState, RetryError, Retrying, retry_if_exception, retry_if_exception_type, retry_if_result,
                      stop_after_attempt, stop_after_delay, wait_exponential, wait_random)

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


# Answers that a later identical request may not get: throttling (API priority and fairness) and
# server-side trouble. 401/403/404/409/422 are answers, not weather: never retried.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# The longest Retry-After the suite honours (a larger one is cut to this).
MAX_RETRY_AFTER_S = 30.0


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call (kr8s.ServerError, httpx.HTTPStatusError), else None."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """Whether the same request may succeed if sent again: connection trouble, timeouts, 429 and 5xx."""
    if isinstance(exc, (httpx.TransportError, kr8s.APITimeoutError)):
        return True
    return status_of(exc) in RETRY_STATUS


def retry_after(failure: BaseException | httpx.Response | None) -> float | None:
    """The server's Retry-After in seconds (capped), where the failed answer carried one."""
    response = failure if isinstance(failure, httpx.Response) else getattr(failure, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to backoff


def backoff_wait(first_backoff: float, max_backoff: float) -> Callable[[RetryCallState], float]:
    """tenacity wait: the server's Retry-After when the last answer gave one, else bounded exponential
    backoff with up to a second of jitter."""
    backoff = wait_exponential(multiplier=first_backoff, max=max_backoff) + wait_random(0, 1)

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        told = None
        if outcome is not None:
            told = retry_after(outcome.exception() if outcome.failed else outcome.result())
        return told if told is not None else backoff(state)

    return wait


def with_retries(call: Callable[[], T], *, attempts: int = 6, first_backoff: float = 0.5, max_backoff: float = 10.0,
                 sleep: Callable[[float], None] | None = None,
                 retry_on: Callable[[BaseException], bool] = is_transient) -> T:
    """`call()`, again after failures `retry_on` accepts (transient ones by default): after the server's
    Retry-After when it gave one, else bounded exponential backoff with jitter; the last failure is raised."""
    extra = {"sleep": sleep} if sleep is not None else {}
    retrying = Retrying(stop=stop_after_attempt(attempts), wait=backoff_wait(first_backoff, max_backoff),
                        retry=retry_if_exception(retry_on), reraise=True, **extra)
    return retrying(call)

"""The waiting helper: returns the value once done; on timeout shows the last state and events. The retry
of API calls: transient failures again (after Retry-After, else bounded backoff), answers never."""

import itertools
from collections.abc import Callable

import httpx
import kr8s
import pytest

from gpu_conformance import runner
from gpu_conformance.waiting import MAX_RETRY_AFTER_S, WaitTimeout, wait_for, with_retries


def test_returns_the_first_value_that_is_done() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter), lambda v: v >= 3, what="three", timeout=5, first_interval=0.01) == 3


def test_timeout_carries_last_state_and_events() -> None:
    with pytest.raises(WaitTimeout) as exc:
        wait_for(lambda: "Pending", lambda v: v == "Running", what="pod p to run", timeout=0.3,
                 describe=lambda v: f"phase {v}", events=lambda: ["Warning FailedScheduling: 0/3 nodes"],
                 first_interval=0.01)
    text = str(exc.value)
    assert "waiting for pod p to run" in text and "last observed: phase Pending" in text
    assert "Warning FailedScheduling: 0/3 nodes" in text
    assert exc.value.last == "Pending"


def test_tolerated_errors_count_as_not_yet_and_are_reported() -> None:
    def probe() -> str:
        raise ConnectionRefusedError("refused")

    with pytest.raises(WaitTimeout) as exc:
        wait_for(probe, bool, what="server", timeout=0.2, tolerate=(OSError,), first_interval=0.01)
    assert "no successful observation" in str(exc.value) and "ConnectionRefusedError: refused" in str(exc.value)


def test_other_errors_propagate_at_once() -> None:
    def probe() -> str:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        wait_for(probe, bool, what="x", timeout=5, tolerate=(OSError,))


def _server_error(status: int, headers: dict[str, str] | None = None) -> kr8s.ServerError:
    response = httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", "https://api.test/api/v1/pods"))
    return kr8s.ServerError(f"HTTP {status}", status=str(status), response=response)


def _flaky(failures: list[BaseException], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A call that raises each of `failures` in turn, then returns `result`; counts its calls."""
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return result

    return call, calls


def test_throttled_call_waits_as_long_as_the_server_says() -> None:
    call, calls = _flaky([_server_error(429, {"Retry-After": "3"}), _server_error(429, {"Retry-After": "120"})])
    slept: list[float] = []
    assert with_retries(call, sleep=slept.append) == "ok"
    assert len(calls) == 3
    assert slept == [3.0, MAX_RETRY_AFTER_S]  # a huge Retry-After is capped


def test_server_errors_and_lost_connections_back_off_and_give_up() -> None:
    failures: list[BaseException] = [_server_error(503), httpx.ConnectError("reset"), _server_error(500),
                                     kr8s.APITimeoutError("slow"), _server_error(502), _server_error(504)]
    call, calls = _flaky(failures)
    slept: list[float] = []
    with pytest.raises(kr8s.ServerError, match="HTTP 504"):
        with_retries(call, attempts=6, first_backoff=0.5, max_backoff=4.0, sleep=slept.append)
    assert len(calls) == 6 and len(slept) == 5
    assert all(0 < s <= 4.0 + 1.0 for s in slept)  # bounded (jitter adds at most 1 s)
    call, calls = _flaky(failures[:2])
    assert with_retries(call, sleep=lambda _: None) == "ok" and len(calls) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_answers_are_not_retried(status: int) -> None:
    call, calls = _flaky([_server_error(status)])
    with pytest.raises(kr8s.ServerError):
        with_retries(call, sleep=lambda _: pytest.fail("slept before a permanent error"))
    assert len(calls) == 1


def test_create_counts_already_exists_after_a_lost_answer_as_created() -> None:
    class Obj:
        def __init__(self, failures: list[BaseException]) -> None:
            self.create, self.calls = _flaky(failures)

    lost = Obj([httpx.ReadError("connection reset"), _server_error(409)])
    runner.create(lost)  # type: ignore[arg-type]
    assert len(lost.calls) == 2
    clash = Obj([_server_error(409)])  # on the first attempt, a real name clash
    with pytest.raises(kr8s.ServerError):
        runner.create(clash)  # type: ignore[arg-type]


def test_a_ticker_is_due_once_per_period(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_conformance import progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    ticker = progress.Ticker(15)
    seen = []
    for _ in range(8):
        now[0] += 5
        seen.append(ticker.due())
    assert seen == [False, False, True, False, False, True, False, False]

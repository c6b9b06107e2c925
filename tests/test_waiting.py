"""The waiting helper: returns the value once done; on timeout shows the last state and events."""

import itertools

import pytest

from gpu_conformance.waiting import WaitTimeout, wait_for


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

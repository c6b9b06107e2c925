"""The retrying transport every API request goes through: which answers are sent again, how long it
waits between tries, and that it gives up with the server's last answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from gpu_conformance.transport import RetryingTransport
from gpu_conformance.waiting import MAX_RETRY_AFTER_S

Answer = Callable[[httpx.Request], httpx.Response]


def _send(answers: list[Answer | BaseException], method: str = "GET", attempts: int = 6,
          ) -> tuple[httpx.Response | BaseException, list[str], list[float]]:
    """One request through a RetryingTransport whose server gives `answers` in turn (the last repeats)."""
    seen: list[str] = []
    slept: list[float] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.content.decode())
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer(request)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def go() -> httpx.Response | BaseException:
        transport = RetryingTransport(httpx.MockTransport(server), attempts=attempts, first_backoff=0.5,
                                      max_backoff=4.0, sleep=sleep)
        async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
            try:
                return await client.request(method, "/api/v1/pods", content=b'{"kind":"Pod"}' if method == "POST" else None)
            except httpx.HTTPError as exc:
                return exc

    return asyncio.run(go()), seen, slept


def status(code: int, headers: dict[str, str] | None = None) -> Answer:
    return lambda request: httpx.Response(code, headers=headers, json={"kind": "Status", "code": code})


OK = status(200)


def test_throttling_is_retried_after_the_servers_retry_after_capped() -> None:
    got, seen, slept = _send([status(429, {"Retry-After": "2"}), status(429, {"Retry-After": "600"}), OK])
    assert isinstance(got, httpx.Response) and got.status_code == 200
    assert len(seen) == 3 and slept == [2.0, MAX_RETRY_AFTER_S]


def test_server_errors_back_off_boundedly_then_hand_back_the_last_answer() -> None:
    got, seen, slept = _send([status(503), status(500), status(502), status(504)], attempts=4)
    assert isinstance(got, httpx.Response) and got.status_code == 504, "the caller sees the server's own last answer"
    assert len(seen) == 4 and len(slept) == 3
    assert all(0 < s <= 4.0 + 1.0 for s in slept)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422])
def test_answers_that_would_not_change_are_not_retried(code: int) -> None:
    got, seen, slept = _send([status(code), OK])
    assert isinstance(got, httpx.Response) and got.status_code == code
    assert len(seen) == 1 and slept == []


def test_a_post_is_sent_again_after_a_refused_connection_or_a_throttle_with_its_body() -> None:
    got, seen, _ = _send([httpx.ConnectError("refused"), status(503), OK], method="POST")
    assert isinstance(got, httpx.Response) and got.status_code == 200
    assert seen == ['{"kind":"Pod"}'] * 3, "the body is sent whole each time"


def test_a_post_whose_answer_was_lost_is_not_sent_again_by_the_transport() -> None:
    """It may have been applied: the caller decides (runner.create counts a 409 on its retry as created)."""
    got, seen, _ = _send([httpx.ReadError("connection reset"), OK], method="POST")
    assert isinstance(got, httpx.ReadError) and len(seen) == 1


def test_a_get_whose_answer_was_lost_is_sent_again() -> None:
    got, seen, _ = _send([httpx.RemoteProtocolError("peer closed"), httpx.ReadTimeout("slow"), OK])
    assert isinstance(got, httpx.Response) and got.status_code == 200 and len(seen) == 3

"""Every API request the suite sends goes through one retrying HTTP transport: a transient answer
(429 with its Retry-After, 5xx) or a lost connection is sent again with bounded exponential backoff,
so no check, fixture or wait has to handle the API server's weather on its own.

A request that may have reached the server is sent again only where that is safe: transport errors
are retried for idempotent methods, and for any method where the connection was never made.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import kr8s
from kr8s._async_utils import as_sync_func  # kr8s's bridge to its event loop (pinned <0.21)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_result, stop_after_attempt

from gpu_conformance.waiting import RETRY_STATUS, backoff_wait

# Requests whose answers stream (a watch, a followed log): never read ahead by the transport.
STREAMED = re.compile(r"(^|&)(watch|follow)=(true|1)(&|$)")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Never reached the server: safe to send again whatever the method.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def resendable(method: str, exc: BaseException) -> bool:
    """Whether a request that failed with `exc` (no answer) may be sent again."""
    if isinstance(exc, NOT_SENT):
        return True
    return method.upper() in IDEMPOTENT and isinstance(exc, httpx.TransportError)


class RetryingTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; answers with a RETRY_STATUS or lost connections are tried again
    (`attempts` in all); after the last attempt its answer (or error) is what the caller gets."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, attempts: int = 6, first_backoff: float = 0.5,
                 max_backoff: float = 10.0, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.inner = inner
        self.attempts, self.first_backoff, self.max_backoff = attempts, first_backoff, max_backoff
        self.sleep = sleep
        self.retried = 0  # requests sent again, over the transport's life

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "upgrade" in request.headers:  # a websocket (port-forward, exec): the caller owns the stream
            return await self.inner.handle_async_request(request)
        streamed = STREAMED.search(request.url.query.decode())

        async def once() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if response.status_code in RETRY_STATUS or not streamed:
                # Read whole here, so an answer cut off mid-body is a transport error retried like any
                # other (a stream is the caller's to read: a pod's log followed, a watch).
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
            return response

        def counted(state: RetryCallState) -> None:
            self.retried += 1

        extra = {"sleep": self.sleep} if self.sleep is not None else {}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=backoff_wait(self.first_backoff, self.max_backoff),
            retry=(retry_if_result(lambda r: r.status_code in RETRY_STATUS)
                   | retry_if_exception(lambda exc: resendable(request.method, exc))),
            before_sleep=counted,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome is not None else None,
            **extra,
        )
        return await retrying(once)

    async def aclose(self) -> None:
        await self.inner.aclose()


def install(api: kr8s.Api, **options: float) -> None:
    """Route every request of `api` through a RetryingTransport, also after kr8s renews its session
    (it does on a 401/403 to re-read credentials)."""
    create = api._create_session

    def wrap() -> None:
        session = api._session
        if session is not None and not isinstance(session._transport, RetryingTransport):
            session._transport = RetryingTransport(session._transport, **options)  # type: ignore[arg-type]

    async def create_retrying() -> None:
        await create()
        wrap()

    api._create_session = create_retrying  # type: ignore[method-assign]
    wrap()  # a session kr8s made already


LIST_PAGE = 500
T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One consistent read of a collection: its objects (plain dicts with kind and apiVersion, or what
    the listing converted them to), the collection's resourceVersion (where a watch would start) and the
    requests it took."""

    items: list[T]
    resource_version: str
    pages: int


def _as_is(obj: dict[str, Any]) -> dict[str, Any]:
    return obj


async def list_pages(api: kr8s.Api, resource: str, namespace: str | None = None, *,
                     params: Mapping[str, str] | None = None, group: str = "", version: str = "v1",
                     convert: Callable[[dict[str, Any]], T] = _as_is,  # type: ignore[assignment]
                     ) -> Listing[T]:
    """Every object of `resource` in `namespace` (None or kr8s.ALL: every namespace), read LIST_PAGE at a
    time on kr8s's session; `params` are the list's own (labelSelector, fieldSelector). `convert` is
    applied page by page: only one page of whole objects is in memory at a time."""
    where = None if namespace in (None, kr8s.ALL) else namespace
    items: list[T] = []
    more: dict[str, str] = {}
    pages = 0
    while True:
        pages += 1
        async with api.call_api("GET", version=version, base=f"/apis/{group}" if group else "/api", namespace=where,
                                url=resource, params={**(params or {}), "limit": str(LIST_PAGE), **more}) as resp:
            body = resp.json()
        kind, api_version = str(body.get("kind", "")).removesuffix("List"), body.get("apiVersion")
        meta = body.get("metadata") or {}
        items += [convert({**item, "kind": kind, "apiVersion": api_version}) for item in body.pop("items", None) or []]
        if not meta.get("continue"):
            return Listing(items, str(meta.get("resourceVersion", "")), pages)
        more = {"continue": str(meta["continue"])}


def list_raw(api: kr8s.Api, resource: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None, group: str = "", version: str = "v1",
             convert: Callable[[dict[str, Any]], T] = _as_is,  # type: ignore[assignment]
             ) -> list[T]:
    """Every object of `resource` as plain dicts (with kind and apiVersion), or as `convert` makes each,
    read in pages; `namespace` None or kr8s.ALL: every namespace. kr8s's own listing wraps each object in
    a Box, about 4 ms a pod: a cost that grows with the cluster, paid on every look at it."""
    params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
    listing = as_sync_func(list_pages)(api, resource, namespace, params=params, group=group, version=version,
                                       convert=convert)
    return listing.items

"""Objects (pods, or nodes) as the API server reports them, kept current by one list and then a watch: a
wave of pods is followed without listing every pod again on each look. No pytest here.

The watch resumes from the last resourceVersion after a dropped stream and lists again after 410 Gone.
Where watching is not allowed (an identity without the `watch` verb on pods) or not working, each look
is a list, as before watches were used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import anyio
import httpx
import kr8s
from kr8s._async_utils import Portal  # kr8s's event loop (pinned <0.21), where its requests run

from gpu_conformance import transport

T = TypeVar("T")
Ref = tuple[str, str]  # (namespace, name)

# The API server ends a watch after this long; it is opened again from where it stopped.
WATCH_SECONDS = 60
# No line for this long (bookmarks come about once a minute): the stream is taken for dead.
READ_TIMEOUT_S = WATCH_SECONDS + 30
# Statuses that mean "this identity may not watch pods here": looks become lists for good.
NOT_ALLOWED = (401, 403, 405)


class Watch(Generic[T]):
    """Pods (or another core collection: `resource`) of one namespace or every namespace, by label selector,
    converted by `convert`, by (namespace, name); a node's namespace is "". A context manager: the watch runs
    on kr8s's event loop while it is open."""

    def __init__(self, api: kr8s.Api, namespace: str | None, label_selector: str | None,
                 convert: Callable[[Mapping[str, Any]], T], *, resource: str = "pods") -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.convert = convert
        self._lock = threading.Lock()
        self._states: dict[Ref, T] = {}
        self._live = False  # the cache reflects the server (listed, and the stream is open or resuming)
        self._polling = False  # watching is not allowed: every look is a list
        self._future: Future[None] | None = None
        self.requests = 0  # lists and watches opened (for tests and benchmarks)
        self.relists = 0
        self.last_problem = ""

    def __enter__(self) -> Watch[T]:
        portal = Portal()
        portal.call(anyio.sleep, 0)  # the loop is up (kr8s starts it with its first request)
        self._future = portal._portal.start_task_soon(self._run)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._future is not None:
            self._future.cancel()

    def states(self) -> dict[Ref, T]:
        """The pods as last reported; a list request where the watch is not (yet) live. Transient API
        trouble is raised (kr8s.ServerError, kr8s.APITimeoutError, httpx.TransportError)."""
        with self._lock:
            if self._live and not self._polling:
                return dict(self._states)
        items, _ = Portal().call(self._list)
        return items

    @property
    def watching(self) -> bool:
        with self._lock:
            return self._live and not self._polling

    def _params(self, **extra: str) -> dict[str, str]:
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        return {**params, **extra}

    async def _list(self) -> tuple[dict[Ref, T], str]:
        """Every pod, converted (one consistent snapshot, read and converted page by page), and its resourceVersion."""
        listing = await transport.list_pages(self.api, self.resource, self.namespace or None, params=self._params(),
                                             convert=lambda raw: (_ref(raw), self.convert(raw)))
        self.requests += listing.pages
        if not listing.resource_version:
            raise ValueError("the pod list came without a resourceVersion")
        return dict(listing.items), listing.resource_version

    async def _run(self) -> None:
        since: str | None = None
        failures = 0
        while True:
            try:
                if since is None:
                    items, since = await self._list()
                    with self._lock:
                        self._states = items
                        self._live = True
                since = await self._watch(since)
                failures = 0
                if since is None:
                    self.relists += 1
            except _Refused as exc:
                with self._lock:
                    self._polling = True
                self.last_problem = str(exc)
                return
            except (kr8s.ServerError, kr8s.APITimeoutError, httpx.TransportError, ValueError, KeyError) as exc:
                # A dropped stream or a failed list: resume from where the stream stopped, after a pause.
                failures += 1
                self.last_problem = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._live = since is not None and failures < 3
                await anyio.sleep(min(0.2 * 2 ** failures, 5.0))
            except Exception as exc:  # noqa: BLE001 - never a stale cache: anything unforeseen means lists
                with self._lock:
                    self._polling = True
                self.last_problem = f"{type(exc).__name__}: {exc} (each look is a list from now on)"
                return

    async def _watch(self, since: str) -> str | None:
        """Follow the stream from `since`; the resourceVersion to resume from when it ends, None after 410 Gone."""
        self.requests += 1
        params = self._params(watch="true", resourceVersion=since, allowWatchBookmarks="true",
                              timeoutSeconds=str(WATCH_SECONDS))
        timeout = httpx.Timeout(30.0, read=READ_TIMEOUT_S)
        async with self.api.call_api("GET", version="v1", base="/api", namespace=self.namespace or None, url=self.resource,
                                     params=params, stream=True, raise_for_status=False, timeout=timeout) as resp:
            if resp.status_code in NOT_ALLOWED:
                raise _Refused(f"watching {self.resource} is not allowed (HTTP {resp.status_code}): each look is a list")
            if resp.status_code == 410:
                return None
            if resp.is_error:
                await resp.aread()
                raise kr8s.ServerError(f"watch answered HTTP {resp.status_code}", response=resp)
            with self._lock:
                self._live = True
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise kr8s.ServerError(f"watch error: {obj.get('message', obj)}", response=None)
                since = str(obj["metadata"]["resourceVersion"])
                if kind == "BOOKMARK":
                    continue
                ref = _ref(obj)
                with self._lock:
                    if kind == "DELETED":
                        self._states.pop(ref, None)
                    else:
                        self._states[ref] = self.convert(obj)
        return since


def _ref(obj: Mapping[str, Any]) -> Ref:
    meta = obj["metadata"]
    return str(meta.get("namespace", "")), str(meta["name"])


class _Refused(Exception):
    """The API server does not let this identity watch pods."""

"""A fault-injecting front for the simulated cluster's API server: the suite talks plain HTTP to it on
loopback, it forwards each request to kube-apiserver with the admin identity, and answers the
requests a Fault matches with that fault instead (an error status with Retry-After, a late answer,
an answer cut off mid-body, a connection closed without an answer).

For the fault matrix (gpu_conformance.sim.faults) only: not a Kubernetes implementation, no watches
and no upgrades (port-forward, exec) pass through it.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

# Watch requests: streamed through as their events come.
WATCH = re.compile(r"[?&]watch=(true|1)(&|$)")
# Request headers passed on to kube-apiserver (never an Authorization: the proxy has its own identity).
FORWARDED = ("Content-Type", "Accept", "User-Agent")


@dataclass(frozen=True)
class Fault:
    """Requests matching `match` (a regex searched in "METHOD /path?query"): the first `after` pass,
    the next `times` get the fault, the rest pass again."""

    name: str
    match: str
    times: int
    after: int = 0
    status: int | None = None  # answer this status (a Kubernetes Status body) instead of forwarding
    reason: str = ""  # the Status body's reason (e.g. AlreadyExists) and message, where they matter
    message: str = ""
    retry_after: int | None = None
    delay_s: float = 0.0  # forward, but answer this much later
    cut: bool = False  # forward, send the headers and half the body, close the connection
    drop: bool = False  # close the connection without an answer


class FaultProxy:
    """A running proxy (a context manager); `injected` counts the faults given, by name."""

    def __init__(self, upstream: str, pki_dir: Path, faults: list[Fault], identity: str = "admin") -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.injected: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.closed = False
        tls = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        tls.load_cert_chain(str(pki_dir / f"{identity}.crt"), str(pki_dir / f"{identity}.key"))
        self._client = httpx.Client(verify=tls, timeout=60)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for the proxy (no credentials: the proxy holds the identity)."""
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fault-proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "fault-proxy", "user": {}}],
            "contexts": [{"name": "fault-proxy", "context": {"cluster": "fault-proxy", "user": "fault-proxy"}}],
            "current-context": "fault-proxy",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def pick(self, request_line: str) -> Fault | None:
        """The fault this request gets, if any (counted)."""
        with self._lock:
            for fault in self.faults:
                if not re.search(fault.match, request_line):
                    continue
                self._seen[fault.name] += 1
                if fault.after < self._seen[fault.name] <= fault.after + fault.times:
                    self.injected[fault.name] += 1
                    return fault
            return None

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        return self._client.request(method, self.upstream + path, headers=headers, content=body or None)


def _status_body(code: int, reason: str = "", message: str = "") -> bytes:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
              "message": message or f"fault injected by the gpu-conformance fault proxy (HTTP {code})"}
    return json.dumps({**status, "reason": reason} if reason else status).encode()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _answer(self, code: int, body: bytes, headers: dict[str, str], cut: bool = False) -> None:
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if cut else body)
            if cut:
                self.wfile.flush()
                self._close()

        def _close(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _stream(self, headers: dict[str, str], cut: bool) -> None:
            """A watch: its events passed on as they come (chunked); with `cut`, the connection is closed
            after the first event, as a load balancer dropping a long request would."""
            try:
                with proxy._client.stream("GET", proxy.upstream + self.path, headers=headers, timeout=None) as resp:
                    self.send_response(resp.status_code)
                    self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for line in resp.iter_lines():
                        data = (line + "\n").encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        if cut:
                            self._close()
                            return
                    self.wfile.write(b"0\r\n\r\n")
            except (httpx.HTTPError, OSError):
                self._close()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy.pick(f"{self.command} {self.path}")
            if fault is not None and fault.drop:
                self._close()
                return
            if fault is not None and fault.status is not None:
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                self._answer(fault.status, _status_body(fault.status, fault.reason, fault.message), {"Content-Type": "application/json", **extra})
                return
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
                if proxy.closed:  # the run ended while its request was held
                    self._close()
                    return
            headers = {k: v for k in FORWARDED if (v := self.headers.get(k))}
            if WATCH.search(self.path):
                self._stream(headers, cut=fault is not None and fault.cut)
                return
            try:
                resp = proxy.forward(self.command, self.path, headers, body)
            except httpx.HTTPError as exc:
                self._answer(502, _status_body(502), {"Content-Type": "application/json", "X-Proxy-Error": type(exc).__name__})
                return
            kept = {k: v for k in ("Content-Type", "Retry-After") if (v := resp.headers.get(k))}
            self._answer(resp.status_code, resp.content, kept, cut=fault is not None and fault.cut)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler

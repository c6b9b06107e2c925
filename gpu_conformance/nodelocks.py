"""Who may use a node now: checks that disrupt a node (delete its device plugin, reboot it) take it
exclusively; everything that runs pods on a node or reads its allocatable GPUs takes it shared.

The locks are files under one directory per cluster (keyed by its API server URL) on this machine,
so xdist workers of one run and concurrent runs from this machine against the same cluster see the
same locks. `fcntl.flock` releases them when the process dies, however it dies. Within one process
the locks are re-entrant: a check holding a node exclusively may run its own pods there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from gpu_conformance.progress import say
from gpu_conformance.waiting import wait_for

Mode = Literal["shared", "exclusive"]
# A reboot may hold a node for many minutes: others wait for it rather than fail.
DEFAULT_WAIT_S = 3600.0
DISRUPTED_FILE = "disrupted.jsonl"


class LockOrderError(RuntimeError):
    """This process asked for a node exclusively while it holds the node shared (a suite bug)."""


def cluster_dir(server: str) -> Path:
    """This machine's lock directory for the cluster at `server`."""
    key = hashlib.sha256(server.encode()).hexdigest()[:16]
    # Per user, private: another user's directory in the shared temp dir can neither block nor steer these.
    base = Path(tempfile.gettempdir()) / f"gpu-conformance-locks-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    if base.is_symlink() or base.stat().st_uid != os.getuid():
        raise RuntimeError(f"{base} is not this user's own directory")
    path = base / key
    path.mkdir(exist_ok=True)
    return path


class NodeLocks:
    """Shared and exclusive node locks for one cluster, re-entrant within this process."""

    def __init__(self, server: str) -> None:
        self.dir = cluster_dir(server) / "nodes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, tuple[Mode, int, int]] = {}  # node -> (mode, depth, fd)
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def shared(self, nodes: Iterable[str], timeout: float = DEFAULT_WAIT_S) -> Iterator[None]:
        """Hold every node in `nodes` shared (taken in name order, so two holders never deadlock)."""
        taken: list[str] = []
        try:
            for node in sorted(set(nodes)):
                self._acquire(node, "shared", timeout)
                taken.append(node)
            yield
        finally:
            for node in reversed(taken):
                self._release(node)

    @contextlib.contextmanager
    def exclusive(self, node: str, timeout: float = DEFAULT_WAIT_S) -> Iterator[None]:
        """Hold `node` alone: no other check of any run from this machine uses it meanwhile."""
        self._acquire(node, "exclusive", timeout)
        try:
            yield
        finally:
            self._release(node)

    def _acquire(self, node: str, mode: Mode, timeout: float) -> None:
        with self._mutex:
            held = self._held.get(node)
            if held is not None:
                if mode == "exclusive" and held[0] == "shared":
                    raise LockOrderError(f"node {node}: asked for it exclusively while this process holds it shared")
                self._held[node] = (held[0], held[1] + 1, held[2])
                return
        fd = os.open(self.dir / f"{node}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        op = fcntl.LOCK_SH if mode == "shared" else fcntl.LOCK_EX

        def attempt() -> bool:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not attempt():
            say(f"node {node}: waiting for another check that holds it {'exclusively' if mode == 'shared' else ''}".rstrip())
            try:
                wait_for(attempt, bool, what=f"the {mode} lock of node {node}", timeout=timeout,
                         describe=lambda _: "held by another check (a recovery check disrupting the node, or pods on it)",
                         max_interval=1.0)
            except BaseException:
                os.close(fd)
                raise
        with self._mutex:
            self._held[node] = (mode, 1, fd)

    def _release(self, node: str) -> None:
        with self._mutex:
            mode, depth, fd = self._held[node]
            if depth > 1:
                self._held[node] = (mode, depth - 1, fd)
                return
            del self._held[node]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_BY_SERVER: dict[str, NodeLocks] = {}
_REGISTRY = threading.Lock()


def for_server(server: str) -> NodeLocks:
    """This process's locks for the cluster at `server` (one object, so re-entrancy holds across callers)."""
    with _REGISTRY:
        if server not in _BY_SERVER:
            _BY_SERVER[server] = NodeLocks(server)
        return _BY_SERVER[server]


def record_disrupted(server: str, namespace: str, pod: str, run_id: str) -> None:
    """Note a pod the suite deletes on purpose (a device-plugin pod), for checks that watch for restarts."""
    line = json.dumps({"namespace": namespace, "pod": pod, "run_id": run_id, "at": time.time()})
    path = cluster_dir(server) / DISRUPTED_FILE
    with path.open("a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line + "\n")


def disrupted_pods(server: str) -> set[tuple[str, str]]:
    """(namespace, pod) of every pod the suite deleted on purpose on this cluster from this machine."""
    path = cluster_dir(server) / DISRUPTED_FILE
    if not path.is_file():
        return set()
    out: set[tuple[str, str]] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            rec = json.loads(line)
            out.add((str(rec["namespace"]), str(rec["pod"])))
    return out

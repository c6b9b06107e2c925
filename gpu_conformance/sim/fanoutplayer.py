"""The simulated kubelet of fan-out pods (gpu_conformance.fanout): kwok's stages leave them alone (but
for deletion), so the exporter process runs a `FanoutPlayer` in its reconcile loop that plays them as a
real node would run them.

A fan-out pod bound to a Ready node of the loaded scenarios starts when it was scheduled (when the
node is Ready again, where the player first saw it on a node that was not), and is due once its init
containers have run one after the other, each for its workload's duration on that node (the
RUNS_FOR_ANNOTATION where the pod names one, as kwok's completion stages read it). When due, one
status patch: every wrapped init container ended (exit code 0) with the wrapper's termination message,
`fanout.encode(code, output)` of what the workload prints there in pod mode (the same `behaviour()`
calls), and the pause container runs. A payload that hangs (keep_running), or outlives the wrapper's
GC_FANOUT_TIMEOUT_S, is ended there with exit code 124 and what it printed. A pod on a node that is
not Ready, or of no scenario, stays Pending, as under a dead kubelet.

`tick(now, nodes)` lists the fan-out pods (one request; the nodes too where the caller has not, and
only when a pod is new or due), `plan` decides what is due (pure, from the observed objects) and the
patches are applied: a pod is played at the first tick that sees it due, a tick or two (the exporter's
loop) after it was bound. A pod whose init containers have all ended is never patched again, after a
restart of the player too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kr8s
from kr8s.objects import Pod

from gpu_conformance import fanout, transport
from gpu_conformance.runner import concurrently
from gpu_conformance.sim.kwokconfig import POD_CIDR
from gpu_conformance.sim.outputs import behaviour
from gpu_conformance.sim.scenario import CONTAINERS, NodeSpec, Scenario
from gpu_conformance.workloads import RUNS_FOR_ANNOTATION, WORKLOAD_LABEL

NEVER = math.inf


@dataclass(frozen=True)
class Run:
    """How one wrapped init container runs on a node: the payload's exit code, output and run time."""

    name: str
    exit_code: int
    output: str
    seconds: float  # NEVER: it hangs and no wrapper timeout ends it


@dataclass(frozen=True)
class Play:
    """Patch a fan-out pod's status (status subresource): its init containers ended, its pause container runs."""

    namespace: str
    name: str
    uid: str
    status: Mapping[str, Any]


@dataclass(frozen=True)
class Clock:
    """When a pod's init containers started on its Ready node, and when they have all ended."""

    start: float
    due: float


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float | None:
    """A Go duration ("66s", "1m30s", "1.5s") in seconds; None where it is not one."""
    text = text.strip()
    if not text or _GO_DURATION.sub("", text):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(text))


def _timeout(container: Mapping[str, Any]) -> float | None:
    """The wrapper's timeout of an init container (its GC_FANOUT_TIMEOUT_S); None without one."""
    for env in container.get("env") or []:
        if env.get("name") == fanout.TIMEOUT_ENV:
            try:
                return float(env.get("value", ""))
            except ValueError:
                return None
    return None


def runs(pod: Mapping[str, Any], node: str, spec: NodeSpec) -> list[Run]:
    """How each init container of a fan-out pod runs on `node` (same outputs as the workload's pod in pod mode)."""
    meta, pod_spec = pod.get("metadata") or {}, pod.get("spec") or {}
    inits = pod_spec.get("initContainers") or []
    workload = str((meta.get("labels") or {}).get(WORKLOAD_LABEL) or (inits[0]["name"] if inits else ""))
    runs_for = go_duration(str((meta.get("annotations") or {}).get(RUNS_FOR_ANNOTATION, "")))
    out = []
    for c in inits:
        b = behaviour(workload, node, spec, c["name"] if workload in CONTAINERS else None)
        limit = _timeout(c)
        seconds = NEVER if b.keep_running else (runs_for if runs_for is not None else b.duration_s)
        if limit is not None and seconds > limit:  # the wrapper's `timeout` ends the payload
            out.append(Run(c["name"], fanout.TIMED_OUT, b.output or "", limit))
        else:
            out.append(Run(c["name"], b.exit_code, b.output or "", seconds))
    return out


def played(pod: Mapping[str, Any]) -> bool:
    """Whether every init container of the pod has ended (a kubelet, or this player, ran them)."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
    ended = {s.get("name") for s in (pod.get("status") or {}).get("initContainerStatuses") or []
             if (s.get("state") or {}).get("terminated")}
    return bool(names) and all(n in ended for n in names)


def _scheduled_at(pod: Mapping[str, Any]) -> float | None:
    """When the scheduler bound the pod (its PodScheduled condition), in wall-clock seconds."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "True" and c.get("lastTransitionTime"):
            try:
                return dt.datetime.fromisoformat(str(c["lastTransitionTime"])).timestamp()
            except ValueError:
                return None
    return None


def _ready(node: Mapping[str, Any] | None) -> bool:
    conds = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _host_ip(node: Mapping[str, Any]) -> str | None:
    addresses = (node.get("status") or {}).get("addresses") or []
    return next((str(a["address"]) for a in addresses if a.get("type") == "InternalIP" and a.get("address")), None)


def pod_ip(uid: str) -> str:
    """A stable address for a pod from the upper half of the sim's pod CIDR (kwok hands out the lower addresses first)."""
    net = ipaddress.ip_network(POD_CIDR, strict=False)
    half = net.num_addresses // 2
    return str(net[half + int(hashlib.sha256(uid.encode()).hexdigest(), 16) % (half - 2) + 1])


def stamp(t: float) -> str:
    """RFC 3339 at second resolution, as the kubelet (and kwok) writes times."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(pod: Mapping[str, Any], node: Mapping[str, Any], clock: Clock, plays: Sequence[Run]) -> dict[str, Any]:
    """The pod's status once its init containers ran back to back from `clock.start` and its pause container started."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    uid = str(meta.get("uid", ""))
    images = {c["name"]: c.get("image", "") for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
    t = clock.start
    inits = []
    for r in plays:
        end = t + r.seconds
        inits.append({
            "name": r.name, "image": images[r.name], "imageID": f"sim://{images[r.name]}",
            "containerID": f"sim://{uid}/{r.name}", "ready": True, "started": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": fanout.encode(r.exit_code, r.output),
                                     "startedAt": stamp(t), "finishedAt": stamp(end)}},
        })
        t = end
    due = stamp(clock.due)
    mains = [{"name": c["name"], "image": c.get("image", ""), "imageID": f"sim://{c.get('image', '')}",
              "containerID": f"sim://{uid}/{c['name']}", "ready": True, "started": True, "restartCount": 0,
              "state": {"running": {"startedAt": due}}} for c in spec.get("containers") or []]
    old = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    scheduled = (old.get("PodScheduled") or {}).get("lastTransitionTime") or stamp(clock.start)
    out: dict[str, Any] = {
        "phase": "Running",
        "startTime": stamp(clock.start),
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled},
            {"type": "Initialized", "status": "True", "lastTransitionTime": due},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": due},
            {"type": "Ready", "status": "True", "lastTransitionTime": due},
        ],
        "initContainerStatuses": inits,
        "containerStatuses": mains,
    }
    host = _host_ip(node)
    if host is not None:
        out |= {"hostIP": host, "hostIPs": [{"ip": host}]}
    ip = host if spec.get("hostNetwork") else pod_ip(uid)
    if ip is not None:
        out |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    return out


class FanoutPlayer:
    """Plays the fan-out pods bound to the nodes of the scenarios (see the module docstring)."""

    def __init__(self, api: kr8s.Api | None, scenarios: Sequence[Scenario]) -> None:
        self.api = api
        self.specs: dict[str, NodeSpec] = {n: spec for sc in scenarios for n, spec in sc.expanded()}
        self.clocks: dict[str, Clock] = {}  # pod UID -> its clock, while it waits to be played
        self.stalled: set[str] = set()  # pod UIDs first seen on a node that was not Ready (they start when it is)
        self.done: set[str] = set()  # pod UIDs played (until they disappear)

    def tick(self, now: float | None = None, nodes: Mapping[str, Mapping[str, Any]] | None = None,
             pods: Sequence[Mapping[str, Any]] | None = None) -> list[Play]:
        """Observe the fan-out pods (picked out of `pods`, or listed) and the nodes (unless given), patch
        those due; returns the patches applied."""
        assert self.api is not None
        now = time.time() if now is None else now
        if pods is None:
            pods = transport.list_raw(self.api, "pods", label_selector=fanout.FANOUT_LABEL)
        pods = [p for p in pods if fanout.FANOUT_LABEL in (p["metadata"].get("labels") or {})]
        if nodes is None:
            nodes = {n["metadata"]["name"]: n for n in transport.list_raw(self.api, "nodes")} if self.wants_nodes(now, pods) else {}
        # Many pods fall due together (a DaemonSet's pods on every node): patched side by side, as kubelets would.
        return [play for play in concurrently(self._apply, self.plan(now, pods, nodes)) if play is not None]

    def _apply(self, play: Play) -> Play | None:
        assert self.api is not None
        obj = Pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": play.name, "namespace": play.namespace}},
                  api=self.api)
        try:
            obj.patch({"metadata": {"uid": play.uid}, "status": dict(play.status)}, subresource="status")
        except kr8s.NotFoundError:
            return None  # deleted meanwhile
        except Exception as exc:  # noqa: BLE001 - a long-running helper: try this pod again next tick
            self.done.discard(play.uid)
            print(f"fan-out player: patching pod {play.namespace}/{play.name} failed, retrying: "
                  f"{type(exc).__name__}: {exc}", flush=True)
            return None
        return play

    def _candidates(self, pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Pods bound to a scenario node, not being deleted, not played yet."""
        return [p for p in pods
                if (p.get("spec") or {}).get("nodeName") in self.specs and not p["metadata"].get("deletionTimestamp")
                and p["metadata"].get("uid") not in self.done and not played(p)]

    def wants_nodes(self, now: float, pods: Sequence[Mapping[str, Any]]) -> bool:
        """Whether `plan` needs the nodes now: a candidate pod is new (its clock starts on a Ready node) or due."""
        for p in self._candidates(pods):
            clock = self.clocks.get(p["metadata"]["uid"])
            if clock is None or now >= clock.due:
                return True
        return False

    def plan(self, now: float, pods: Sequence[Mapping[str, Any]], nodes: Mapping[str, Mapping[str, Any]]) -> list[Play]:
        """The patches due at `now` (wall-clock seconds), given the observed fan-out pods and nodes (by name); updates the state."""
        uids = {str(p["metadata"].get("uid")) for p in pods}
        self.clocks = {u: c for u, c in self.clocks.items() if u in uids}
        self.stalled &= uids
        self.done &= uids
        out = []
        for pod in self._candidates(pods):
            meta = pod["metadata"]
            uid, node = str(meta["uid"]), str(pod["spec"]["nodeName"])
            observed = nodes.get(node)
            if not _ready(observed):
                if uid not in self.clocks:
                    self.stalled.add(uid)
                continue  # a dead kubelet: nothing runs (a clock already started waits too)
            assert observed is not None
            clock = self.clocks.get(uid)
            if clock is not None and now < clock.due:
                continue
            plays = runs(pod, node, self.specs[node])
            if clock is None:
                start = now if uid in self.stalled else min(now, _scheduled_at(pod) or now)
                clock = self.clocks[uid] = Clock(start, start + sum(r.seconds for r in plays))
                if now < clock.due:
                    continue
            out.append(Play(str(meta["namespace"]), str(meta["name"]), uid, status(pod, observed, clock, plays)))
            self.done.add(uid)
            del self.clocks[uid]
        return out

"""Run workloads on nodes: namespaces, pods, waiting and evidence. No pytest here."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import kr8s
from kr8s.objects import Namespace, Pod

from gpu_conformance.waiting import WaitTimeout, wait_for
from gpu_conformance.workloads import MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, WORKLOAD_LABEL, pod_name, render

# Transient API trouble while polling counts as "not yet", not as an answer.
TRANSIENT = (kr8s.ServerError, kr8s.APITimeoutError, httpx.TransportError)
# The controller-manager creates the default ServiceAccount within seconds of a namespace.
NAMESPACE_READY_TIMEOUT_S = 60.0


def new_run_id() -> str:
    """A short random id that labels everything one run creates."""
    return secrets.token_hex(4)


def _say(msg: str) -> None:
    print(f"[gpu-conformance] {msg}", file=sys.stderr, flush=True)


def create_namespace(api: kr8s.Api, purpose: str, run_id: str) -> str:
    """Create a labelled namespace `gc-<purpose>-<random>` and wait until pods can be created in it."""
    ns = Namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "generateName": f"gc-{purpose}-"[:58],
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, RUN_LABEL: run_id},
            },
        },
        api=api,
    )
    ns.create()
    name = str(ns.name)
    wait_for(
        lambda: [sa.name for sa in api.get("serviceaccounts", "default", namespace=name)],
        bool,
        what=f"the default ServiceAccount in namespace {name}",
        timeout=NAMESPACE_READY_TIMEOUT_S,
        tolerate=(kr8s.NotFoundError, *TRANSIENT),
    )
    return name


def delete_namespace(api: kr8s.Api, name: str) -> None:
    """Delete a namespace without waiting (its pods go with it)."""
    try:
        Namespace({"metadata": {"name": name}}, api=api).delete(propagation_policy="Background")
    except kr8s.NotFoundError:
        pass


def delete_run_namespaces(api: kr8s.Api, run_id: str | None = None) -> list[str]:
    """Delete every namespace this suite created (of one run, or of any run); returns their names."""
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}" + (f",{RUN_LABEL}={run_id}" if run_id else "")
    names = [str(ns.name) for ns in api.get("namespaces", label_selector=selector)]
    for name in names:
        delete_namespace(api, name)
    return names


@dataclass(frozen=True)
class PodState:
    """The verdict-relevant part of a pod's status."""

    phase: str
    exit_code: int | None = None
    unschedulable: str | None = None
    reason: str = ""

    @property
    def decided(self) -> bool:
        """Finished (Succeeded/Failed) or refused by the scheduler: the verdict is the cluster's."""
        return self.phase in ("Succeeded", "Failed") or self.unschedulable is not None


ABSENT = PodState("Absent", reason="pod not found")


def pod_state(raw: Mapping[str, Any]) -> PodState:
    """Convert a Pod object (as a dict) into its PodState."""
    status = raw.get("status", {}) or {}
    exit_code = None
    reason = str(status.get("reason", "") or "")
    for cs in status.get("containerStatuses", []) or []:
        state = cs.get("state", {}) or {}
        if "terminated" in state:
            exit_code = state["terminated"].get("exitCode")
            reason = reason or str(state["terminated"].get("reason", ""))
        elif "waiting" in state:
            w = state["waiting"]
            reason = reason or f"{w.get('reason', '')}: {w.get('message', '')}".strip(": ")
    unschedulable = None
    for cond in status.get("conditions", []) or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            unschedulable = str(cond.get("message", "Unschedulable"))
    return PodState(str(status.get("phase", "Unknown")), exit_code, unschedulable, reason)


@dataclass(frozen=True)
class PodOutcome:
    """What happened to one workload pod, with the evidence: logs, events and the submitted spec."""

    node: str
    pod: str
    namespace: str
    state: PodState
    # Evidence: kept out of repr so assertion introspection stays readable.
    logs: str = field(default="", repr=False)
    events: tuple[str, ...] = field(default=(), repr=False)
    spec: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def decided(self) -> bool:
        return self.state.decided

    @property
    def succeeded(self) -> bool:
        return self.state.phase == "Succeeded" and self.state.exit_code in (0, None)

    def describe(self) -> str:
        st = self.state
        parts = [f"pod {self.namespace}/{self.pod} phase {st.phase}"]
        if st.exit_code is not None:
            parts.append(f"exit code {st.exit_code}")
        if st.unschedulable:
            parts.append(f"unschedulable: {st.unschedulable}")
        elif st.reason:
            parts.append(st.reason)
        return ", ".join(parts)


def events_by_object(api: kr8s.Api, namespace: str) -> dict[str, list[str]]:
    """Recent events in a namespace, as lines, grouped by the involved object's name."""
    out: dict[str, list[str]] = {}
    try:
        events = list(api.get("events", namespace=namespace))
    except TRANSIENT as exc:
        return {"": [f"(events unavailable: {exc})"]}
    for ev in sorted(events, key=lambda e: str(e.raw.get("lastTimestamp") or e.raw.get("eventTime") or "")):
        raw = ev.raw
        obj = raw.get("involvedObject", {}).get("name", "")
        out.setdefault(obj, []).append(f"{raw.get('type', '')} {raw.get('reason', '')}: {raw.get('message', '')}".strip())
    return out


def _pod_logs(api: kr8s.Api, namespace: str, name: str) -> str:
    try:
        pod = Pod.get(name, namespace=namespace, api=api)
        return "\n".join(pod.logs(timeout=30))
    except (kr8s.NotFoundError, *TRANSIENT) as exc:
        return f"(logs unavailable: {type(exc).__name__}: {exc})"


def run_per_node(
    api: kr8s.Api,
    workload: str,
    nodes: Sequence[str],
    *,
    namespace: str,
    run_id: str,
    timeout: float,
    images: Mapping[str, str] | None = None,
    gpus: int = 1,
) -> dict[str, PodOutcome]:
    """Create one pod of `workload` pinned to each node, wait until each is decided, collect evidence."""
    started = time.monotonic()
    specs: dict[str, dict[str, Any]] = {}
    for node in nodes:
        for obj in render(workload, namespace=namespace, node=node, run_id=run_id, images=images, gpus=gpus):
            Pod(obj, api=api).create()
            specs[node] = obj
    _say(f"{workload}: created {len(specs)} pod(s) in {namespace}; waiting up to {timeout:.0f}s")
    by_name = {pod_name(workload, n): n for n in nodes}

    def observe() -> dict[str, PodState]:
        pods = api.get("pods", namespace=namespace, label_selector=f"{WORKLOAD_LABEL}={workload}")
        return {str(p.name): pod_state(p.raw) for p in pods}

    def undecided(states: Mapping[str, PodState]) -> list[str]:
        return [n for n in by_name if not states.get(n, ABSENT).decided]

    def summary(states: Mapping[str, PodState]) -> str:
        left = undecided(states)
        shown = ", ".join(f"{n}={states.get(n, ABSENT).phase}" for n in left[:10])
        return f"{len(by_name) - len(left)}/{len(by_name)} decided; undecided: {shown}"

    try:
        states = wait_for(observe, lambda st: not undecided(st), what=f"{workload} pods to finish",
                          timeout=timeout, describe=summary, tolerate=TRANSIENT, max_interval=2.0)
    except WaitTimeout as exc:
        # Not every pod was decided in time: return what we saw; callers treat undecided pods as errors.
        states = exc.last or {}
    events = events_by_object(api, namespace)
    outcomes: dict[str, PodOutcome] = {}
    for name, node in by_name.items():
        state = states.get(name, ABSENT)
        logs = _pod_logs(api, namespace, name) if state.phase in ("Succeeded", "Failed", "Running") else ""
        outcomes[node] = PodOutcome(node, name, namespace, state, logs, tuple(events.get(name, [])), specs[node])
    decided = sum(o.decided for o in outcomes.values())
    _say(f"{workload}: {decided}/{len(outcomes)} pod(s) decided in {time.monotonic() - started:.1f}s")
    return outcomes

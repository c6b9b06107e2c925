"""The simulated kubelet's device manager: what a node does when its device plugin restarts or the
node reboots, per the scenario's `recovery` settings.

kwok plays the kubelets but knows nothing of device plugins, so the exporter process runs a
`NodeAgent` in its reconcile loop. For every GPU node of the loaded scenarios it
- watches the node's device-plugin pod: when that pod is deleted or replaced, allocatable
  nvidia.com/gpu drops to 0, and comes back `plugin_reregister_s` after a replacement is Running;
- answers reboot requests (`gpu-conformance sim reboot NODE` sets REBOOT_REQUESTED): NotReady at once
  (the not-ready label kwok's stages act on, and the Ready condition set False where kwok is late) with
  allocatable 0, Ready again after `reboot_down_s` (the label removed: kwok turns it Ready),
  then `strands_after_reboot` pods fail admission, and allocatable returns `reboot_allocatable_s` later.

Timers are deadlines in the agent's state: `tick(now)` observes the cluster, `plan` decides what is
due (pure, from the observed objects), and the resulting actions are applied. Node labels and
allocatable are level-triggered: the agent re-applies them until it observes what it wants.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import kr8s
from kr8s.objects import Node

from gpu_conformance import transport
from gpu_conformance.runner import create_object
from gpu_conformance.sim import stackobjects
from gpu_conformance.sim.kwokconfig import COMPONENT_LABEL, NOT_READY_LABEL
from gpu_conformance.sim.scenario import NodeSpec, Scenario

REBOOT_REQUESTED = "sim.gpu-conformance.io/reboot-requested"
REBOOT_HANDLED = "sim.gpu-conformance.io/reboot-handled"
GPU = "nvidia.com/gpu"
# The device plugin's component name (stackobjects.components) in every flavour.
DEVICE_PLUGIN = "device-plugin"
NEVER = math.inf

Phase = Literal["idle", "down", "booting", "up"]


@dataclass(frozen=True)
class SetAllocatable:
    """Patch the node's allocatable nvidia.com/gpu (status subresource)."""

    node: str
    value: str


@dataclass(frozen=True)
class PatchMeta:
    """Merge-patch the node's labels and annotations (None removes a key)."""

    node: str
    labels: Mapping[str, str | None] = field(default_factory=dict)
    annotations: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class SetNotReady:
    """Turn the node's Ready condition (at index `index` of its conditions) False (status subresource)."""

    node: str
    index: int


@dataclass(frozen=True)
class CreateStranded:
    """Create bare GPU pods on the node that kwok fails with UnexpectedAdmissionError."""

    node: str
    manifests: tuple[dict[str, Any], ...]


Action = SetAllocatable | PatchMeta | SetNotReady | CreateStranded


@dataclass
class NodeState:
    """What the agent remembers of one GPU node."""

    node: str
    spec: NodeSpec
    scenario: Scenario
    plugin_uid: str | None = None  # the device-plugin pod the node's GPUs are registered through
    plugin_down: bool = False  # lost; waiting for a Running replacement and plugin_back_at
    plugin_back_at: float | None = None  # when a Running replacement has re-registered (NEVER: not at all)
    reboot: str | None = None  # the last reboot request handled
    phase: Phase = "idle"
    due: float = NEVER  # when the current reboot phase ends (down: Ready again; up: allocatable back)
    went_down: bool = False  # seen NotReady in this reboot (a reboot never goes unseen, however short)
    label_ours: bool = False  # the agent added the not-ready label (and so may remove it)
    restore: bool = False  # allocatable must go back to the scenario's value
    seen: bool = False  # observed once (a restarted agent restores what its predecessor left at 0)

    @property
    def gpus_gone(self) -> bool:
        return self.plugin_down or self.phase != "idle"


def _ready_index(node: Mapping[str, Any]) -> int | None:
    """Where the node's Ready condition is among its conditions when it is True; None when it is not True."""
    conds = (node.get("status") or {}).get("conditions") or []
    return next((i for i, c in enumerate(conds) if c.get("type") == "Ready" and c.get("status") == "True"), None)


def _ready(node: Mapping[str, Any]) -> bool:
    return _ready_index(node) is not None


def _age(pod: Mapping[str, Any]) -> tuple[str, str]:
    """Sort key: oldest first (creation time, then UID)."""
    return str(pod["metadata"].get("creationTimestamp", "")), str(pod["metadata"]["uid"])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def stranded_after_reboot(sc: Scenario, node: str, request: str, count: int) -> tuple[dict[str, Any], ...]:
    """The pods that fail admission after one reboot; names keyed on the request, so never reused."""
    return tuple(stackobjects.stranded_pod(sc, node, i, tag=f"reboot-{_digest(request)}") for i in range(count))


class NodeAgent:
    """Plays the device manager of every GPU node of the scenarios (see the module docstring)."""

    def __init__(self, api: kr8s.Api | None, scenarios: Sequence[Scenario]) -> None:
        self.api = api
        self.nodes = {n: NodeState(n, spec, sc) for sc in scenarios for n, spec in sc.expanded() if spec.allocatable > 0}

    def tick(self, now: float | None = None, nodes: Mapping[str, Mapping[str, Any]] | None = None,
             pods: Sequence[Mapping[str, Any]] | None = None) -> list[Action]:
        """Observe the nodes (by name) and pods (device-plugin pods are picked out), unless given; act on what
        is due; returns the actions applied."""
        if not self.nodes:
            return []
        assert self.api is not None
        if nodes is None:
            nodes = {n["metadata"]["name"]: n for n in transport.list_raw(self.api, "nodes")}
        nodes = {name: node for name, node in nodes.items() if name in self.nodes}
        if pods is None:
            pods = transport.list_raw(self.api, "pods", label_selector=f"{COMPONENT_LABEL}={DEVICE_PLUGIN}")
        pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == DEVICE_PLUGIN]
        actions = self.plan(time.monotonic() if now is None else now, nodes, pods)
        for action in actions:
            self._apply(action)
        return actions

    def plan(self, now: float, nodes: Mapping[str, Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> list[Action]:
        """The actions due at `now`, given the observed nodes (by name) and device-plugin pods; updates the state."""
        by_node: dict[str, list[Mapping[str, Any]]] = {}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node in self.nodes and not pod["metadata"].get("deletionTimestamp"):
                by_node.setdefault(node, []).append(pod)
        actions: list[Action] = []
        for name, st in self.nodes.items():
            observed = nodes.get(name)
            if observed is None:
                continue
            if not st.seen:
                st.seen = True
                st.restore = ((observed.get("status") or {}).get("allocatable") or {}).get(GPU) != str(st.spec.allocatable)
            live = sorted(by_node.get(name, []), key=_age)
            self._plugin(st, now, live[-1] if live else None)
            actions += self._reboot(st, now, observed)
            actions += self._converge(st, observed)
        return actions

    def _plugin(self, st: NodeState, now: float, current: Mapping[str, Any] | None) -> None:
        """Device-plugin restarts: lost when its pod goes or is replaced; back after a replacement runs."""
        uid = current["metadata"]["uid"] if current is not None else None
        if st.plugin_uid is None:
            st.plugin_uid = uid  # first sight: the plugin the node started with
            return
        if uid != st.plugin_uid:
            st.plugin_down, st.plugin_back_at = True, None
            if uid is not None:
                st.plugin_uid = uid
        if not st.plugin_down or current is None or uid != st.plugin_uid:
            return
        if st.plugin_back_at is None and (current.get("status") or {}).get("phase") == "Running":
            delay = st.spec.recovery.plugin_reregister_s
            st.plugin_back_at = NEVER if delay is None else now + delay
        if st.plugin_back_at is not None and now >= st.plugin_back_at:
            st.plugin_down, st.plugin_back_at = False, None
            st.restore = True

    def _reboot(self, st: NodeState, now: float, node: Mapping[str, Any]) -> list[Action]:
        """Reboot requests and the phases of a reboot in progress."""
        meta = node.get("metadata") or {}
        annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        requested, handled = annotations.get(REBOOT_REQUESTED), annotations.get(REBOOT_HANDLED)
        rec = st.spec.recovery
        actions: list[Action] = []
        if requested and requested != st.reboot:
            if st.reboot is None and requested == handled:
                st.reboot = requested  # handled before this agent started: do not replay it
                if st.spec.ready and labels.get(NOT_READY_LABEL) == "true":
                    # ... but finish it: a node the scenario has Ready carries the label only for a reboot.
                    st.phase, st.due, st.label_ours, st.went_down = "down", now, True, False
            else:
                st.reboot = requested
                st.label_ours = st.label_ours if st.phase != "idle" else NOT_READY_LABEL not in labels
                st.phase, st.went_down = "down", False
                st.due = now + rec.reboot_down_s if rec.comes_back else NEVER
                actions.append(PatchMeta(st.node, annotations={REBOOT_HANDLED: requested}))
        if st.phase == "down" and not _ready(node):
            st.went_down = True
        if st.phase == "down" and now >= st.due and st.went_down:
            st.phase, st.due = "booting", NEVER
        elif st.phase == "booting" and st.label_ours and NOT_READY_LABEL not in labels and _ready(node):
            st.phase = "up"
            st.due = NEVER if rec.reboot_allocatable_s is None else now + rec.reboot_allocatable_s
            if rec.strands_after_reboot:
                assert st.reboot is not None
                pods = stranded_after_reboot(st.scenario, st.node, st.reboot, rec.strands_after_reboot)
                actions.append(CreateStranded(st.node, pods))
        elif st.phase == "up" and now >= st.due:
            st.phase, st.due = "idle", NEVER
            st.label_ours = False
            st.restore = True
        return actions

    def _converge(self, st: NodeState, node: Mapping[str, Any]) -> list[Action]:
        """Label, Ready and allocatable as the state wants them, where they differ from what is observed."""
        actions: list[Action] = []
        labels = (node.get("metadata") or {}).get("labels") or {}
        labelled = labels.get(NOT_READY_LABEL) == "true"
        if st.label_ours and (st.phase == "down") != labelled:
            actions.append(PatchMeta(st.node, labels={NOT_READY_LABEL: None if labelled else "true"}))
        # kwok's heartbeat stage also matches a Ready node that has the label (and may win for many seconds):
        # turn it NotReady here; with the label on, no kwok stage turns it Ready again.
        index = _ready_index(node)
        if st.phase == "down" and labelled and index is not None:
            actions.append(SetNotReady(st.node, index))
        allocatable = ((node.get("status") or {}).get("allocatable") or {}).get(GPU)
        if st.gpus_gone:
            st.restore = True  # whatever happens next, the scenario's value comes back at the end
            if allocatable != "0":
                actions.append(SetAllocatable(st.node, "0"))
        elif st.restore:
            wanted = str(st.spec.allocatable)
            if allocatable == wanted:
                st.restore = False
            else:
                actions.append(SetAllocatable(st.node, wanted))
        return actions

    def _apply(self, action: Action) -> None:
        assert self.api is not None
        if isinstance(action, CreateStranded):
            sc = self.nodes[action.node].scenario
            for manifest in (stackobjects.stranded_namespace(sc), *action.manifests):
                create_object(self.api, manifest, exist_ok=True)
            return
        node = Node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": action.node}}, api=self.api)
        if isinstance(action, SetAllocatable):
            node.patch({"status": {"allocatable": {GPU: action.value}}}, subresource="status")
        elif isinstance(action, SetNotReady):
            path = f"/status/conditions/{action.index}"
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            node.patch([{"op": "test", "path": f"{path}/type", "value": "Ready"},
                        {"op": "add", "path": f"{path}/status", "value": "False"},
                        {"op": "add", "path": f"{path}/reason", "value": "KubeletNotReady"},
                        {"op": "add", "path": f"{path}/message", "value": "node is rebooting (simulated)"},
                        {"op": "add", "path": f"{path}/lastTransitionTime", "value": now}], subresource="status", type="json")
        else:
            node.patch({"metadata": {"labels": dict(action.labels), "annotations": dict(action.annotations)}})


def request_reboot(api: kr8s.Api, node: str) -> str:
    """Ask the simulator's node agent to reboot a node; returns the request's value. kr8s.NotFoundError: no such node."""
    value = str(time.time_ns())
    Node.get(node, api=api).patch({"metadata": {"annotations": {REBOOT_REQUESTED: value}}})
    return value

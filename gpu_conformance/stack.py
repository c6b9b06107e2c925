"""The GPU software stack on the cluster: which device-plugin flavour runs, and the health of its
pods on each GPU node. DaemonSets are recognised by name and, for the GPU Operator, by their
ClusterPolicy owner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import kr8s

from gpu_conformance import transport

Flavour = Literal["nvidia-device-plugin", "gpu-operator", "gke"]

# Component -> DaemonSet name of each flavour (GPU Operator operands are also owned by a ClusterPolicy).
OPERATOR_OPERANDS: Mapping[str, str] = {
    "driver": "nvidia-driver-daemonset",
    "container-toolkit": "nvidia-container-toolkit-daemonset",
    "device-plugin": "nvidia-device-plugin-daemonset",
    "gpu-feature-discovery": "gpu-feature-discovery",
    "dcgm-exporter": "nvidia-dcgm-exporter",
    "validator": "nvidia-operator-validator",
}
GKE_COMPONENTS: Mapping[str, str] = {
    "device-plugin": "nvidia-gpu-device-plugin",
    "driver-installer": "nvidia-driver-installer",
}
# The node label with which a node opts out of an operand (`nvidia.com/gpu.deploy.<name>=false`).
OPERAND_DEPLOY_LABEL = {c: f"nvidia.com/gpu.deploy.{'operator-validator' if c == 'validator' else c}" for c in OPERATOR_OPERANDS}
# Detection order when several flavours are present.
FLAVOURS: tuple[Flavour, ...] = ("gpu-operator", "gke", "nvidia-device-plugin")


@dataclass(frozen=True)
class DaemonSetRef:
    """A DaemonSet recognised as a component of a flavour."""

    namespace: str
    name: str
    flavour: Flavour
    component: str
    selector: Mapping[str, str]
    owner: str | None  # the owning ClusterPolicy, for GPU Operator operands


def classify(ds: Mapping[str, Any]) -> DaemonSetRef | None:
    """Recognise a DaemonSet object (as a dict) as a GPU-stack component, or None."""
    meta = ds.get("metadata", {})
    name = str(meta.get("name", ""))
    owners = [o for o in meta.get("ownerReferences", []) or [] if o.get("kind") == "ClusterPolicy"]
    selector = dict((ds.get("spec", {}).get("selector", {}) or {}).get("matchLabels", {}) or {})
    ns = str(meta.get("namespace", ""))
    if owners:
        comp = next((c for c, n in OPERATOR_OPERANDS.items() if name.startswith(n)), None)
        return DaemonSetRef(ns, name, "gpu-operator", comp, selector, owners[0]["name"]) if comp else None
    for comp, prefix in GKE_COMPONENTS.items():
        if name.startswith(prefix):
            return DaemonSetRef(ns, name, "gke", comp, selector, None)
    if "nvidia-device-plugin" in name:
        return DaemonSetRef(ns, name, "nvidia-device-plugin", "device-plugin", selector, None)
    return None


@dataclass(frozen=True)
class ComponentPod:
    """One stack pod on one node."""

    flavour: Flavour
    component: str
    daemonset: str  # namespace/name
    pod: str
    node: str
    ready: bool
    restarts: int
    reason: str

    def describe(self) -> str:
        state = "Ready" if self.ready else f"not Ready ({self.reason or 'no reason given'})"
        return f"{self.daemonset} pod {self.pod}: {state}, {self.restarts} restart(s)"


def component_pod(ref: DaemonSetRef, pod: Mapping[str, Any]) -> ComponentPod:
    """Convert a DaemonSet's pod (as a dict) into a ComponentPod."""
    status = pod.get("status", {}) or {}
    statuses = status.get("containerStatuses", []) or []
    conds = {c.get("type"): c.get("status") for c in status.get("conditions", []) or []}
    reasons = [
        (cs.get("state", {}).get("waiting") or cs.get("state", {}).get("terminated") or {}).get("reason", "")
        for cs in statuses
    ]
    return ComponentPod(
        flavour=ref.flavour,
        component=ref.component,
        daemonset=f"{ref.namespace}/{ref.name}",
        pod=str(pod.get("metadata", {}).get("name", "")),
        node=str(pod.get("spec", {}).get("nodeName", "")),
        ready=conds.get("Ready") == "True",
        restarts=sum(int(cs.get("restartCount", 0) or 0) for cs in statuses),
        reason=", ".join(r for r in reasons if r) or str(status.get("phase", "")),
    )


@dataclass(frozen=True)
class ClusterPolicyState:
    name: str
    state: str | None
    ready_condition: str | None
    message: str


def cluster_policy_state(cp: Mapping[str, Any]) -> ClusterPolicyState:
    status = cp.get("status", {}) or {}
    ready = next((c for c in status.get("conditions", []) or [] if c.get("type") == "Ready"), {})
    return ClusterPolicyState(str(cp.get("metadata", {}).get("name", "")), status.get("state"), ready.get("status"),
                              str(ready.get("message", "") or ready.get("reason", "")))


@dataclass(frozen=True)
class StackFacts:
    """The GPU stack as seen on the selected GPU nodes."""

    daemonsets: tuple[DaemonSetRef, ...]
    pods: tuple[ComponentPod, ...]
    cluster_policies: tuple[ClusterPolicyState, ...]

    def flavours(self) -> list[Flavour]:
        """Flavours with at least one pod on a selected node, most specific first."""
        return list(self._flavours)

    @cached_property
    def _flavours(self) -> tuple[Flavour, ...]:
        present = {p.flavour for p in self.pods}
        return tuple(f for f in FLAVOURS if f in present)

    @cached_property
    def by_node(self) -> Mapping[str, tuple[ComponentPod, ...]]:
        """The pods on each node (every check on a node asks: one pass over the pods, not one per check)."""
        out: dict[str, list[ComponentPod]] = {}
        for pod in self.pods:
            out.setdefault(pod.node, []).append(pod)
        return {node: tuple(pods) for node, pods in out.items()}

    def pods_on(self, node: str, flavour: Flavour, component: str | None = None) -> list[ComponentPod]:
        return [p for p in self.by_node.get(node, ()) if p.flavour == flavour and component in (None, p.component)]

    def components(self, flavour: Flavour, node_labels: Mapping[str, str] | None = None) -> list[str]:
        """Components of a flavour expected on a node (GPU Operator operands the node opts out of excluded)."""
        labels = node_labels or {}
        return sorted({d.component for d in self.daemonsets if d.flavour == flavour
                       and labels.get(OPERAND_DEPLOY_LABEL.get(d.component, ""), "true") != "false"})

    def owning_policies(self) -> list[str]:
        """ClusterPolicies owning operands that run on the selected nodes."""
        running = {p.daemonset for p in self.pods if p.flavour == "gpu-operator"}
        return sorted({d.owner for d in self.daemonsets if f"{d.namespace}/{d.name}" in running and d.owner})


def gather(api: kr8s.Api, nodes: Iterable[str]) -> StackFacts:
    """List GPU-stack DaemonSets cluster-wide, their pods on `nodes`, and the ClusterPolicies."""
    wanted = set(nodes)
    refs = [r for raw in transport.list_raw(api, "daemonsets", group="apps") if (r := classify(raw)) is not None]
    pods: list[ComponentPod] = []
    for ref in refs:
        if not ref.selector:
            continue
        selector = ",".join(f"{k}={v}" for k, v in sorted(ref.selector.items()))
        pods += [cp for cp in transport.list_raw(api, "pods", ref.namespace, label_selector=selector,
                                                 convert=lambda raw, ref=ref: component_pod(ref, raw))
                 if cp.node in wanted]
    try:
        policies = tuple(cluster_policy_state(cp.raw) for cp in api.get("clusterpolicies.nvidia.com"))
    except (kr8s.NotFoundError, kr8s.ServerError, ValueError):
        policies = ()  # the GPU Operator's CRD is not installed
    return StackFacts(tuple(refs), tuple(pods), policies)


def expected_flavour(facts: StackFacts, wanted: str) -> tuple[Flavour | None, str]:
    """The flavour to check (profile's choice, else the detected one) and why."""
    detected = facts.flavours()
    if wanted != "auto":
        return wanted, "named by the profile"  # type: ignore[return-value]
    if detected:
        return detected[0], f"detected ({', '.join(detected)} present)"
    looked = "GPU Operator operands (owned by a ClusterPolicy), nvidia-gpu-device-plugin (GKE), *nvidia-device-plugin*"
    return None, f"no GPU-stack DaemonSet has pods on the selected GPU nodes (looked for {looked})"


def restarted_since(before: StackFacts, now: Sequence[ComponentPod],
                    deleted_on_purpose: Iterable[tuple[str, str]] = ()) -> list[str]:
    """What restarted between two looks: restart counts that grew, pods replaced by new ones (except
    replacements of pods (namespace, name) the suite deleted on purpose)."""
    earlier = {(p.daemonset, p.node): p for node in {p.node for p in now} for p in before.by_node.get(node, ())}
    excused = set(deleted_on_purpose)
    out = []
    for pod in now:
        old = earlier.get((pod.daemonset, pod.node))
        if old is None:
            continue
        if old.pod != pod.pod and (old.daemonset.split("/")[0], old.pod) in excused:
            if pod.restarts > 0:  # the replacement itself must hold
                out.append(f"{pod.daemonset} pod {pod.pod} (replacing {old.pod}, which the suite deleted): "
                           f"{pod.restarts} restart(s)")
            continue
        if old.pod != pod.pod:
            out.append(f"{pod.daemonset}: pod {old.pod} was replaced by {pod.pod}")
        elif pod.restarts > old.restarts:
            out.append(f"{pod.daemonset} pod {pod.pod}: {pod.restarts - old.restarts} restart(s) during this run "
                       f"({old.restarts} -> {pod.restarts})")
    return out


def not_ready(pods: Sequence[ComponentPod]) -> list[ComponentPod]:
    return [p for p in pods if not p.ready]

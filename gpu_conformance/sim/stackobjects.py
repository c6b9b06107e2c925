"""The GPU software stack of a scenario as API objects: DaemonSets (the real DaemonSet controller
creates their pods, kwok runs them), and for the GPU Operator the ClusterPolicy CRD and object."""

from __future__ import annotations

from typing import Any

from gpu_conformance.sim.kwokconfig import COMPONENT_LABEL
from gpu_conformance.sim.scenario import SCENARIO_LABEL, Scenario
from gpu_conformance.stack import GKE_COMPONENTS, OPERATOR_OPERANDS

_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
CRD_NAME = "clusterpolicies.nvidia.com"


def components(flavour: str) -> dict[str, str]:
    """Component -> DaemonSet name for a flavour."""
    if flavour == "gpu-operator":
        return dict(OPERATOR_OPERANDS)
    if flavour == "gke":
        return dict(GKE_COMPONENTS)
    if flavour == "nvidia-device-plugin":
        return {"device-plugin": "nvidia-device-plugin-daemonset"}
    return {}


def namespace_of(sc: Scenario) -> str:
    return f"gpu-stack-{sc.name}"[:63].rstrip("-")


def cluster_policy_name(sc: Scenario) -> str:
    return f"cluster-policy-{sc.name}"


def crash_keys(scenarios: list[Scenario]) -> list[str]:
    """`<component>@<node>` for every crash-looping stack pod (kwok stages key on it)."""
    return sorted(f"{c.component}@{n}" for sc in scenarios for c in sc.stack.crashing for n in c.nodes)


def restart_keys(scenarios: list[Scenario]) -> list[str]:
    """`<component>@<node>` for every Ready-but-restarting stack pod."""
    return sorted(f"{c.component}@{n}" for sc in scenarios for c in sc.stack.restarting for n in c.nodes)


def crd() -> dict[str, Any]:
    """A minimal ClusterPolicy CRD (the GPU Operator's), schemaless."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "nvidia.com",
            "scope": "Cluster",
            "names": {"plural": "clusterpolicies", "singular": "clusterpolicy", "kind": "ClusterPolicy", "listKind": "ClusterPolicyList"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def cluster_policy(sc: Scenario) -> dict[str, Any]:
    ready = sc.stack.cluster_policy == "ready"
    return {
        "apiVersion": "nvidia.com/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": cluster_policy_name(sc), "labels": {SCENARIO_LABEL: sc.name}},
        "spec": {"operator": {"defaultRuntime": "containerd"}},
        "status": {
            "state": "ready" if ready else "notReady",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "Reconciled" if ready else "OperandNotReady",
                            "message": "" if ready else "ClusterPolicy is not ready, states not ready: [state-container-toolkit]"}],
        },
    }


def daemonsets(sc: Scenario, owner_uid: str | None) -> list[dict[str, Any]]:
    """The scenario's stack DaemonSets, on its GPU nodes only."""
    out = []
    for component, name in components(sc.stack.flavour).items():
        labels = {"app": name, COMPONENT_LABEL: component, SCENARIO_LABEL: sc.name}
        meta: dict[str, Any] = {"name": name, "namespace": namespace_of(sc), "labels": labels}
        if sc.stack.flavour == "gpu-operator" and owner_uid:
            meta["ownerReferences"] = [{"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "name": cluster_policy_name(sc),
                                        "uid": owner_uid, "controller": True, "blockOwnerDeletion": True}]
        out.append({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": {"app": name, SCENARIO_LABEL: sc.name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {SCENARIO_LABEL: sc.name, "nvidia.com/gpu.present": "true"},
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": component, "image": _IMAGE}],
                    },
                },
            },
        })
    return out

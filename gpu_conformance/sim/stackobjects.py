"""The GPU software stack of a scenario as API objects: DaemonSets (the real DaemonSet controller
creates their pods, kwok runs them), and for the GPU Operator the ClusterPolicy CRD and object."""

from __future__ import annotations

from typing import Any

from gpu_conformance.sim.kwokconfig import COMPONENT_LABEL, STRANDED_LABEL
from gpu_conformance.sim.scenario import SCENARIO_LABEL, Scenario
from gpu_conformance.stack import GKE_COMPONENTS, OPERAND_DEPLOY_LABEL, OPERATOR_OPERANDS

_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
CRD_NAME = "clusterpolicies.nvidia.com"
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
PORTFORWARD_API = ("kwok.x-k8s.io", "v1alpha1")  # kwok's PortForward: (group, version)
DCGM_SERVICE = "nvidia-dcgm-exporter"
DCGM_PORT_NAME = "gpu-metrics"


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


def _crd(group: str, version: str, kind: str, plural: str, scope: str, status: bool = False) -> dict[str, Any]:
    """A minimal schemaless CRD; with `status`, a status subresource (then `status` in a created object is dropped)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [{"name": version, "served": True, "storage": True, **({"subresources": {"status": {}}} if status else {}),
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def crd() -> dict[str, Any]:
    """The GPU Operator's ClusterPolicy CRD (minimal)."""
    return _crd("nvidia.com", "v1", "ClusterPolicy", "clusterpolicies", "Cluster")


def service_monitor_crd() -> dict[str, Any]:
    """The Prometheus Operator's ServiceMonitor CRD (minimal)."""
    return _crd("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", "Namespaced")


def portforward_crd() -> dict[str, Any]:
    """kwok's PortForward CRD: the simulated exporters' pods forward their metrics port to a local endpoint."""
    return _crd(*PORTFORWARD_API, "PortForward", "portforwards", "Namespaced", status=True)


def dcgm_service(sc: Scenario) -> dict[str, Any]:
    """The Service in front of the scenario's dcgm-exporter pods, as the GPU Operator creates it."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": DCGM_SERVICE, "namespace": namespace_of(sc), "labels": {"app": DCGM_SERVICE, SCENARIO_LABEL: sc.name}},
        "spec": {"selector": {"app": DCGM_SERVICE, SCENARIO_LABEL: sc.name},
                 "ports": [{"name": DCGM_PORT_NAME, "port": 9400, "targetPort": 9400, "protocol": "TCP"}]},
    }


def pod_monitor_crd() -> dict[str, Any]:
    """The Prometheus Operator's PodMonitor CRD (minimal)."""
    return _crd("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", "Namespaced")


def monitor(sc: Scenario) -> dict[str, Any]:
    """The scenario's Prometheus Operator monitor: a ServiceMonitor for dcgm-exporter, a PodMonitor for GKE's plugin."""
    if sc.stack.flavour == "gke":
        name = GKE_COMPONENTS["device-plugin"]
        return {
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": name, "namespace": namespace_of(sc), "labels": {SCENARIO_LABEL: sc.name}},
            "spec": {"selector": {"matchLabels": {"app": name, SCENARIO_LABEL: sc.name}},
                     "podMetricsEndpoints": [{"port": "metrics" if sc.stack.service_monitor == "ok" else "http"}]},
        }
    return service_monitor(sc)


def service_monitor(sc: Scenario) -> dict[str, Any]:
    """A ServiceMonitor for the scenario's dcgm-exporter Service (naming a wrong port where the scenario says so)."""
    port = DCGM_PORT_NAME if sc.stack.service_monitor == "ok" else "metrics"
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": DCGM_SERVICE, "namespace": namespace_of(sc), "labels": {SCENARIO_LABEL: sc.name}},
        "spec": {"selector": {"matchLabels": {"app": DCGM_SERVICE, SCENARIO_LABEL: sc.name}},
                 "endpoints": [{"port": port, "path": "/metrics", "interval": "15s"}]},
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
                        **_opt_out(sc, component),
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": component, "image": _IMAGE, **_ports(sc, component)}],
                    },
                },
            },
        })
    return out


def _opt_out(sc: Scenario, component: str) -> dict[str, Any]:
    """GPU Operator operands stay off nodes labelled nvidia.com/gpu.deploy.<operand>=false."""
    if sc.stack.flavour != "gpu-operator":
        return {}
    term = {"matchExpressions": [{"key": OPERAND_DEPLOY_LABEL[component], "operator": "NotIn", "values": ["false"]}]}
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}}


def expected_pods(sc: Scenario) -> int:
    """How many stack pods the scenario's DaemonSets run."""
    count = 0
    for _, spec in sc.expanded():
        if spec.gpus > 0 and spec.gfd_labels:
            comps = components(sc.stack.flavour)
            count += len(comps) - (sc.stack.flavour == "gpu-operator" and not spec.metrics.exporter)
    return count


def operand_labels(spec_exporter: bool) -> dict[str, str]:
    """The node labels with which a node opts out of operands."""
    return {} if spec_exporter else {OPERAND_DEPLOY_LABEL["dcgm-exporter"]: "false"}


def _ports(sc: Scenario, component: str) -> dict[str, Any]:
    """Container ports of the components that serve metrics."""
    if sc.stack.flavour == "gpu-operator" and component == "dcgm-exporter":
        return {"ports": [{"name": "metrics", "containerPort": 9400}]}
    if sc.stack.flavour == "gke" and component == "device-plugin":
        return {"ports": [{"name": "metrics", "containerPort": 2112}]}
    return {}


def stranded_namespace(sc: Scenario) -> dict[str, Any]:
    """Where the scenario's stranded pods live (deleted with the scenario's other namespaces)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": f"sim-stranded-{sc.name}"[:63].rstrip("-"), "labels": {SCENARIO_LABEL: sc.name}}}


def stranded_pod(sc: Scenario, node: str, index: int, tag: str = "") -> dict[str, Any]:
    """A bare GPU pod bound to the node that kwok fails with UnexpectedAdmissionError (`tag`: part of its name)."""
    name = f"trainer-{node}-{tag}-{index}" if tag else f"trainer-{node}-{index}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name[:253], "namespace": stranded_namespace(sc)["metadata"]["name"],
                     "labels": {STRANDED_LABEL: "true", SCENARIO_LABEL: sc.name}},
        "spec": {"nodeName": node, "restartPolicy": "Never", "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "trainer", "image": "nvcr.io/nvidia/pytorch:25.02-py3",
                                 "resources": {"limits": {"nvidia.com/gpu": 1}}}]},
    }

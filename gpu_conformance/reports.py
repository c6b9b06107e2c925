"""What the reports say about the cluster, and Allure's environment.properties."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpu_conformance.facts import ClusterFacts
from gpu_conformance.profile import Profile
from gpu_conformance.summary import ClusterInfo, NodeInfo
from gpu_conformance.versions import PRODUCT_LABEL, DriverFacts, from_labels, node_group


def cluster_info(facts: ClusterFacts | None, server: str | None, device_plugins: Iterable[str] = (),
                 observed: Mapping[str, DriverFacts] | None = None, profile: Profile | None = None) -> ClusterInfo:
    """The cluster as the run found it: versions from the checks' nvidia-smi pods where they ran, else node labels."""
    if facts is None:
        return ClusterInfo(server=server, device_plugin=sorted(set(device_plugins)))
    gpu = facts.gpu_nodes
    drivers: dict[str, DriverFacts] = {}
    for node in gpu:
        seen = (observed or {}).get(node.name) or from_labels(node.labels)
        if seen is not None:
            drivers[node.name] = seen
    return ClusterInfo(
        server=server, kubernetes_version=facts.server_version, nodes=len(facts.nodes), gpu_nodes=len(gpu),
        gpus=sum(n.gpu_capacity or 0 for n in gpu),
        gpu_models=sorted({n.labels[PRODUCT_LABEL] for n in gpu if n.labels.get(PRODUCT_LABEL)}),
        driver_versions=sorted({d.driver for d in drivers.values()}),
        cuda_versions=sorted({d.cuda for d in drivers.values() if d.cuda}),
        device_plugin=sorted(set(device_plugins)),
        gpu_node_details=[NodeInfo(name=n.name, group=node_group(profile or Profile(), n.labels), gpus=n.gpu_capacity,
                                   allocatable=n.gpu_allocatable, product=n.labels.get(PRODUCT_LABEL),
                                   driver=drivers[n.name].driver if n.name in drivers else None,
                                   cuda=drivers[n.name].cuda if n.name in drivers else None)
                          for n in sorted(gpu, key=lambda n: n.name)])


def environment_properties(info: ClusterInfo, suite_version: str, gate: str) -> str:
    """Allure's environment.properties (the report's Environment widget)."""

    def value(v: object) -> str:
        text = ", ".join(v) if isinstance(v, list) else ("unknown" if v is None else str(v))
        return text.replace("\\", "\\\\").replace("\n", " ") or "none"

    rows = {
        "Kubernetes.version": info.kubernetes_version, "Nodes": info.nodes, "GPU.nodes": info.gpu_nodes,
        "GPUs": info.gpus, "GPU.models": info.gpu_models, "Driver.versions": info.driver_versions,
        "CUDA.versions": info.cuda_versions, "Device.plugin": info.device_plugin,
        "Suite.version": suite_version, "Gate": gate,
    }
    return "".join(f"{k}={value(v)}\n" for k, v in rows.items())

"""The cluster profile: what the operator expects of their GPU cluster. Absent keys mean
auto-detection and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpu_conformance import compat
from gpu_conformance.yamlload import load_model

DevicePluginFlavour = Literal["auto", "nvidia-device-plugin", "gpu-operator", "gke"]
DEFAULT_WORKLOAD_TIMEOUT_S = 300.0  # image pulls on a real cluster can take minutes
DEFAULT_SCHEDULING_TIMEOUT_S = 60.0  # a pod the scheduler can place is bound within seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuNodes(_Strict):
    """How GPU nodes are selected."""

    # Server-side label selector; empty = every node with nvidia.com/gpu or nvidia.com/gpu.present=true.
    selector: str | None = None


class NodeGroup(_Strict):
    """Expectations for the GPU nodes whose labels include `match_labels`."""

    name: str = Field(min_length=1)
    match_labels: dict[str, str] = Field(min_length=1)
    gpu_count: int | None = Field(default=None, ge=1, le=64)
    product: str | None = Field(default=None, min_length=1)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


class Taints(_Strict):
    """Whether GPU nodes must carry a taint that keeps non-GPU pods off them."""

    required: bool = False
    key: str = "nvidia.com/gpu"
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Versions(_Strict):
    """The driver the cluster must run: a minimum, and the CUDA versions its workload images are built with."""

    minimum_driver: str | None = None
    cuda: list[str] = []

    def describe(self) -> str:
        """`a driver at or above 550.54.15 that runs CUDA 12.4, 12.8`."""
        parts = [f"at or above {self.minimum_driver}"] if self.minimum_driver else []
        parts += [f"that runs CUDA {', '.join(self.cuda)}"] if self.cuda else []
        return "a driver " + " ".join(parts)

    @field_validator("minimum_driver")
    @classmethod
    def _driver(cls, value: str | None) -> str | None:
        if value is not None:
            compat.parse_version(value, "driver")  # CompatError is a ValueError: pydantic reports it
        return value

    @field_validator("cuda")
    @classmethod
    def _cuda(cls, value: list[str]) -> list[str]:
        table = compat.load()
        for item in value:
            table.release_for(compat.parse_version(item, "CUDA"))
        return value


class Metrics(_Strict):
    """Where the GPU metrics exporter is and what it must serve; absent keys mean auto-detection."""

    # When no exporter runs on any selected node: False skips the metrics checks (capability
    # absent), True fails them (the cluster must expose GPU metrics).
    required: bool = False
    namespace: str | None = None
    service: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str = Field(default="/metrics", pattern=r"^/")
    families: list[str] = []  # sample names required on top of the built-in list
    # How long each load (the nbody CUDA load; dcgmproftester where privileged checks are allowed)
    # runs while the exporter is read.
    load_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _service_needs_namespace(self) -> Metrics:
        if self.service is not None and self.namespace is None:
            raise ValueError("metrics.service needs metrics.namespace")
        return self


class Notebook(_Strict):
    """The notebook check: a Jupyter/TensorFlow pod on one GPU node behind a NodePort Service."""

    enabled: bool = True
    node: str | None = None  # default: the first Ready GPU node with an allocatable GPU, by name
    node_port: int | None = Field(default=None, ge=1, le=65535)  # default: the cluster picks one
    # The TensorFlow image is large: its first pull on a node can take many minutes.
    timeout_s: float = Field(default=900.0, gt=0, le=86400, allow_inf_nan=False)


class PluginRestart(_Strict):
    """The device-plugin restart check (on by default: it disturbs no workload but the node's GPU advertising)."""

    enabled: bool = True
    node: str | None = None  # default: the first Ready GPU node with an allocatable GPU, by name
    # Each phase (replacement pod Ready, allocatable back) may take this long.
    timeout_s: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)


class Reboot(_Strict):
    """The node reboot check: runs only on nodes named with --reboot-nodes or counted with --reboot-count."""

    # Kubernetes cannot reboot a node: the suite runs this command (split like a shell would, no shell),
    # with {node} and {kubeconfig} filled in, e.g. "ssh {node} sudo systemctl reboot".
    command: str | None = None
    drain: bool = True  # cordon and drain before the reboot (the suite uncordons afterwards)
    command_timeout_s: float = Field(default=120.0, gt=0, le=86400, allow_inf_nan=False)
    drain_timeout_s: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)
    down_timeout_s: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)  # to NotReady
    ready_timeout_s: float = Field(default=900.0, gt=0, le=86400, allow_inf_nan=False)  # back to Ready
    allocatable_timeout_s: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)  # GPUs back


class Recovery(_Strict):
    plugin_restart: PluginRestart = PluginRestart()
    reboot: Reboot = Reboot()
    # Allocatable GPUs count as back only once steady this long: the kubelet reports a lost device
    # plugin at its next status update (every 10 s by default), so an earlier read may predate the loss.
    settle_s: float = Field(default=15.0, ge=0, le=3600, allow_inf_nan=False)


class Timeouts(_Strict):
    workload_s: float = Field(default=DEFAULT_WORKLOAD_TIMEOUT_S, gt=0, lt=86400, allow_inf_nan=False)
    scheduling_s: float = Field(default=DEFAULT_SCHEDULING_TIMEOUT_S, gt=0, lt=86400, allow_inf_nan=False)


class Profile(_Strict):
    """A cluster profile (all keys optional)."""

    gpu_nodes: GpuNodes = GpuNodes()
    groups: list[NodeGroup] = []
    taints: Taints = Taints()
    device_plugin: DevicePluginFlavour = "auto"
    images: dict[str, str] = {}
    versions: Versions = Versions()
    metrics: Metrics = Metrics()
    notebook: Notebook = Notebook()
    recovery: Recovery = Recovery()
    # Run the checks marked `privileged` (their pods need elevated capabilities, e.g. SYS_ADMIN).
    allow_privileged: bool = False
    timeouts: Timeouts = Timeouts()
    # How per-node workloads reach the nodes: one pod per node and workload created by the suite (pods), or
    # one DaemonSet per workload that the cluster fans out (daemonset: a small constant number of requests
    # whatever the cluster's size; the checks and reports are the same).
    fanout: Literal["pods", "daemonset"] = "pods"

    def group_of(self, labels: Mapping[str, str]) -> NodeGroup | None:
        """The first group whose labels a node carries."""
        return next((g for g in self.groups if g.matches(labels)), None)


def load(path: Path) -> Profile:
    """Load and validate a profile file; ConfigError names the file, key, line and problem."""
    return load_model(path, Profile, "profile")


GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def expected_gpu_count(profile: Profile, labels: Mapping[str, str]) -> tuple[int | None, str]:
    """How many physical GPUs a node should have, and where that expectation comes from."""
    group = profile.group_of(labels)
    if group is not None and group.gpu_count is not None:
        return group.gpu_count, f"profile group {group.name!r}"
    raw = labels.get(GPU_COUNT_LABEL)
    if raw is not None and raw.isdigit():
        return int(raw), f"label {GPU_COUNT_LABEL}"
    return None, f"no profile group with gpu_count matches and label {GPU_COUNT_LABEL} is absent"


def expected_product(profile: Profile, labels: Mapping[str, str]) -> tuple[str | None, str]:
    """The GPU product a node should carry per the profile, and which group says so."""
    group = profile.group_of(labels)
    if group is not None and group.product is not None:
        return group.product, f"profile group {group.name!r}"
    return None, "the profile sets no expected product for this node"

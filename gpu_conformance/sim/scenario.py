"""Scenario files: what the simulated GPU cluster looks like and what its workloads print."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpu_conformance.profile import Profile
from gpu_conformance.yamlload import load_model

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SCENARIO_LABEL = "sim.gpu-conformance.io/scenario"
# Workloads whose per-node behaviour a scenario can describe (file names in workloads/).
KNOWN_WORKLOADS = (
    "vector-add", "nvidia-smi", "nvml-probe", "gpu-hold", "gpu-load", "isolation-nogpu", "isolation-pair", "dcgmproftester",
    "notebook",
)
# Workloads whose pod has several containers with their own output.
CONTAINERS = {"isolation-pair": ("with-gpu", "without-gpu")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Taint(_Strict):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class WorkloadBehaviour(_Strict):
    """How one workload behaves on a node: exit code and, optionally, its literal output."""

    exit_code: int = 0
    output: str | None = None
    # Stay Running instead of completing (the notebook; or a hung workload).
    keep_running: bool = False
    # How long the pod runs before it completes.
    duration_s: float = Field(default=0.3, ge=0, le=3600)
    # keep_running pods: Ready (its readiness probe passes), and given a pod IP (so Services list it).
    ready: bool = True
    pod_ip: bool = True
    # The notebook: whether its server answers HTTP (through the simulated port-forward).
    answers_http: bool = True


class MemoryErrors(_Strict):
    """Uncorrected GPU memory errors the NVML probe reports for some GPUs of a node."""

    gpus: list[int] = Field(default=[0], min_length=1)  # indices of the affected GPUs
    volatile_uncorrected: int = Field(default=0, ge=0)
    row_remap_pending: bool = False
    row_remap_failure: bool = False


class NodeMetrics(_Strict):
    """What the node's simulated GPU metrics exporter serves (flavours gpu-operator and gke)."""

    exporter: bool = True  # False: the node opts out of dcgm-exporter (no exporter pod runs there)
    missing_families: list[str] = []  # sample names the exporter leaves out
    attribution: bool = True  # GPUs held by a pod carry its pod/namespace/container labels
    legacy_labels: bool = False  # ... as pod_name/pod_namespace/container_name (older dcgm-exporter)
    rises_under_load: bool = True  # a load workload raises its GPUs' utilization
    profiling: bool = True  # DCGM profiling fields (DCGM_FI_PROF_*) move; False: they stay 0


class NodeRecovery(_Strict):
    """How the node's kubelet (played by the simulator's node agent) recovers from a device-plugin restart and a reboot."""

    # After the node's device-plugin pod is deleted: allocatable nvidia.com/gpu drops to 0 at once and comes back
    # this many seconds after the replacement device-plugin pod is Running (None: never comes back).
    plugin_reregister_s: float | None = Field(default=2.0, ge=0, le=3600)
    # A reboot (requested by `gpu-conformance sim reboot NODE`): at once NotReady with allocatable nvidia.com/gpu 0;
    # Ready again after reboot_down_s (never when comes_back is False); allocatable back reboot_allocatable_s after Ready (None: never).
    reboot_down_s: float = Field(default=3.0, ge=0, le=3600)
    comes_back: bool = True
    reboot_allocatable_s: float | None = Field(default=3.0, ge=0, le=3600)
    # Bare GPU pods created on the node the moment it is Ready again (before allocatable returns); they fail
    # admission (UnexpectedAdmissionError), as pods do that start before the device plugin re-registers.
    strands_after_reboot: int = Field(default=0, ge=0, le=50)


class NodeSpec(_Strict):
    """One node, or `replicas` identical nodes named `<name>-1..N`."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=200)
    replicas: int = Field(default=1, ge=1, le=10000)
    # Physical GPUs: the GFD count label and what nvidia-smi shows.
    gpus: int = Field(default=0, ge=0, le=64)
    # What the device plugin advertises as capacity (default: gpus) and allocatable (default: capacity).
    advertised_gpus: int | None = Field(default=None, ge=0, le=1024)
    allocatable_gpus: int | None = Field(default=None, ge=0)
    # Only the pre-device-plugin resource alpha.kubernetes.io/nvidia-gpu (legacy clusters).
    legacy_gpus: int = Field(default=0, ge=0, le=64)
    ready: bool = True
    # strict: a pod sees exactly the GPUs it requested; leaky: every pod on the node sees all GPUs
    # (the NVIDIA_VISIBLE_DEVICES=all hole of the environment-variable device strategy).
    isolation: Literal["strict", "leaky"] = "strict"
    product: str = "NVIDIA-H100-80GB-HBM3"
    memory_mib: int = 81559
    driver: str = "580.159.04"
    cuda: str = "13.0"
    gfd_labels: bool = True
    # What the GFD labels claim, when stale (default: driver and cuda above).
    labelled_driver: str | None = None
    labelled_cuda: str | None = None
    memory_errors: MemoryErrors | None = None
    metrics: NodeMetrics = NodeMetrics()
    # Bare pods already on the node that failed their GPU allocation (UnexpectedAdmissionError).
    stranded_pods: int = Field(default=0, ge=0, le=50)
    # Device-plugin restarts and reboots (the simulator's node agent plays them).
    recovery: NodeRecovery = NodeRecovery()
    # The kubelet confirms a pod's deletion this long after it was asked for (a swamped kubelet); 0: at once.
    deletion_delay_s: float = Field(default=0, ge=0, le=600)
    labels: dict[str, str] = {}
    taints: list[Taint] = []
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110
    workloads: dict[str, WorkloadBehaviour] = {}

    @field_validator("workloads")
    @classmethod
    def _known(cls, value: dict[str, WorkloadBehaviour]) -> dict[str, WorkloadBehaviour]:
        unknown = sorted(set(value) - set(KNOWN_WORKLOADS))
        if unknown:
            raise ValueError(f"unknown workload(s) {unknown}; known: {list(KNOWN_WORKLOADS)}")
        return value

    def node_names(self) -> list[str]:
        if self.replicas == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(1, self.replicas + 1)]

    @property
    def capacity(self) -> int:
        return self.gpus if self.advertised_gpus is None else self.advertised_gpus

    @property
    def allocatable(self) -> int:
        return self.capacity if self.allocatable_gpus is None else self.allocatable_gpus


class Crash(_Strict):
    """A stack component whose pods crash-loop on some nodes."""

    component: str
    nodes: list[str] = Field(min_length=1)


class Stack(_Strict):
    """The GPU software stack the simulated cluster runs: DaemonSets whose pods kwok plays."""

    flavour: Literal["none", "nvidia-device-plugin", "gpu-operator", "gke"] = "none"
    cluster_policy: Literal["ready", "notReady"] = "ready"  # gpu-operator only
    crashing: list[Crash] = []
    # Ready, but restarting every 2 s (a flapping component): the restart count grows during a run.
    restarting: list[Crash] = []
    # gpu-operator and gke: a ServiceMonitor for dcgm-exporter (PodMonitor for GKE's device plugin;
    # the Prometheus Operator CRDs are then installed), naming the metrics port or a port that does not exist.
    service_monitor: Literal["none", "ok", "wrong-port"] = "ok"


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    description: str = ""
    nodes: list[NodeSpec] = Field(min_length=1)
    stack: Stack = Stack()
    # The profile the suite runs with against this scenario (the detection matrix uses it).
    profile: Profile = Profile()
    # Command-line options the suite runs with against this scenario: opt-ins such as --reboot-nodes.
    suite_args: list[str] = []
    # Exactly the check results this scenario must make fail: "REQ-ID@node", or "REQ-ID" for
    # checks that are not per node. Every other result must pass or be skipped.
    expect_failures: list[str] = []
    # Results the suite must report as errors (it cannot decide), in the same form.
    expect_errors: list[str] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Scenario:
        seen: set[str] = set()
        for spec in self.nodes:
            for n in spec.node_names():
                if n in seen:
                    raise ValueError(f"node name {n!r} appears twice")
                seen.add(n)
        return self

    @field_validator("expect_failures", "expect_errors")
    @classmethod
    def _well_formed(cls, value: list[str]) -> list[str]:
        for item in value:
            req, _, node = item.partition("@")
            if not req.startswith("GPU-") or (node == "" and "@" in item):
                raise ValueError(f"{item!r}: expected REQ-ID@node or REQ-ID")
        return value

    @model_validator(mode="after")
    def _crashes_name_known_things(self) -> Scenario:
        from gpu_conformance.sim.stackobjects import components

        names = {n for n, _ in self.expanded()}
        for crash in [*self.stack.crashing, *self.stack.restarting]:
            if crash.component not in components(self.stack.flavour):
                raise ValueError(f"stack.crashing: {crash.component!r} is not a component of {self.stack.flavour!r}")
            unknown = sorted(set(crash.nodes) - names)
            if unknown:
                raise ValueError(f"stack.crashing: unknown node(s) {unknown}")
        return self

    def expanded(self) -> list[tuple[str, NodeSpec]]:
        """Every node of the scenario with the spec it came from."""
        return [(n, spec) for spec in self.nodes for n in spec.node_names()]


def load(path: Path) -> Scenario:
    """Load and validate a scenario file."""
    return load_model(path, Scenario, "scenario")


def resolve(name_or_path: str | Path | None) -> Path:
    """A scenario path from a file path or the name of a bundled scenario."""
    if name_or_path is None:
        return SCENARIO_DIR / "healthy.yaml"
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = SCENARIO_DIR / f"{name_or_path}.yaml"
    return bundled if bundled.is_file() else path


def bundled() -> list[str]:
    """Names of the scenarios shipped with the project."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))

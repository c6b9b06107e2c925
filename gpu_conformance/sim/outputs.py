"""What the simulated workloads print on each node, consistent with the node's GPUs and driver."""

from __future__ import annotations

import hashlib

from gpu_conformance import probe

from gpu_conformance.sim.scenario import NodeSpec, WorkloadBehaviour
from gpu_conformance.workloads import pod_name

VECTOR_ADD_PASSED = """[Vector addition of 50000 elements]
Copy input data from the host memory to the CUDA device
CUDA kernel launch with 196 blocks of 256 threads
Copy output data from the CUDA device to the host memory
Test PASSED
Done"""

VECTOR_ADD_FAILED = """[Vector addition of 50000 elements]
Failed to allocate device vector A (error code no CUDA-capable device is detected)!"""

_WIDTH = 91  # the 580-era nvidia-smi table width (measured on the H100 capture)


def gpu_uuid(node: str, index: int) -> str:
    """A stable, UUID-shaped GPU id derived from node name and index."""
    h = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def marketing_name(product_label: str) -> str:
    """`NVIDIA-H100-80GB-HBM3` (GFD label form) -> `NVIDIA H100 80GB HBM3`."""
    return product_label.replace("-", " ")


def nvidia_smi_table(node: str, spec: NodeSpec) -> str:
    """A default `nvidia-smi` table in the 580-era layout for the node's GPUs."""
    bar = "+" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+"
    head = f"| NVIDIA-SMI {spec.driver:<23}Driver Version: {spec.driver:<15}CUDA Version: {spec.cuda:<9}|"
    lines = [
        "+" + "-" * (_WIDTH - 2) + "+",
        head,
        bar,
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
        "|                                         |                        |               MIG M. |",
        "|" + "=" * 41 + "+" + "=" * 24 + "+" + "=" * 22 + "|",
    ]
    name = marketing_name(spec.product)
    for i in range(spec.gpus):
        bus = f"00000000:{0x18 + i * 0x10:02X}:00.0"
        mem = f"0MiB / {spec.memory_mib:>6}MiB"
        lines += [
            f"| {i:>3}  {name:<31}On  | {bus:>18} Off | {'0':>20} |",
            f"| N/A   34C    P0             70W /  700W | {mem:>22} | {'0%':>7}      Default |",
            f"|{'':41}|{'':24}| {'Disabled':>20} |",
            bar,
        ]
    lines += [
        "",
        "+" + "-" * (_WIDTH - 2) + "+",
        "| Processes:" + " " * (_WIDTH - 13) + "|",
        "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
        "|        ID   ID                                                               Usage      |",
        "|" + "=" * (_WIDTH - 2) + "|",
        "|  No running processes found" + " " * (_WIDTH - 30) + "|",
        "+" + "-" * (_WIDTH - 2) + "+",
    ]
    return "\n".join(lines)


def nvidia_smi_list(node: str, spec: NodeSpec) -> str:
    """`nvidia-smi -L` for the node's GPUs."""
    name = marketing_name(spec.product)
    return "\n".join(f"GPU {i}: {name} (UUID: {gpu_uuid(node, i)})" for i in range(spec.gpus))


NO_DEVICES = "No devices were found"
# What the simulated Jupyter prints as its token (a real one is random; the suite must redact either).
NOTEBOOK_TOKEN = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee"
from gpu_conformance.isolation import LISTED_MARKER  # the isolation workloads print it after `nvidia-smi -L`
NVIDIA_SMI_FAILED = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
# Default run time per workload: gpu-hold must stay up long enough for overlap to be observable,
# the load workloads long enough for several exporter scrapes while they hold their GPU.
DEFAULT_DURATION_S = {"gpu-hold": 3.0, "gpu-load": 6.0, "dcgmproftester": 6.0}


def visible_gpus(spec: NodeSpec, requested: int) -> int:
    """How many GPUs a pod that requested `requested` sees on this node."""
    return spec.gpus if spec.isolation == "leaky" else min(requested, spec.gpus)


def _listing(node: str, spec: NodeSpec, requested: int) -> str:
    n = visible_gpus(spec, requested)
    listed = "\n".join(nvidia_smi_list(node, spec).splitlines()[:n]) if n else NO_DEVICES
    return f"{listed}\n{LISTED_MARKER}"


def probe_json(node: str, spec: NodeSpec, requested: int = 1) -> str:
    """What the NVML probe prints in a pod that requested `requested` GPUs on this node."""
    major, _, minor = spec.cuda.partition(".")
    bad = spec.memory_errors

    def errors(i: int) -> tuple[int, probe.RemappedRows]:
        if bad is None or i not in bad.gpus:
            return 0, probe.RemappedRows(0, 0, False, False)
        return bad.volatile_uncorrected, probe.RemappedRows(0, 1 if bad.row_remap_failure else 0,
                                                            bad.row_remap_pending, bad.row_remap_failure)

    gpus = tuple(
        probe.GpuFacts(
            index=i, name=marketing_name(spec.product), uuid=gpu_uuid(node, i), pci_bus_id=f"00000000:{0x18 + i * 0x10:02X}:00.0",
            memory_total_mib=spec.memory_mib, memory_used_mib=0, persistence_mode=True,
            ecc_mode=probe.EnabledState(True, True), ecc_volatile_uncorrected=errors(i)[0], retired_pages=None,
            remapped_rows=errors(i)[1], mig_mode=probe.EnabledState(False, False),
            mig_devices=(), temperature_c=34, power_draw_w=70.0, power_limit_w=700.0,
        )
        for i in range(visible_gpus(spec, requested))
    )
    raw = int(major) * 1000 + int(minor or 0) * 10
    return probe.to_json(probe.ProbeFacts(probe.SCHEMA, spec.driver, spec.cuda, raw, None, gpus))


def _default_output(workload: str, node: str, spec: NodeSpec, container: str | None, exit_code: int) -> str:
    if workload == "vector-add":
        return VECTOR_ADD_PASSED if exit_code == 0 else VECTOR_ADD_FAILED
    if workload == "nvidia-smi":
        # The suite's nvidia-smi pod requests one GPU.
        one = spec.model_copy(update={"gpus": visible_gpus(spec, 1)})
        return nvidia_smi_table(node, one) if exit_code == 0 else NVIDIA_SMI_FAILED
    if workload == "isolation-nogpu" or (workload == "isolation-pair" and container == "without-gpu"):
        return _listing(node, spec, 0)
    if workload in ("isolation-pair", "gpu-hold"):
        return _listing(node, spec, 1 if workload == "isolation-pair" else spec.gpus)
    if workload == "nvml-probe":
        # The suite's probe pod requests every allocatable GPU of the node.
        return probe_json(node, spec, spec.allocatable) if exit_code == 0 else "gpu-conformance probe: NVML not available: Driver Not Loaded"
    if workload == "notebook":
        # A real Jupyter prints its token in the URL: the suite must redact it.
        seen = visible_gpus(spec, 1) if exit_code == 0 else 0
        return (f"gpu-conformance: tensorflow sees {seen} GPU(s)\n"
                "[I 2026-11-23 02:00:00.000 ServerApp] Jupyter Server 2.14.2 is running at:\n"
                f"[I 2026-11-23 02:00:00.000 ServerApp] http://{pod_name('notebook', node)}:8888/lab?token={NOTEBOOK_TOKEN}")
    return f"{workload}: simulated run completed"


def behaviour(workload: str, node: str, spec: NodeSpec, container: str | None = None) -> WorkloadBehaviour:
    """The scenario's explicit behaviour for a workload (container), or the default for a node like this one."""
    explicit = spec.workloads.get(workload)
    if explicit is not None and explicit.output is not None:
        return explicit
    exit_code = explicit.exit_code if explicit is not None else (0 if spec.allocatable > 0 else 1)
    if workload in ("isolation-nogpu", "isolation-pair") and explicit is None:
        exit_code = 0  # they request no GPU (or print whatever they see) and always exit 0
    keep = explicit.keep_running if explicit is not None else workload == "notebook"
    duration = explicit.duration_s if explicit is not None else DEFAULT_DURATION_S.get(workload, 0.3)
    text = _default_output(workload, node, spec, container, exit_code)
    rest = explicit.model_dump(include={"ready", "pod_ip", "answers_http"}) if explicit is not None else {}
    return WorkloadBehaviour(exit_code=exit_code, output=text, keep_running=keep, duration_s=duration, **rest)

"""Driver and CUDA version facts per node, the driver gate, drift within a node group, GPU memory health.

Pure functions: the suite feeds them nvidia-smi output, node labels and probe facts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from packaging.version import Version

from gpu_conformance import compat
from gpu_conformance.nvsmi import NvidiaSmiFacts
from gpu_conformance.probe import ProbeFacts
from gpu_conformance.profile import Profile

# GPU Feature Discovery labels: current names, then the deprecated ones older GFD releases write.
DRIVER_FULL_LABEL = "nvidia.com/cuda.driver-version.full"
CUDA_FULL_LABEL = "nvidia.com/cuda.runtime-version.full"
DRIVER_PART_LABELS = (
    ("nvidia.com/cuda.driver-version.major", "nvidia.com/cuda.driver-version.minor", "nvidia.com/cuda.driver-version.revision"),
    ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev"),
)
CUDA_PART_LABELS = (
    ("nvidia.com/cuda.runtime-version.major", "nvidia.com/cuda.runtime-version.minor"),
    ("nvidia.com/cuda.runtime.major", "nvidia.com/cuda.runtime.minor"),
)
PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class DriverFacts:
    """A node's driver version and the highest CUDA version it supports, and where they were read."""

    driver: str
    cuda: str | None
    source: str


def _joined(labels: Mapping[str, str], full: str, parts: Sequence[tuple[str, ...]]) -> str | None:
    if labels.get(full):
        return labels[full]
    for names in parts:
        values = [labels.get(n) for n in names]
        if values[0] and values[1]:  # the revision may be absent (drivers like 580.65)
            return ".".join(v for v in values if v)
    return None


def from_labels(labels: Mapping[str, str]) -> DriverFacts | None:
    """The versions GPU Feature Discovery labelled the node with; None without driver labels."""
    driver = _joined(labels, DRIVER_FULL_LABEL, DRIVER_PART_LABELS)
    if driver is None:
        return None
    return DriverFacts(driver, _joined(labels, CUDA_FULL_LABEL, CUDA_PART_LABELS), "GPU Feature Discovery labels")


def from_nvidia_smi(facts: NvidiaSmiFacts) -> DriverFacts | None:
    """The versions nvidia-smi printed; None where its format does not show the driver."""
    if facts.driver_version is None:
        return None
    return DriverFacts(facts.driver_version, facts.cuda_version, "nvidia-smi in a GPU pod")


def same_version(a: str, b: str) -> bool:
    """Numeric per component: 580.65.06 == 580.65.6; 12.4 == 12.4.0."""
    try:
        return Version(a) == Version(b)
    except ValueError:
        return a.strip() == b.strip()


@dataclass(frozen=True)
class GateResult:
    """The driver gate for one node: minimum driver and every CUDA version the profile lists."""

    driver: str
    minimum: str | None
    below_minimum: bool
    cuda: tuple[compat.CompatResult, ...]
    floors: tuple[str | None, ...]  # per CUDA version: its family's minor-version-compatibility floor

    @property
    def passed(self) -> bool:
        return not self.below_minimum and all(r.compatible for r in self.cuda)

    def describe(self) -> str:
        """One clause per requirement: mode, and the driver each would need."""
        parts = []
        if self.minimum is not None:
            verdict = "below" if self.below_minimum else "at or above"
            parts.append(f"driver {self.driver} is {verdict} the profile minimum {self.minimum}")
        for r, floor in zip(self.cuda, self.floors, strict=True):
            minor = f"minor-version compatibility >= {floor}" if floor else "no minor-version compatibility"
            parts.append(f"CUDA {r.cuda}: {r.mode} (native needs >= {r.minimum_driver}, {minor})")
        return "; ".join(parts)


def gate(driver: str, minimum: str | None, cudas: Sequence[str], table: compat.CompatTable | None = None) -> GateResult:
    """Check `driver` against a minimum and CUDA versions (CompatError on malformed or unknown versions)."""
    table = table or compat.load()
    below = minimum is not None and compat.parse_version(driver, "driver") < compat.parse_version(minimum, "driver")
    results = tuple(compat.check(driver, c, table) for c in cudas)
    floors = tuple(table.floor(compat.parse_version(c, "CUDA").major) for c in cudas)
    return GateResult(driver, minimum, below, results, floors)


def majority(values: Mapping[str, str]) -> str | None:
    """The value more than half of the keys share (numeric version equality), or None without one."""
    if not values:
        return None
    counts = Counter(str(Version(v)) if _is_version(v) else v for v in values.values())
    value, count = counts.most_common(1)[0]
    if count * 2 <= len(values):
        return None
    return next(v for v in values.values() if same_version(v, value))


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except ValueError:
        return False
    return True


def memory_problems(facts: ProbeFacts) -> list[str]:
    """Every uncorrected-memory problem the probe reports, one line per GPU and kind."""
    problems = []
    for gpu in facts.gpus:
        where = f"GPU {gpu.index} ({gpu.uuid or gpu.name or 'unknown'})"
        if gpu.ecc_volatile_uncorrected:
            problems.append(f"{where}: {gpu.ecc_volatile_uncorrected} volatile uncorrected ECC error(s)")
        if gpu.retired_pages is not None and gpu.retired_pages.pending:
            problems.append(f"{where}: page retirement pending (reset the GPU to retire the pages)")
        rows = gpu.remapped_rows
        if rows is not None and rows.failure:
            problems.append(f"{where}: row remapping failed ({rows.uncorrectable} uncorrectable row(s) remapped)")
        elif rows is not None and rows.pending:
            problems.append(f"{where}: row remapping pending (reset the GPU to apply it)")
    return problems


def node_group(profile: Profile, labels: Mapping[str, str]) -> str | None:
    """The node group a node belongs to for drift: its profile group, else its GPU product; None without either."""
    group = profile.group_of(labels)
    if group is not None:
        return f"profile group {group.name!r}"
    product = labels.get(PRODUCT_LABEL)
    return f"the {product} nodes" if product else None


def label_mismatches(labelled: DriverFacts, in_pod: DriverFacts) -> list[str]:
    """Where the node's labels and what a pod sees disagree (versions either side does not show are not compared).

    With the same driver, a pod may see a *higher* CUDA version than the node: CUDA forward
    compatibility (the image's cuda-compat libcuda, which the container toolkit puts first) is not
    a stale label. A lower one, or a different driver, is.
    """
    problems = []
    if not same_version(labelled.driver, in_pod.driver):
        problems.append(f"driver {labelled.driver} in the labels but {in_pod.driver} in the pod")
    if labelled.cuda is not None and in_pod.cuda is not None and not same_version(labelled.cuda, in_pod.cuda):
        forward = not problems and _is_version(labelled.cuda) and _is_version(in_pod.cuda) \
            and Version(in_pod.cuda) > Version(labelled.cuda)
        if not forward:
            problems.append(f"CUDA {labelled.cuda} in the labels but {in_pod.cuda} in the pod")
    return problems


@dataclass(frozen=True)
class GroupDrivers:
    """The known drivers of one node group's members."""

    group: str
    drivers: Mapping[str, str]  # node -> driver

    def split(self) -> str:
        """`580.159.04 on a, b; 570.172.08 on c` (past SPLIT_NAMES nodes of one driver: a count and the first ones)."""
        return self._split

    def usual(self) -> str | None:
        """The driver more than half of the group runs."""
        return self._usual

    # Every node of the group asks the same (computed once: a group can be a thousand nodes).
    @cached_property
    def _split(self) -> str:
        by_driver: dict[str, list[str]] = {}
        for node, driver in self.drivers.items():
            by_driver.setdefault(driver, []).append(node)
        return "; ".join(f"{d} on {_some(sorted(by_driver[d]))}" for d in sorted(by_driver))

    @cached_property
    def _usual(self) -> str | None:
        return majority(self.drivers)


SPLIT_NAMES = 10


def _some(names: Sequence[str]) -> str:
    """`a, b` or, past SPLIT_NAMES names, `1000 nodes (a, b, ..., j, ...)`."""
    if len(names) <= SPLIT_NAMES:
        return ", ".join(names)
    return f"{len(names)} nodes ({', '.join(names[:SPLIT_NAMES])}, ...)"

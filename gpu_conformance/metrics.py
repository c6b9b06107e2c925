"""GPU metrics as exporters publish them: parsing the Prometheus text format (with prometheus_client),
the metric families a conformant exporter must serve, series per GPU, and pod attribution.

Pure functions; fetching lives in `gpu_conformance.scrape`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

ExporterKind = Literal["dcgm-exporter", "gke-device-plugin"]
DCGM_PORT = 9400
GKE_PORT = 2112

# What each kind of exporter must serve: a description -> the sample names that carry it, in order of
# preference. GPUs in MIG mode have no DCGM_FI_DEV_GPU_UTIL: their utilization is the profiling field.
REQUIRED: Mapping[ExporterKind, Mapping[str, tuple[str, ...]]] = {
    "dcgm-exporter": {
        "GPU utilization": ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
        "framebuffer used": ("DCGM_FI_DEV_FB_USED",),
        "framebuffer free": ("DCGM_FI_DEV_FB_FREE",),
        "temperature": ("DCGM_FI_DEV_GPU_TEMP",),
        "power": ("DCGM_FI_DEV_POWER_USAGE",),
        "SM clock": ("DCGM_FI_DEV_SM_CLOCK",),
        "XID errors": ("DCGM_FI_DEV_XID_ERRORS",),
    },
    "gke-device-plugin": {
        "GPU utilization": ("duty_cycle",),
        "memory used": ("memory_used",),
        "memory total": ("memory_total",),
    },
}
TENSOR_ACTIVE = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
# Series whose value rises when a pod loads its GPU, most telling first.
LOAD_SIGNALS: Mapping[ExporterKind, tuple[str, ...]] = {
    "dcgm-exporter": (TENSOR_ACTIVE, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL"),
    "gke-device-plugin": ("duty_cycle",),
}
# The label that names a physical GPU in each kind's series.
GPU_LABELS: Mapping[ExporterKind, tuple[str, ...]] = {
    "dcgm-exporter": ("UUID", "gpu"),
    "gke-device-plugin": ("accelerator_id",),
}
# Pod attribution labels: current names, then the legacy ones older dcgm-exporter releases use.
ATTRIBUTION_LABELS = (("pod", "namespace", "container"), ("pod_name", "pod_namespace", "container_name"))


class MetricsParseError(ValueError):
    """Text that is not the Prometheus exposition format, or has no samples."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: name, labels, value. Samples of one scrape with the same labels share one mapping
    (an exporter's series of one GPU all carry the same labels)."""

    name: str
    labels: Mapping[str, str]
    value: float
    family: str = ""  # the family a counter's `<name>_total` sample belongs to (prometheus_client adds `_total`)

    def line(self) -> str:
        """The sample as an exposition line (for evidence in reports)."""
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{labels}}} {self.value:g}"


@dataclass(frozen=True)
class Scrape:
    """Every sample of one /metrics response."""

    samples: tuple[Sample, ...]

    @property
    def names(self) -> frozenset[str]:
        """Sample names, and the family names of counters (served without `_total` by dcgm-exporter)."""
        return frozenset(s.name for s in self.samples) | frozenset(s.family for s in self.samples if s.family)

    def series(self, name: str) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if name in (s.name, s.family))


def parse_metrics(text: str) -> Scrape:
    """Prometheus text format -> Scrape; MetricsParseError for malformed text or no samples at all."""
    # Kept compact: a run keeps every node's idle scrape and its last one under load (1,000 nodes: 2,000
    # scrapes), so label sets are shared and their strings interned (100 KiB -> 9 KiB a simulated scrape).
    labelsets: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}

    def shared(labels: Mapping[str, str]) -> Mapping[str, str]:
        key = tuple(labels.items())
        if key not in labelsets:
            labelsets[key] = {sys.intern(k): sys.intern(v) for k, v in key}
        return labelsets[key]

    try:
        samples = tuple(
            Sample(sys.intern(s.name), shared(s.labels), float(s.value),
                   sys.intern(family.name) if family.type == "counter" and s.name == f"{family.name}_total" else "")
            for family in text_string_to_metric_families(text)
            for s in family.samples
        )
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise MetricsParseError(f"not the Prometheus text format: {exc}") from None
    if not samples:
        what = "it is empty" if not text.strip() else "only comments"
        raise MetricsParseError(f"no metric samples in the response ({what})")
    return Scrape(samples)


def _wanted(kind: ExporterKind, extra: Iterable[str]) -> dict[str, tuple[str, ...]]:
    return {**REQUIRED[kind], **{name: (name,) for name in extra}}


def missing_families(scrape: Scrape, kind: ExporterKind, extra: Iterable[str] = ()) -> list[str]:
    """Required families (the kind's, plus the profile's extra sample names) that the scrape lacks."""
    return [f"{what} ({' or '.join(names)})" if (what,) != names else what
            for what, names in _wanted(kind, extra).items() if not any(n in scrape.names for n in names)]


def served_required(scrape: Scrape, kind: ExporterKind, extra: Iterable[str] = ()) -> list[str]:
    """For each required family the scrape serves, the sample name that carries it (the preferred one present)."""
    return [next(n for n in names if n in scrape.names)
            for names in _wanted(kind, extra).values() if any(n in scrape.names for n in names)]


def gpu_id(sample: Sample, kind: ExporterKind) -> str | None:
    """The physical GPU a sample is about (its UUID, else its index), or None."""
    return next((sample.labels[k] for k in GPU_LABELS[kind] if sample.labels.get(k)), None)


def gpus_per_family(scrape: Scrape, kind: ExporterKind, names: Sequence[str]) -> dict[str, int]:
    """How many distinct GPUs each named family has series for."""
    return {name: len({g for s in scrape.series(name) if (g := gpu_id(s, kind)) is not None}) for name in names}


@dataclass(frozen=True)
class Attribution:
    """A pod's own series: which GPU, which signal and its value."""

    sample: Sample
    gpu: str | None


def attributed(scrape: Scrape, kind: ExporterKind, namespace: str, pod: str,
               signals: Sequence[str] | None = None) -> list[Attribution]:
    """The load-signal series (all of the kind's, or `signals`) labelled with this pod (current or legacy labels)."""
    found = []
    for name in signals or LOAD_SIGNALS[kind]:
        for s in scrape.series(name):
            for pod_label, ns_label, _ in ATTRIBUTION_LABELS:
                if s.labels.get(pod_label) == pod and s.labels.get(ns_label) == namespace:
                    found.append(Attribution(s, gpu_id(s, kind)))
                    break
    return found


def idle_value(scrape: Scrape, name: str, gpu: str | None, kind: ExporterKind) -> float | None:
    """The value of `name` for one GPU in an earlier scrape (before the load started)."""
    values = [s.value for s in scrape.series(name) if gpu_id(s, kind) == gpu]
    return max(values) if values else None


@dataclass(frozen=True)
class LoadVerdict:
    """Whether a pod's series rose above idle under load."""

    rose: bool
    lines: tuple[str, ...]  # evidence: "<signal> GPU <id>: idle <v> -> load <v>"


def rose_under_load(idle: Scrape | None, kind: ExporterKind, attribution: Sequence[Attribution]) -> LoadVerdict:
    """Compare each attributed series with the same GPU's idle value (0 where the idle scrape lacks it)."""
    lines = []
    rose = False
    for a in attribution:
        before = idle_value(idle, a.sample.name, a.gpu, kind) if idle is not None else None
        base = before if before is not None else 0.0
        lines.append(f"{a.sample.name} GPU {a.gpu}: idle {'n/a' if before is None else f'{base:g}'} -> load {a.sample.value:g}")
        rose = rose or a.sample.value > base
    return LoadVerdict(rose, tuple(lines))


def load_lines(scrape: Scrape, kind: ExporterKind) -> list[str]:
    """The load-signal series of a scrape as exposition lines (evidence when attribution is missing)."""
    return [s.line() for name in LOAD_SIGNALS[kind] for s in scrape.series(name)]

"""The upgrade gate: compare a run's summary.json with a previous run's (`gpu-conformance run --baseline`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from gpu_conformance.summary import NodeInfo, Summary
from gpu_conformance.versions import same_version


@dataclass(frozen=True)
class Finding:
    """One difference from the baseline; `regression` ones fail the gate, the others are reported."""

    kind: str
    node: str | None
    detail: str
    regression: bool

    def describe(self) -> str:
        where = f" {self.node}" if self.node else ""
        return f"{'REGRESSION' if self.regression else 'changed'} {self.kind}{where}: {self.detail}"


@dataclass(frozen=True)
class Comparison:
    baseline_started: str
    findings: tuple[Finding, ...]

    @property
    def regressions(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.regression)

    def as_json(self, source: str) -> dict[str, Any]:
        return {"source": source, "baseline_started": self.baseline_started,
                "regressions": [asdict(f) for f in self.regressions],
                "changes": [asdict(f) for f in self.findings if not f.regression]}


def _older(new: str, old: str) -> bool | None:
    """Whether driver `new` is older than `old` (numeric per component); None when either is not a version."""
    try:
        return Version(new) < Version(old)
    except InvalidVersion:
        return None


class BaselineUndecided(Exception):
    """One of the two runs could not read its nodes: comparing them would report every node as gone."""


def compare(previous: Summary, current: Summary) -> Comparison:
    """What got worse since `previous`: GPUs gone, nodes gone, drivers downgraded or drifting, checks newly failing."""
    for which, doc in (("the baseline", previous), ("this run", current)):
        if doc.cluster.gpu_nodes is None:
            raise BaselineUndecided(f"{which} could not read the cluster's nodes (cluster facts unknown)")
    found: list[Finding] = []
    before = {n.name: n for n in previous.cluster.gpu_node_details}
    now = {n.name: n for n in current.cluster.gpu_node_details}
    for name in sorted(before.keys() - now.keys()):
        found.append(Finding("node-missing", name, f"was a GPU node with {before[name].gpus} GPU(s); not found now", True))
    for name in sorted(now.keys() - before.keys()):
        found.append(Finding("node-added", name, f"new GPU node with {now[name].gpus} GPU(s)", False))
    for name in sorted(before.keys() & now.keys()):
        found += _node_changes(before[name], now[name])
    found += _drift(now.values())
    was = {(r.id, r.node): r.status for r in previous.results}
    for r in current.results:
        if was.get((r.id, r.node)) == "passed" and r.status == "failed":
            found.append(Finding("check-regressed", r.node, f"{r.id} ({r.title}) passed in the baseline, fails now", True))
    return Comparison(previous.started.isoformat(), tuple(found))


def _node_changes(old: NodeInfo, new: NodeInfo) -> list[Finding]:
    out = []
    for what, a, b in (("gpus", old.gpus, new.gpus), ("allocatable", old.allocatable, new.allocatable)):
        if a is not None and (b is None or b < a):
            out.append(Finding(f"{what}-dropped", new.name, f"nvidia.com/gpu {what} {a} -> {b}", True))
    if old.driver and new.driver and not same_version(old.driver, new.driver):
        older = _older(new.driver, old.driver)
        verdict = " (a downgrade)" if older else ""
        out.append(Finding("driver-downgraded" if older else "driver-changed", new.name,
                           f"driver {old.driver} -> {new.driver}{verdict}", bool(older)))
    elif old.driver and not new.driver:
        out.append(Finding("driver-unknown", new.name, f"driver {old.driver} in the baseline; unknown now", False))
    return out


def _normal(version: str) -> str:
    """One spelling per version (580.159.4 and 580.159.04 are the same driver)."""
    try:
        return ".".join(str(p) for p in Version(version).release)
    except InvalidVersion:
        return version.strip()


def _drift(nodes: Iterable[NodeInfo]) -> list[Finding]:
    """Node groups whose nodes now run different drivers (a half-finished rollout)."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for n in nodes:
        if n.group and n.driver:
            groups[n.group][_normal(n.driver)].append(n.name)
    out = []
    for group, drivers in sorted(groups.items()):
        if len(drivers) > 1:
            parts = "; ".join(f"{d} on {', '.join(sorted(names))}" for d, names in sorted(drivers.items()))
            out.append(Finding("driver-drift", None, f"{group} run different drivers: {parts}", True))
    return out

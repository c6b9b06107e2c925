"""Disrupting a GPU node on purpose and timing its recovery, phase by phase: the device plugin's pod
deleted, or the node rebooted by an operator-supplied command (Kubernetes has no reboot API).

Each disruption returns a Timeline: every phase with its duration and what was observed, the first
one that stalled (ran out of time, or failed) ending it. Whatever happens, a node the suite cordoned
is uncordoned before the function returns, on an interrupt too; the cordon is also marked with the
run id on the node, so `gpu-conformance cleanup` can undo one a killed process left behind.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kr8s
from kr8s.objects import Node, Pod

from gpu_conformance import transport
from gpu_conformance.errors import GpuConformanceError
from gpu_conformance.progress import say
from gpu_conformance.runner import TRANSIENT, api_call
from gpu_conformance.waiting import WaitTimeout, wait_for

GPU_RESOURCE = "nvidia.com/gpu"
# On a node the suite cordoned: the run that did it (nothing else ever uncordons a node).
CORDONED_BY_ANNOTATION = "gpu-conformance.io/cordoned-by-run"
TEMPLATE_FIELDS = ("node", "kubeconfig", "python")
# The cause the API server gives for refusing any create (an eviction too) in a namespace being deleted.
NAMESPACE_TERMINATING = ("NamespaceTerminating", "because it is being terminated")


class PhaseFailed(Exception):
    """A phase ended without its outcome (the message is what was observed)."""


class DisruptionError(GpuConformanceError):
    """The suite could not disrupt the node or could not watch it (an error, not a verdict)."""


class RebootCommandError(DisruptionError):
    """The reboot command failed and the node did not go down: nothing is known about its recovery."""


@dataclass(frozen=True)
class Phase:
    """One timed step of a disruption and its recovery."""

    name: str
    seconds: float
    ok: bool
    observed: str


@dataclass(frozen=True)
class Timeline:
    """The phases of one disruption on one node, in order."""

    node: str
    what: str
    phases: tuple[Phase, ...]

    @property
    def stalled(self) -> Phase | None:
        return next((p for p in self.phases if not p.ok), None)

    def describe(self) -> str:
        return "; ".join(f"{p.name} {p.seconds:.1f}s" + ("" if p.ok else " (STALLED)") for p in self.phases)

    def seconds_until(self, name: str) -> float | None:
        """Seconds from the start to the end of phase `name`, if it completed."""
        total = 0.0
        for p in self.phases:
            total += p.seconds
            if p.name == name:
                return total if p.ok else None
        return None


@dataclass
class Phases:
    """Runs named phases in order, timing each; after a stall the remaining ones are not run
    (except those run with `always`: putting things back)."""

    node: str
    what: str
    done: list[Phase] = field(default_factory=list)

    def run(self, name: str, action: Callable[[], str], always: bool = False) -> bool:
        if not always and any(not p.ok for p in self.done):
            return False
        say(f"{self.what} on {self.node}: {name} ...")
        start = time.monotonic()
        try:
            observed, ok = action(), True
        except WaitTimeout as exc:
            if exc.last is None:  # not one successful read in the whole phase: the suite could not look
                raise DisruptionError(f"{self.what} on {self.node}: {name}: {exc}") from None
            observed, ok = str(exc), False
        except PhaseFailed as exc:
            observed, ok = str(exc), False
        seconds = time.monotonic() - start
        self.done.append(Phase(name, seconds, ok, observed))
        say(f"{self.what} on {self.node}: {name} {'done' if ok else 'STALLED'} after {seconds:.1f}s")
        return ok

    def timeline(self) -> Timeline:
        return Timeline(self.node, self.what, tuple(self.done))


@dataclass(frozen=True)
class NodeStatus:
    """What a recovery watches on a node."""

    ready: bool
    allocatable: int | None  # nvidia.com/gpu; None when not advertised
    boot_id: str
    unschedulable: bool

    def describe(self) -> str:
        return (f"Ready={self.ready}, allocatable {GPU_RESOURCE}={self.allocatable}, "
                f"unschedulable={self.unschedulable}, bootID={self.boot_id or '?'}")


def node_status(raw: Mapping[str, Any]) -> NodeStatus:
    """The recovery-relevant status of a node object (as a dict)."""
    status = raw.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    alloc = (status.get("allocatable") or {}).get(GPU_RESOURCE)
    return NodeStatus(
        ready=ready.get("status") == "True",
        allocatable=int(str(alloc)) if alloc is not None else None,
        boot_id=str((status.get("nodeInfo") or {}).get("bootID") or ""),
        unschedulable=bool((raw.get("spec") or {}).get("unschedulable")),
    )


def read_node(api: kr8s.Api, name: str) -> NodeStatus:
    return node_status(Node.get(name, api=api).raw)


def _wait_node(api: kr8s.Api, node: str, done: Callable[[NodeStatus], bool], what: str, timeout: float) -> NodeStatus:
    return wait_for(lambda: read_node(api, node), done, what=what, timeout=timeout,
                    describe=lambda s: s.describe(), tolerate=(kr8s.NotFoundError, *TRANSIENT), max_interval=1.0)


def _allocatable_back(api: kr8s.Api, node: str, expected: int, timeout: float, settle: float) -> str:
    """Wait until allocatable GPUs equal `expected` and have stayed so for `settle` seconds: the kubelet
    reports a lost device plugin only at its next status update, so a value read right after a
    disruption may still be the one from before it."""
    since: list[float] = []

    def look() -> tuple[NodeStatus, float]:
        st = read_node(api, node)
        if st.allocatable != expected:
            since.clear()
            return st, 0.0
        if not since:
            since.append(time.monotonic())
        return st, time.monotonic() - since[0]

    st, held = wait_for(look, lambda r: r[1] >= settle, what=f"allocatable {GPU_RESOURCE} on {node} back to {expected} "
                        f"and steady for {settle:.0f}s", timeout=timeout + settle,
                        describe=lambda r: f"{r[0].describe()} (steady for {r[1]:.1f}s)",
                        tolerate=(kr8s.NotFoundError, *TRANSIENT), max_interval=1.0)
    return f"{st.describe()}, steady for {held:.1f}s"


def restart_device_plugin(api: kr8s.Api, node: str, pod: tuple[str, str], selector: Mapping[str, str], expected: int,
                          timeout: float, settle: float, run_vector_add: Callable[[], str]) -> Timeline:
    """Delete the device-plugin pod `pod` (namespace, name) on `node`; wait for its DaemonSet (pods
    matching `selector`) to replace it and for allocatable GPUs to return to `expected`; then run a
    vector-add there."""
    phases = Phases(node, "device-plugin restart")
    namespace, name = pod
    old = Pod.get(name, namespace=namespace, api=api)
    old_uid = str(old.metadata.uid)
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))

    def delete() -> str:
        old.delete()
        return f"deleted pod {namespace}/{name} (uid {old_uid})"

    def replacement() -> str:
        def look() -> list[Mapping[str, Any]]:
            return [p.raw for p in api.get("pods", namespace=namespace, label_selector=label_selector,
                                            field_selector=f"spec.nodeName={node}")]

        def ready(pods: list[Mapping[str, Any]]) -> bool:
            return any(p["metadata"]["uid"] != old_uid and _pod_ready(p) for p in pods)

        pods = wait_for(look, ready, what=f"a new Ready device-plugin pod on {node}", timeout=timeout,
                        describe=lambda ps: ", ".join(f"{p['metadata']['name']} {_pod_phase(p)}" for p in ps) or "no pod",
                        tolerate=TRANSIENT, max_interval=1.0)
        new = next(p for p in pods if p["metadata"]["uid"] != old_uid and _pod_ready(p))
        return f"pod {namespace}/{new['metadata']['name']} Ready"

    phases.run("delete the device-plugin pod", delete)
    phases.run("replacement pod Ready", replacement)
    # A stale allocatable can pass the next phase; the vector-add after it cannot: the kubelet admits a
    # GPU pod only with devices a registered plugin reports healthy.
    phases.run(f"allocatable {GPU_RESOURCE} back to {expected}", lambda: _allocatable_back(api, node, expected, timeout, settle))
    phases.run("vector-add on the node", run_vector_add)
    return phases.timeline()


@dataclass(frozen=True)
class RebootPlan:
    """How to reboot a node and how long each phase may take."""

    command: tuple[str, ...]  # argv, already filled in for the node
    drain: bool
    command_timeout_s: float
    drain_timeout_s: float
    down_timeout_s: float
    ready_timeout_s: float
    allocatable_timeout_s: float
    settle_s: float


def fill_command(template: str, **values: str) -> tuple[str, ...]:
    """Split a command template like a shell would (no shell runs it) and fill {node}, {kubeconfig},
    {python} (the interpreter running the suite, for commands that are Python programs)."""
    try:
        return tuple(part.format(**values) for part in shlex.split(template))
    except (KeyError, IndexError, ValueError) as exc:
        raise GpuConformanceError(f"reboot command template {template!r}: {exc}; fields: "
                                  + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)) from None


def reboot(api: kr8s.Api, node: str, plan: RebootPlan, expected: int, run_id: str,
           run_vector_add: Callable[[], str]) -> Timeline:
    """Cordon and drain (if planned), run the reboot command, watch the node go down and come back
    Ready, wait for its GPUs, uncordon, run a vector-add. The node is uncordoned on any exit."""
    phases = Phases(node, "reboot")
    before = read_node(api, node)
    cordoned = False
    try:
        if plan.drain and not before.unschedulable:
            cordoned = True  # from here on, whatever happens, the finally uncordons
            phases.run("cordon", lambda: cordon(api, node, run_id))
            phases.run("drain", lambda: drain(api, node, plan.drain_timeout_s))
        failed: list[RebootCommandError] = []

        def command() -> str:
            try:
                return _run_command(plan.command, plan.command_timeout_s)
            except RebootCommandError as exc:  # e.g. ssh exits 255 as the connection drops with the node
                failed.append(exc)
                return f"{exc} (the node may still be going down: watching it)"

        phases.run("reboot command", command)
        went_down = phases.run("node goes down", lambda: _wait_node(
            api, node, lambda s: not s.ready or (bool(before.boot_id) and s.boot_id != before.boot_id),
            f"{node} to go down (NotReady, or a new boot id)", plan.down_timeout_s).describe())
        if failed and not went_down:
            raise failed[0]
        phases.run("node Ready again", lambda: _wait_node(
            api, node, lambda s: s.ready, f"{node} to be Ready again", plan.ready_timeout_s).describe())
        phases.run(f"allocatable {GPU_RESOURCE} back to {expected}",
                   lambda: _allocatable_back(api, node, expected, plan.allocatable_timeout_s, plan.settle_s))
        if cordoned and phases.timeline().stalled is None:  # a pod can run there only once it is schedulable
            phases.run("uncordon", lambda: uncordon(api, node, run_id))
            cordoned = False
        phases.run("vector-add on the node", run_vector_add)
    finally:
        if cordoned:
            try:
                phases.run("uncordon", lambda: uncordon(api, node, run_id), always=True)
            except Exception as exc:  # noqa: BLE001 - never hide the original outcome; the session end sweeps again
                phases.done.append(Phase("uncordon", 0.0, False, f"{type(exc).__name__}: {exc}"))
    return phases.timeline()


def _run_command(argv: Sequence[str], timeout: float) -> str:
    """Run the reboot command; its failure is the suite's problem (RebootCommandError), not the node's."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    # Messages name the program only: the rest of the command line may carry credentials.
    except FileNotFoundError:
        raise RebootCommandError(f"reboot command {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise RebootCommandError(f"reboot command {argv[0]!r} did not finish within {timeout:.0f}s") from None
    out = " ".join((proc.stdout + proc.stderr).split())
    if proc.returncode != 0:
        raise RebootCommandError(f"reboot command {argv[0]!r} exited {proc.returncode}: {out[-200:]}")
    return "exit 0"


def cordon(api: kr8s.Api, node: str, run_id: str) -> str:
    """Mark the node unschedulable, noting which run did it."""
    Node.get(node, api=api).patch({"metadata": {"annotations": {CORDONED_BY_ANNOTATION: run_id}},
                                   "spec": {"unschedulable": True}})
    return "unschedulable"


def uncordon(api: kr8s.Api, node: str, run_id: str | None = None) -> str:
    """Make the node schedulable again, if the suite (this run, or any with run_id None) cordoned it."""
    obj = Node.get(node, api=api)
    mark = (obj.metadata.get("annotations") or {}).get(CORDONED_BY_ANNOTATION)
    if mark is None or (run_id is not None and mark != run_id):
        return "left as it was (not cordoned by this run)"
    obj.patch({"metadata": {"annotations": {CORDONED_BY_ANNOTATION: None}}, "spec": {"unschedulable": None}})
    return "schedulable"


def restore_cordons(api: kr8s.Api, run_id: str | None = None) -> list[str]:
    """Uncordon every node the suite cordoned (in one run, or in any); returns their names."""
    done = []
    marks = transport.list_raw(api, "nodes", convert=lambda node: (
        str(node["metadata"]["name"]), (node["metadata"].get("annotations") or {}).get(CORDONED_BY_ANNOTATION)))
    for name, mark in marks:
        if mark is not None and (run_id is None or mark == run_id):
            uncordon(api, name)
            done.append(name)
    return done


def drain(api: kr8s.Api, node: str, timeout: float) -> str:
    """Evict the node's pods that are neither DaemonSet pods, mirror pods nor finished; wait until they are gone.

    A pod already being deleted (or in a namespace being deleted) is only waited for; an eviction a
    PodDisruptionBudget refuses for now (429) is tried again while waiting, like `kubectl drain`.
    """

    def movable() -> list[Mapping[str, Any]]:
        pods = [p.raw for p in api.get("pods", namespace=kr8s.ALL, field_selector=f"spec.nodeName={node}")]
        return [p for p in pods if _pod_phase(p) not in ("Succeeded", "Failed")
                and not any(o.get("kind") == "DaemonSet" for o in p["metadata"].get("ownerReferences") or [])
                and "kubernetes.io/config.mirror" not in (p["metadata"].get("annotations") or {})]

    evicted: set[tuple[str, str]] = set()

    def evict(pods: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        for raw in pods:
            ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
            if (ns, name) in evicted or raw["metadata"].get("deletionTimestamp"):
                continue
            body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
            status, text = api_call(api, "POST", ns, f"pods/{name}/eviction", timeout=30, body=body)
            if status == 429:  # a PodDisruptionBudget (or the API server's fairness) says not now
                continue
            if status in (200, 201, 404) or (status == 403 and any(m in text for m in NAMESPACE_TERMINATING)):
                evicted.add((ns, name))  # gone, going, or its namespace is being deleted with it
                continue
            raise DisruptionError(f"drain of {node}: eviction of {ns}/{name} refused: HTTP {status} {text[:200]}")
        return pods

    first = movable()
    try:
        wait_for(lambda: evict(movable()), lambda ps: not ps, what=f"the evicted pods to leave {node}",
                 timeout=timeout, tolerate=TRANSIENT, max_interval=1.0,
                 describe=lambda ps: ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in ps))
    except WaitTimeout as exc:  # the node was never emptied: the reboot was not tried, nothing is known
        raise DisruptionError(f"drain of {node}: {exc}") from None
    return f"evicted {len(first)} pod(s)"


def _pod_phase(raw: Mapping[str, Any]) -> str:
    return str((raw.get("status") or {}).get("phase") or "Pending")


def _pod_ready(raw: Mapping[str, Any]) -> bool:
    conds = (raw.get("status") or {}).get("conditions") or []
    return _pod_phase(raw) == "Running" and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

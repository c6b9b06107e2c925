"""Run workloads on nodes: namespaces, pods, waiting and evidence. No pytest here."""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import math
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx
import kr8s
from kr8s._async_utils import as_sync_func  # kr8s's bridge to its event loop (pinned <0.21)
from kr8s.objects import APIObject, DaemonSet, Namespace, Pod, get_class, new_class

from gpu_conformance import fanout, nodelocks, transport
from gpu_conformance.cluster import GPU_RESOURCE
from gpu_conformance.progress import Ticker, say
from gpu_conformance.waiting import WaitTimeout, status_of, wait_for, with_retries
from gpu_conformance.watch import Watch
from gpu_conformance.workloads import MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL, pin_to_nodes, pinned_nodes, render

NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
# Transient API trouble while polling counts as "not yet", not as an answer.
TRANSIENT = (kr8s.ServerError, kr8s.APITimeoutError, httpx.TransportError)
# A scheduler refusal is a verdict only once it has stood this long: nodes flap (a late heartbeat
# taints a node unreachable for a moment) and GPUs held by finishing pods are released.
REFUSAL_SETTLE_S = 5.0
# The wave's deadline comes this long after the longest queue's: pods are given up (and deleted, freeing their
# GPUs) at a look, and a look may end after the moment their clocks ran out.
LOOK_MARGIN_S = 10.0
# A pod the scheduler has not yet answered (neither placed nor refused) spends its clock only once the
# scheduler has answered none of the wave's other pods for the first time for this long: a scheduler working
# through a queue of thousands (its client's default limit is 50 requests a second) is not a missing one.
# The wave's own limit still holds: a pod the scheduler never reaches while it answers others ends undecided
# there. The wave's first pods get this long too, so the limit is lengthened by it.
SCHEDULER_QUIET_S = 10.0
# The controller-manager creates the default ServiceAccount within seconds of a namespace.
NAMESPACE_READY_TIMEOUT_S = 60.0


def new_run_id() -> str:
    """A short random id that labels everything one run creates."""
    return secrets.token_hex(4)


# Kinds whose plural is not kind + "s" (kr8s's guess for kinds it does not know).
IRREGULAR_PLURALS = {"ClusterPolicy": "clusterpolicies", "ValidatingAdmissionPolicy": "validatingadmissionpolicies"}


def create_object(api: kr8s.Api, manifest: Mapping[str, Any], exist_ok: bool = False, answer: bool = True) -> APIObject:
    """Create one object of any kind, custom resources included, from its manifest; with `exist_ok`,
    an object of that name already there (409) is fine. Without `answer`, the object returned is the
    manifest, not the object as created (see `create`)."""
    kind, version = manifest["kind"], manifest["apiVersion"]
    try:
        cls = get_class(kind, version)
    except KeyError:
        cls = new_class(kind, version, asyncio=False, namespaced="namespace" in manifest["metadata"],
                        plural=IRREGULAR_PLURALS.get(kind, kind.lower() + "s"))
    obj = cls(dict(manifest), api=api)
    try:
        create(obj, answer=answer)
    except kr8s.ServerError as exc:
        if not (exist_ok and status_of(exc) == 409):
            raise
    return obj


def answer_lost(exc: BaseException) -> bool:
    """A request that was sent, whose answer never came (the transport does not resend a POST then)."""
    return isinstance(exc, TRANSIENT) and status_of(exc) is None


def create(obj: APIObject, *, answer: bool = True) -> None:
    """Create an object, again after its answer was lost (the transport already retries 429 and 5xx
    answers, and connections never made). Already there (409) on a second attempt means the first
    one got through. `answer`: keep the object as created in `obj` (kr8s's create); a wave's pods
    leave it out (`_post`)."""
    attempts = 0

    def once() -> None:
        nonlocal attempts
        attempts += 1
        try:
            if answer:
                obj.create()
            else:
                _post(obj)
        except kr8s.ServerError as exc:
            if not (attempts > 1 and status_of(exc) == 409):
                raise

    with_retries(once, retry_on=answer_lost)


def _post(obj: APIObject) -> None:
    """kr8s's create, less the answer: the object as created, which kr8s keeps as a Box (milliseconds of
    the suite's time a pod, and a wave's answers, held until its last pod was created, 20 KiB a pod)."""

    async def post() -> None:
        assert obj.api is not None
        async with obj.api.call_api("POST", version=obj.version, url=obj.endpoint, namespace=obj.namespace,
                                    content=json.dumps(obj.raw_template)):
            pass

    as_sync_func(post)()


def api_call(api: kr8s.Api, method: str, namespace: str | None, url: str, timeout: float,
             body: Mapping[str, Any] | None = None) -> tuple[int, str]:
    """One core-API request on kr8s's own session (its call_api is async-only, even on the sync Api):
    (status code, body text); HTTP errors are returned, not raised."""

    async def call() -> tuple[int, str]:
        extra = {"json": dict(body)} if body is not None else {}
        async with api.call_api(method, version="v1", base="/api", namespace=namespace, url=url,
                                raise_for_status=False, timeout=timeout, **extra) as resp:
            return resp.status_code, resp.text

    return as_sync_func(call)()


def create_namespace(api: kr8s.Api, purpose: str, run_id: str) -> str:
    """Create a labelled namespace `gc-<purpose>-<random>` and wait until pods can be created in it."""
    ns = Namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "generateName": f"gc-{purpose}-"[:58],
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, RUN_LABEL: run_id},
            },
        },
        api=api,
    )
    # generateName: the server picks the name, and answers 409 AlreadyExists where its pick is taken (a
    # collision it did not retry itself); asking again gets a fresh name. A retry after a lost answer may
    # leave a second namespace, swept by label at cleanup.
    with_retries(ns.create, retry_on=lambda exc: answer_lost(exc) or status_of(exc) == 409)
    name = str(ns.name)
    wait_for(
        lambda: [sa.name for sa in api.get("serviceaccounts", "default", namespace=name)],
        bool,
        what=f"the default ServiceAccount in namespace {name}",
        timeout=NAMESPACE_READY_TIMEOUT_S,
        tolerate=(kr8s.NotFoundError, *TRANSIENT),
    )
    return name


def delete_namespace(api: kr8s.Api, name: str) -> None:
    """Delete a namespace without waiting (its pods go with it)."""
    try:
        Namespace({"metadata": {"name": name}}, api=api).delete(propagation_policy="Background")
    except kr8s.NotFoundError:
        pass


def delete_run_namespaces(api: kr8s.Api, run_id: str | None = None) -> list[str]:
    """Delete every namespace this suite created (of one run, or of any run); returns their names."""
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}" + (f",{RUN_LABEL}={run_id}" if run_id else "")
    names = [str(ns.name) for ns in api.get("namespaces", label_selector=selector)]
    for name in names:
        delete_namespace(api, name)
    return names


@dataclass(frozen=True)
class PodState:
    """The verdict-relevant part of a pod's status."""

    phase: str
    exit_code: int | None = None
    unschedulable: str | None = None
    reason: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    node: str | None = None  # where the scheduler bound it
    deleting: bool = False  # deletion asked for; the pod is going (or stuck Terminating on a dead node)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def decided(self) -> bool:
        """Finished (Succeeded/Failed) or refused by the scheduler: the verdict is the cluster's."""
        return self.finished or self.unschedulable is not None


ABSENT = PodState("Absent", reason="pod not found")


@dataclass(frozen=True)
class Observed:
    """A pod as the wave's watch keeps it: its state and, for a fan-out pod, what its wrapped containers reported."""

    state: PodState
    fanout: fanout.FanoutPod | None = None


def observe(raw: Mapping[str, Any]) -> Observed:
    return Observed(pod_state(raw), fanout.read(raw))


def payload_state(pod: PodState, fp: fanout.FanoutPod, timeout: float) -> PodState:
    """A fan-out pod's payload as if it had run in a pod of its own: finished once every wrapped container
    reported. A container that ended without a report, or that the wrapper stopped at its timeout, never
    finishes: the pod is given up at the group's timeout (undecided, an error: never a verdict)."""
    if fp.broken:
        return replace(pod, phase="Pending", reason=fp.broken)
    if fp.pending:  # still starting or running its wrapped containers (a Failed pod was evicted: that stands)
        return replace(pod, phase=pod.phase if pod.phase == "Failed" else "Pending")
    stopped = [name for name, r in fp.reports.items() if r.timed_out]
    if stopped:
        return replace(pod, phase="Running", reason=f"{', '.join(stopped)} still running when the fan-out wrapper "
                                                    f"stopped it at {timeout:.0f}s")
    code = next((r.exit_code for r in fp.reports.values() if r.exit_code != 0), 0)
    return replace(pod, phase="Succeeded" if code == 0 else "Failed", exit_code=code,
                   reason="Completed" if code == 0 else "Error", started_at=fp.started_at, finished_at=fp.finished_at)


def pod_state(raw: Mapping[str, Any]) -> PodState:
    """Convert a Pod object (as a dict) into its PodState."""
    status = raw.get("status", {}) or {}
    exit_code = None
    started = finished = None
    reason = str(status.get("reason", "") or "")
    for cs in status.get("containerStatuses", []) or []:
        state = cs.get("state", {}) or {}
        if "terminated" in state:
            term = state["terminated"]
            # The pod's exit code is its first failing container's, else 0.
            if exit_code in (None, 0):
                exit_code = term.get("exitCode")
            reason = reason or str(term.get("reason", ""))
            started = min(filter(None, [started, term.get("startedAt")]), default=None)
            finished = max(filter(None, [finished, term.get("finishedAt")]), default=None)
        elif "waiting" in state:
            w = state["waiting"]
            reason = reason or f"{w.get('reason', '')}: {w.get('message', '')}".strip(": ")
    for cs in status.get("initContainerStatuses", []) or []:  # an init container that cannot start (image pull)
        w = (cs.get("state", {}) or {}).get("waiting")
        if w and w.get("reason") not in (None, "PodInitializing"):
            reason = reason or f"init container {cs.get('name')}: {w.get('reason', '')}: {w.get('message', '')}".strip(": ")
    unschedulable = None
    for cond in status.get("conditions", []) or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            unschedulable = str(cond.get("message", "Unschedulable"))
    node = (raw.get("spec", {}) or {}).get("nodeName")
    deleting = bool((raw.get("metadata", {}) or {}).get("deletionTimestamp"))
    return PodState(str(status.get("phase", "Unknown")), exit_code, unschedulable, reason, started, finished, node, deleting)


@dataclass(frozen=True)
class PodOutcome:
    """What happened to one workload pod, with the evidence: logs, events and the submitted spec."""

    node: str
    pod: str
    namespace: str
    state: PodState
    # Reached a final state: finished, or refused by the scheduler for a reason that waiting cannot fix.
    settled: bool = True
    # Why the logs of a pod that ran could not be read (RBAC on pods/log, kubelet unreachable).
    logs_error: str | None = None
    # Evidence: kept out of repr so assertion introspection stays readable.
    container_logs: Mapping[str, str] = field(default_factory=dict, repr=False)
    events: tuple[str, ...] = field(default=(), repr=False)
    # The submitted manifest as JSON text: a run keeps every pod's outcome (9,000 at 1,000 nodes), and
    # the text is a seventh of the parsed manifest's memory.
    submitted: str = field(default="", repr=False)

    @property
    def spec(self) -> Mapping[str, Any]:
        """The manifest as submitted ({} where none was)."""
        return json.loads(self.submitted) if self.submitted else {}

    @property
    def logs(self) -> str:
        """The log of the pod's (first) container."""
        return next(iter(self.container_logs.values()), "")

    @property
    def succeeded(self) -> bool:
        return self.state.phase == "Succeeded" and self.state.exit_code in (0, None)

    def describe(self) -> str:
        st = self.state
        parts = [f"pod {self.namespace}/{self.pod} phase {st.phase}" + (f" on node {st.node}" if st.node else "")]
        if st.exit_code is not None:
            parts.append(f"exit code {st.exit_code}")
        if st.unschedulable:
            parts.append(f"unschedulable: {st.unschedulable}")
        elif st.reason:
            parts.append(st.reason)
        elif st.phase == "Pending" and not st.node:
            parts.append("never placed by a scheduler (is kube-scheduler running?)")
        elif st.phase == "Pending":
            parts.append("placed, never started by the node (is its kubelet running?)")
        return ", ".join(parts)


def events_by_object(api: kr8s.Api, namespace: str) -> dict[str, list[str]]:
    """Recent events in a namespace, as lines, grouped by the involved object's name."""
    out: dict[str, list[str]] = {}
    try:  # reduced to lines page by page: a wave's namespace holds events of thousands of pods
        events = transport.list_raw(api, "events", namespace, convert=_event_line)
    except TRANSIENT as exc:
        return {"": [f"(events unavailable: {exc})"]}
    for _, obj, line in sorted(events, key=lambda e: e[0]):
        out.setdefault(obj, []).append(line)
    return out


def _event_line(raw: Mapping[str, Any]) -> tuple[str, str, str]:
    """(when, involved object's name, line) of one event."""
    line = f"{raw.get('type', '')} {raw.get('reason', '')}: {raw.get('message', '')}".strip()
    return str(raw.get("lastTimestamp") or raw.get("eventTime") or ""), raw.get("involvedObject", {}).get("name", ""), line


def pod_logs(api: kr8s.Api, namespace: str, name: str, containers: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """Each container's log, and why one could not be fetched (None when all were): one request per container."""
    out: dict[str, str] = {}
    pod = Pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}}, api=api)
    for container in containers:
        try:
            out[container] = "\n".join(pod.logs(container=container, timeout=30))
        except (kr8s.NotFoundError, *TRANSIENT) as exc:
            return out, f"{type(exc).__name__}: {exc}"
    return out, None


# Requests the suite has in flight at once (kr8s multiplexes them on its own event loop): fast on a
# large cluster, and bounded so that the API server's priority and fairness is not flooded.
API_CONCURRENCY = 16
A = TypeVar("A")
B = TypeVar("B")


def concurrently(fn: Callable[[A], B], items: Sequence[A], limit: int = API_CONCURRENCY,
                 ok: Callable[[B], bool] = lambda _: True) -> list[B]:
    """fn over items, at most `limit` at once, results in order; the first exception is raised.

    The first item goes alone: on a 401/403 kr8s reloads its credentials and blanks the server address
    meanwhile, so requests in flight beside a refused one fail with a meaningless transport error. A first
    call that raises, or whose result is not `ok`, means the rest go one at a time, each with its real answer.
    """
    if not items:
        return []
    first = fn(items[0])
    rest = items[1:]
    if len(rest) <= 1 or not ok(first):
        return [first, *(fn(i) for i in rest)]
    with ThreadPoolExecutor(max_workers=min(limit, len(rest)), thread_name_prefix="gc-api") as pool:
        return [first, *pool.map(fn, rest)]


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate side by side arenas of their own (up to 8 a core), and memory freed in
    them stays with the process: with `concurrently`'s threads, a sixth of the peak RSS at 100 nodes. Call before
    threads start; the same as MALLOC_ARENA_MAX, which wins where set. Nothing where the C library is not glibc."""
    if not os.environ.get("MALLOC_ARENA_MAX"):
        _glibc("mallopt", _M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Give the system back the pages that glibc's allocator holds free (malloc_trim): what a phase of many
    threads freed (the wave, the metrics reads) stays resident otherwise, under whatever comes next (300 nodes:
    50 MiB of RSS after the metrics checks). Nothing where the C library is not glibc."""
    _glibc("malloc_trim", 0)


def _glibc(function: str, *args: int) -> None:
    """Call one of glibc's allocator functions; nothing where the C library has no such function."""
    try:
        getattr(ctypes.CDLL(None), function)(*args)
    except (OSError, AttributeError):
        pass


def _instant(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def ran_together(a: PodState, b: PodState) -> bool | None:
    """Whether two finished pods' run intervals overlap (None when a timestamp is missing).

    Kubernetes timestamps have one-second resolution: pods that ran back to back may share the
    second in which one ended and the other began, which is not an overlap.
    """
    if not (a.started_at and a.finished_at and b.started_at and b.finished_at):
        return None
    return _instant(a.started_at) < _instant(b.finished_at) and _instant(b.started_at) < _instant(a.finished_at)


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class PodGroup(Generic[K]):
    """Pods of one workload in one namespace (key -> (node, manifest)), and when one has settled.

    A finished pod has settled. A pod the scheduler refuses has settled when `unschedulable_is_final`
    says so (called with the key and the scheduler's message); otherwise it may fit later and is waited for.
    With `bound_is_final`, a pod the scheduler has placed on a node has settled too.
    With `pause_image`, the pods run through the cluster (see gpu_conformance.fanout): one DaemonSet per pod
    shape, whose pods wait in that image once their payload has reported.
    An `exclusive` group's pods have their nodes to themselves: the wave's other pods that could land on
    such a node wait (uncreated, their clocks stopped) until the exclusive pods there have settled.
    `lands_on` narrows the nodes a group's pods could land on where that is less than their affinity
    allows (a pod that asks for more GPUs than a node advertises takes none there): the oversized pod,
    allowed everywhere and fitting nowhere, waits for no exclusive pod.
    """

    what: str
    namespace: str
    pods: Mapping[K, tuple[str, Mapping[str, Any]]]
    timeout: float
    unschedulable_is_final: bool | Callable[[K, str], bool] = True
    bound_is_final: bool = False
    pause_image: str | None = None
    exclusive: bool = False
    lands_on: frozenset[str] | None = None


def run_pods(
    api: kr8s.Api,
    pods: Mapping[K, tuple[str, Mapping[str, Any]]],
    *,
    namespace: str,
    what: str,
    timeout: float,
    unschedulable_is_final: bool | Callable[[K, str], bool] = True,
    bound_is_final: bool = False,
    watch: Callable[[Mapping[K, PodState]], None] | None = None,
) -> dict[K, PodOutcome]:
    """Create the pods (key -> (node, manifest)) in `namespace`, wait until each settles (see PodGroup),
    collect evidence. `watch` sees every observation of the pods' states (by key) while they run."""
    return run_group(api, PodGroup(what, namespace, pods, timeout, unschedulable_is_final, bound_is_final), watch)


def run_group(api: kr8s.Api, group: PodGroup[K], watch: Callable[[Mapping[K, PodState]], None] | None = None,
              ) -> dict[K, PodOutcome]:
    """One group of pods on its own (see run_groups); `watch` sees the states by the group's keys."""
    seen = None if watch is None else (lambda states: watch({k: st for (_, k), st in states.items()}))
    return run_groups(api, {group.what: group}, what=group.what, watch=seen)[group.what]


def run_groups(
    api: kr8s.Api,
    groups: Mapping[str, PodGroup[Any]],
    *,
    what: str,
    watch: Callable[[Mapping[tuple[str, Any], PodState]], None] | None = None,
) -> dict[str, dict[Any, PodOutcome]]:
    """Run several groups of pods as one wave: created together, watched together, each pod settled by
    its group's rules and given up at its group's timeout.

    A pod's clock stops while the scheduler refuses it and another live pod of the wave is on its node
    (it queues behind the wave's own pods: a whole-node pod waits for the one-GPU pods there) or one
    deleted there has not gone yet (its kubelet has not confirmed; at most for the waiting pod's own
    timeout since the node's latest such deletion was first seen, as a dead kubelet never confirms), and while
    the scheduler has not answered it but keeps answering the wave's other pods (SCHEDULER_QUIET_S). A pod
    given up while it runs is deleted once its state and logs are kept, so it frees its GPUs for the
    pods queued behind it. The wait ends when every pod has settled or been given up, at the latest
    when the busiest node's pods would all have had their timeouts one after the other (a pod still
    queued then, e.g. behind a deletion a dead kubelet never confirms, is undecided: an error, never a verdict).

    No recovery check may disrupt a node while these pods run there (node names only: a key like
    "(any selected GPU node)" names no single node).
    """
    nodes = sorted({node for g in groups.values() for node, _ in g.pods.values() if NODE_NAME.fullmatch(node)})
    with nodelocks.for_server(api.auth.server).shared(nodes):
        return _run_groups(api, groups, what=what, watch=watch)


def _run_groups(
    api: kr8s.Api,
    groups: Mapping[str, PodGroup[Any]],
    *,
    what: str,
    watch: Callable[[Mapping[tuple[str, Any], PodState]], None] | None,
) -> dict[str, dict[Any, PodOutcome]]:
    started = time.monotonic()
    # (group, key): the pod's (namespace, name); created in the groups' order, the groups with the shortest
    # timeout first (the scheduler queues pods roughly first come first served: a scheduling check's pod
    # created behind a large cluster's thousands would be given up before the scheduler came to it).
    # A fan-out pod's name is the one it would have had in pod mode (its DaemonSet names the real one).
    pods = {(g, k): (grp.namespace, str(m["metadata"]["name"])) for g, grp in groups.items() for k, (_, m) in grp.pods.items()}
    if not pods:
        return {g: {} for g in groups}
    waits = _exclusive_waits(groups)
    soonest = sorted(groups.items(), key=lambda item: item[1].timeout)  # stable: otherwise the groups' order
    manifests = [m for g, grp in soonest if not grp.pause_image for k, (_, m) in grp.pods.items() if (g, k) not in waits]
    sets = [(grp.namespace, fs) for g, grp in groups.items() if grp.pause_image
            for fs in fanout.daemonsets(g, {(g, k): pod for k, pod in grp.pods.items()}, timeout=grp.timeout,
                                        pause_image=grp.pause_image)]
    namespaces = sorted({grp.namespace for grp in groups.values()})
    run_ids = {str((m["metadata"].get("labels") or {}).get(RUN_LABEL, "")) for grp in groups.values() for _, m in grp.pods.values()}
    selector = f"{RUN_LABEL}={next(iter(run_ids))}" if len(run_ids) == 1 and "" not in run_ids else f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    # One watch, whatever the number of namespaces: the namespace's pods, or the run's pods everywhere.
    with Watch(api, namespaces[0], None, observe) if len(namespaces) == 1 else Watch(api, None, selector, observe) as pw:
        fan = Fanout(api, sets)
        try:
            kinds: dict[str, type[APIObject]] = {"DaemonSet": DaemonSet, "Pod": Pod}
            daemonsets = fan.first(waits.__contains__)
            concurrently(lambda m: create(kinds[m["kind"]](dict(m), api=api), answer=False), [*daemonsets, *manifests])
            longest = max(grp.timeout for grp in groups.values())
            fanned = sum(len(fs.keys) for _, fs in sets)
            made = f"{len(manifests)} pod(s)" + (f" and {len(daemonsets)} fan-out DaemonSet(s) for {fanned} more" if sets else "")
            later = f"; {len(waits)} more wait for the exclusive pods on their nodes" if waits else ""
            say(f"{what}: created {made} in {', '.join(namespaces)}{later}; waiting up to {longest:.0f}s each")
            return _follow(api, groups, pods, namespaces, pw, fan, waits, what=what, watch=watch, started=started)
        finally:
            fan.release_all()


class Fanout:
    """The wave's fan-out DaemonSets: which group key each of their pods stands for, and which nodes each
    DaemonSet's node affinity names: the nodes whose keys are open (not held back behind an exclusive group)
    and not done. A DaemonSet is created once it has a node, patched as its nodes change (a node that
    reported leaves it, so its controller deletes that pod and its GPUs go to the pods queued behind: one
    patch per DaemonSet and look, not one request per node) and deleted once every key is done."""

    def __init__(self, api: kr8s.Api, sets: Sequence[tuple[str, fanout.FanoutSet]]) -> None:
        self.api = api
        self.keys = {(ns, fs.name): dict(fs.keys) for ns, fs in sets}
        self.manifests = {(ns, fs.name): fs.manifest for ns, fs in sets}
        self.daemonset = {key: ref for ref, keys in self.keys.items() for key in keys.values()}
        self.pinned: dict[tuple[str, str], frozenset[str] | None] = dict.fromkeys(self.keys)  # None: not created
        self.gone: set[tuple[str, str]] = set()

    def key(self, namespace: str, fp: fanout.FanoutPod) -> Any | None:
        return self.keys.get((namespace, fp.daemonset), {}).get(fp.target or "")

    def _wanted(self, ref: tuple[str, str], done: Callable[[Any], bool], held: Callable[[Any], bool]) -> frozenset[str]:
        return frozenset(n for n, key in self.keys[ref].items() if not done(key) and not held(key))

    def first(self, held: Callable[[Any], bool]) -> list[dict[str, Any]]:
        """The DaemonSets to create with the wave (those with an open node), pinned to their open nodes."""
        out = []
        for ref, manifest in self.manifests.items():
            nodes = self._wanted(ref, lambda _: False, held)
            if nodes:
                out.append(self._pinned(manifest, nodes))
                self.pinned[ref] = nodes
        return out

    @staticmethod
    def _pinned(manifest: Mapping[str, Any], nodes: frozenset[str]) -> dict[str, Any]:
        template = manifest["spec"]["template"]
        spec = {**template["spec"], "affinity": pin_to_nodes(sorted(nodes))}
        return {**manifest, "spec": {**manifest["spec"], "template": {**template, "spec": spec}}}

    def sync(self, done: Callable[[Any], bool], held: Callable[[Any], bool] = lambda _: False) -> None:
        """Bring every DaemonSet to its nodes (see the class); a request that fails transiently is tried again
        at the next look."""
        for ref, keys in self.keys.items():
            if ref in self.gone:
                continue
            finished = all(done(key) for key in keys.values())
            nodes = self._wanted(ref, done, held)
            if not finished and nodes == (self.pinned[ref] or frozenset()):
                continue
            ds = DaemonSet({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": ref[1], "namespace": ref[0]}},
                           api=self.api)
            try:
                if finished and self.pinned[ref] is not None:
                    ds.delete(propagation_policy="Background")
                elif self.pinned[ref] is None and not finished:
                    create(DaemonSet(self._pinned(self.manifests[ref], nodes), api=self.api), answer=False)
                elif not finished:
                    ds.patch({"spec": {"template": {"spec": {"affinity": pin_to_nodes(sorted(nodes))}}}}, type="merge")
            except kr8s.NotFoundError:
                pass
            except TRANSIENT:
                continue
            if finished:
                self.gone.add(ref)
            self.pinned[ref] = nodes

    def release_all(self) -> None:
        """Delete every DaemonSet still there (their pods hold GPUs other checks need)."""
        self.sync(lambda _: True)


def _follow(
    api: kr8s.Api,
    groups: Mapping[str, PodGroup[Any]],
    pods: Mapping[tuple[str, Any], tuple[str, str]],
    namespaces: Sequence[str],
    pw: Watch[Observed],
    fan: Fanout,
    waits: Mapping[tuple[str, Any], frozenset[tuple[str, Any]]],
    *,
    what: str,
    watch: Callable[[Mapping[tuple[str, Any], PodState]], None] | None,
    started: float,
) -> dict[str, dict[Any, PodOutcome]]:
    """Wait for the wave's pods (see run_groups), then collect their evidence."""
    held = set(waits)  # pods not created yet: the exclusive pods on their nodes have not all settled
    reports: dict[tuple[str, Any], tuple[str, fanout.FanoutPod]] = {}  # fan-out key -> (its pod, what it reported)
    payloads: dict[tuple[str, Any], PodState] = {}  # fan-out key -> its payload's last state (kept once its pod goes)
    holders: set[str] = set()  # nodes where a fan-out pod holds its GPUs (reported or not, until it is deleted)
    going: dict[tuple[str, str], str] = {}  # the wave's pods being deleted, and their nodes

    def listed() -> dict[tuple[str, str], PodState]:
        states: dict[tuple[str, str], PodState] = {}
        chosen: dict[tuple[str, Any], tuple[str, Observed]] = {}
        holders.clear()
        going.clear()
        for (ns, name), obs in pw.states().items():
            if obs.state.node and obs.state.deleting and not obs.state.finished:  # an ended pod holds no GPUs
                going[(ns, name)] = obs.state.node
            if obs.fanout is None:
                states[(ns, name)] = obs.state
                continue
            if obs.state.node and not obs.state.deleting:
                holders.add(obs.state.node)
            key = fan.key(ns, obs.fanout)
            if key is not None and (key not in chosen or chosen[key][1].state.deleting):
                chosen[key] = (name, obs)  # a pod going away gives way to its replacement
        for key, (name, obs) in chosen.items():
            assert obs.fanout is not None
            payloads[key] = payload_state(obs.state, obs.fanout, groups[key[0]].timeout)
            reports[key] = (name, obs.fanout)
        states.update({pods[key]: st for key, st in payloads.items()})
        return states

    refused_since: dict[tuple[str, Any], float] = {}
    spent = dict.fromkeys(pods, 0.0)  # seconds each pod's clock has run
    given_up: dict[tuple[str, Any], tuple[PodState, tuple[dict[str, str], str | None]]] = {}
    # The clocks start once the wave's first pods are created: creating them took a minute at 1,000 nodes,
    # and counting it gave the oversized pod's 60 s away before it was first looked at.
    last_look = [time.monotonic()]
    answered: set[tuple[str, Any]] = set()  # pods the scheduler has placed or refused
    last_answer = [last_look[0]]  # when the scheduler last answered a pod of the wave for the first time
    opened = dict.fromkeys(pods, last_look[0])  # when each pod's clock started (a held pod's: when it was created)
    longest_wait = [0.0]  # the longest a pod waited for the scheduler's first answer (progress output)
    going_since: dict[tuple[str, str], float] = {}  # when each pod being deleted was first seen going
    longest_going = [0.0]  # the longest a deleted pod took to go (progress output)

    def settled(key: tuple[str, Any], st: PodState) -> bool:
        grp = groups[key[0]]
        if st.finished or (grp.bound_is_final and st.node):
            return True
        if st.unschedulable is None:
            refused_since.pop(key, None)
            return False
        first = refused_since.setdefault(key, time.monotonic())
        if time.monotonic() - first < REFUSAL_SETTLE_S:
            return False
        final = grp.unschedulable_is_final
        return final(key[1], st.unschedulable) if callable(final) else final

    def logs_of(key: tuple[str, Any], st: PodState) -> tuple[dict[str, str], str | None]:
        ns, name = pods[key]
        if groups[key[0]].pause_image:  # fan-out: the reports carry the logs (a large one is read)
            if key not in reports:
                return {}, None
            pod, fp = reports[key]
            logs = {c: r.output for c, r in fp.reports.items() if r.output is not None}
            large = [c for c, r in fp.reports.items() if r.output is None]
            more, error = pod_logs(api, ns, pod, large) if large else ({}, None)
            merged = {**logs, **more}
            return {c: merged[c] for c in fp.reports if c in merged}, error
        containers = [c["name"] for c in groups[key[0]].pods[key[1]][1]["spec"]["containers"]]
        return pod_logs(api, ns, name, containers) if st.phase in ("Succeeded", "Failed", "Running") else ({}, None)

    def give_up(keys: list[tuple[str, Any]], states: Mapping[tuple[str, str], PodState]) -> None:
        """Keep what the pods showed, then delete the live ones: their GPUs go to the pods queued behind."""
        kept = concurrently(lambda key: logs_of(key, states.get(pods[key], ABSENT)), keys, ok=lambda got: got[1] is None)
        for key, logs in zip(keys, kept, strict=True):
            given_up[key] = (states.get(pods[key], ABSENT), logs)
        # A fan-out pod is not deleted (its DaemonSet would make another): its node is released instead.
        live = [pods[key] for key in keys if states.get(pods[key], ABSENT).phase not in ("Absent", "Succeeded", "Failed")
                and not groups[key[0]].pause_image]
        concurrently(lambda ref: _delete_pod(api, *ref), live)
        if live:
            say(f"{what}: gave up on {len(live)} pod(s) still running or pending at their timeout; deleted them")

    def observe() -> dict[tuple[str, str], PodState]:
        states = listed()
        now = time.monotonic()
        elapsed, last_look[0] = now - last_look[0], now
        # A node is busy while one of the wave's pods holds it. A deleted pod holds its GPUs until its kubelet
        # confirms (the scheduler counts them till then): for a while only, as a dead node never confirms.
        busy = {st.node for st in states.values() if st.node and not st.finished and not st.deleting} | holders
        for ref in going:
            going_since.setdefault(ref, now)
        for ref in [ref for ref in going_since if ref not in going]:
            longest_going[0] = max(longest_going[0], now - going_since.pop(ref))
        emptying: dict[str, float] = {}  # node -> since when its latest deleted pod is going
        for ref, node in going.items():
            emptying[node] = max(emptying.get(node, 0.0), going_since[ref])
        fresh = [key for key, ref in pods.items() if key not in answered and _answered(states.get(ref, ABSENT))]
        if fresh:
            answered.update(fresh)
            last_answer[0] = now
            longest_wait[0] = max(longest_wait[0], *(now - opened[key] for key in fresh))
        scheduling = now - last_answer[0] < SCHEDULER_QUIET_S
        done: set[tuple[str, Any]] = set()  # settled or given up
        expired = []
        for key, ref in pods.items():
            if key in held:
                continue
            st = states.get(ref, ABSENT)
            if key in given_up or settled(key, st):
                done.add(key)
                continue
            # Not the pod's own time: waiting for GPUs a pod of the wave holds (a deleted one: for as long as the
            # waiting pod's timeout), or in the queue of a working scheduler.
            node = groups[key[0]].pods[key[1]][0]
            behind = node in busy or now - emptying.get(node, -math.inf) < groups[key[0]].timeout
            queued = (st.unschedulable is not None and behind) or (scheduling and st.phase == "Pending" and not _answered(st))
            if not queued:
                spent[key] += elapsed
            else:  # a held pod's creation, taken off its clock for the next look to charge, is not a credit
                spent[key] = max(spent[key], 0.0)
            if spent[key] >= groups[key[0]].timeout:
                expired.append(key)
        if expired:
            give_up(expired, states)
            done.update(expired)
        if held:
            let_go = [key for key in held if waits[key] <= done]
            plain = [groups[g].pods[k][1] for g, k in let_go if not groups[g].pause_image]
            try:
                concurrently(lambda m: create_object(api, m, exist_ok=True, answer=False), plain)
            except TRANSIENT:
                pass  # the next look creates them (those made already answer 409: fine)
            else:
                held.difference_update(let_go)
                # Their clocks start now: the next look charges every pod since this one began, and creating
                # thousands of them (the whole-node pairs of a large cluster end together) takes a minute.
                creating = time.monotonic() - now
                for key in let_go:
                    spent[key] -= creating
                    opened[key] = now + creating
        fan.sync(done.__contains__, held.__contains__)
        if watch is not None:
            watch({key: states.get(ref, ABSENT) for key, ref in pods.items()})
        return states

    def undecided(states: Mapping[tuple[str, str], PodState]) -> list[tuple[str, str]]:
        return [ref for key, ref in pods.items() if key not in given_up and not settled(key, states.get(ref, ABSENT))]

    def summary(states: Mapping[tuple[str, str], PodState]) -> str:
        left = undecided(states)
        shown = ", ".join(f"{ns}/{n}={states.get((ns, n), ABSENT).phase}" for ns, n in left[:10])
        return f"{len(pods) - len(left)}/{len(pods)} settled or given up; waiting for: {shown}"

    ticker = Ticker()

    def finished(states: Mapping[tuple[str, str], PodState]) -> bool:
        left = len(undecided(states))
        if left and ticker.due():
            say(f"{what}: {len(pods) - left}/{len(pods)} pod(s) settled after {time.monotonic() - started:.0f}s")
        return not left

    try:
        states = wait_for(observe, finished, what=f"{what} pods to finish",
                          timeout=_longest_queue(groups) + SCHEDULER_QUIET_S + LOOK_MARGIN_S, describe=summary,
                          tolerate=TRANSIENT, max_interval=2.0)
    except WaitTimeout as exc:
        # Pods still queued at the last moment: return what we saw; callers treat undecided pods as errors.
        states = exc.last or {}
    events = {ns: events_by_object(api, ns) for ns in namespaces}
    rest = [key for key in pods if key not in given_up]
    all_logs = dict(zip(rest, concurrently(lambda key: logs_of(key, states.get(pods[key], ABSENT)), rest,
                                           ok=lambda got: got[1] is None), strict=True))
    out: dict[str, dict[Any, PodOutcome]] = {g: {} for g in groups}
    for key, (ns, name) in pods.items():
        node, manifest = groups[key[0]].pods[key[1]]
        state, (logs, logs_error) = given_up.get(key) or (states.get((ns, name), ABSENT), all_logs[key])
        if groups[key[0]].pause_image:  # fan-out: the DaemonSet's pod for the node, and the DaemonSet as submitted
            ds = fan.daemonset[key]
            name = reports[key][0] if key in reports else f"{ds[1]}-(no pod for {node})"
            # Its node affinity narrowed to this node: the whole list would make every node's evidence
            # grow with the cluster (and the run with its square).
            manifest = Fanout._pinned(fan.manifests[ds], frozenset({node}))
        out[key[0]][key[1]] = PodOutcome(node=node, pod=name, namespace=ns, state=state,
                                         settled=key not in given_up and settled(key, state),
                                         logs_error=logs_error, container_logs=logs,
                                         events=tuple(events[ns].get(name, [])),
                                         submitted=json.dumps(manifest, separators=(",", ":")))
    done = sum(o.settled for g in out.values() for o in g.values())
    if going_since:  # deleted pods not gone yet: as long as they have been going
        longest_going[0] = max(longest_going[0], time.monotonic() - min(going_since.values()))
    say(f"{what}: {done}/{len(pods)} pod(s) settled in {time.monotonic() - started:.1f}s"
        + (f"; the longest wait for the scheduler's first answer {longest_wait[0]:.0f}s" if answered else "")
        + (f", for a deleted pod to go {longest_going[0]:.0f}s" if longest_going[0] else ""))
    return out


def _answered(st: PodState) -> bool:
    """The scheduler has had its say on the pod: placed it, or refused it."""
    return st.node is not None or st.unschedulable is not None


def _longest_queue(groups: Mapping[str, PodGroup[Any]]) -> float:
    """The longest a wave's pods may take on their clocks: per node, its pods one after the other, each to its
    timeout; a pod for no single node may first wait behind the exclusive pods of every node."""
    per_node: dict[str, float] = {}
    exclusive: dict[str, float] = {}
    for grp in groups.values():
        for node, _ in grp.pods.values():
            per_node[node] = per_node.get(node, 0.0) + grp.timeout
            if grp.exclusive:
                exclusive[node] = exclusive.get(node, 0.0) + grp.timeout
    ahead = max(exclusive.values(), default=0.0)
    return max(t + (0.0 if NODE_NAME.fullmatch(node) else ahead) for node, t in per_node.items())


def _exclusive_waits(groups: Mapping[str, PodGroup[Any]]) -> dict[tuple[str, Any], frozenset[tuple[str, Any]]]:
    """Per pod of a non-exclusive group that could land on a node an exclusive group's pod is for: those
    exclusive pods (it is created, or its node added to its DaemonSet, once they have all settled)."""
    exclusive: dict[str, set[tuple[str, Any]]] = {}
    for g, grp in groups.items():
        if grp.exclusive:
            for k, (node, _) in grp.pods.items():
                exclusive.setdefault(node, set()).add((g, k))
    if not exclusive:
        return {}
    everyone = frozenset().union(*exclusive.values())
    waits = {}
    for g, grp in groups.items():
        if grp.exclusive:
            continue
        for k, (node, manifest) in grp.pods.items():
            if not _requests_gpus(manifest):
                continue  # takes no GPU from the exclusive pods
            nodes = frozenset([node]) if NODE_NAME.fullmatch(node) else pinned_nodes(manifest.get("spec") or {})
            if grp.lands_on is not None:
                nodes = grp.lands_on if nodes is None else nodes & grp.lands_on
            ahead = everyone if nodes is None else frozenset().union(*(exclusive.get(n, ()) for n in nodes))
            if ahead:
                waits[(g, k)] = ahead
    return waits


def _requests_gpus(manifest: Mapping[str, Any]) -> bool:
    spec = manifest.get("spec") or {}
    return any(int((c.get("resources") or {}).get(part, {}).get(GPU_RESOURCE, 0) or 0) > 0
               for c in [*spec.get("containers", ()), *spec.get("initContainers", ())] for part in ("limits", "requests"))


def _delete_pod(api: kr8s.Api, namespace: str, name: str) -> None:
    """Delete a pod with a one-second grace period (not forced: its kubelet must free its devices before
    the scheduler hands them on); gone already is fine."""
    try:
        Pod({"metadata": {"name": name, "namespace": namespace}}, api=api).delete(grace_period=1)
    except kr8s.NotFoundError:
        pass


def per_node_group(
    workload: str,
    nodes: Sequence[str],
    *,
    namespace: str,
    run_id: str,
    timeout: float,
    images: Mapping[str, str] | None = None,
    gpus: int | Mapping[str, int] = 1,
    tolerations: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    allocatable: Mapping[str, int] | None = None,
) -> PodGroup[str]:
    """One pod of `workload` pinned to each node (GPU count fixed or per node), keyed by node.

    With `allocatable` (per node), a pod refused for Insufficient nvidia.com/gpu that could fit
    once other pods release their GPUs is waited for; without it every refusal is final.
    """
    pods = {}
    for node in nodes:
        count = gpus if isinstance(gpus, int) else gpus[node]
        pod = render(workload, namespace=namespace, node=node, run_id=run_id, images=images, gpus=count,
                     tolerations=tolerations, extra=extra)[0]
        pods[node] = (node, pod)

    def final(node: str, message: str) -> bool:
        if allocatable is None or "Insufficient nvidia.com/gpu" not in message:
            return True
        count = gpus if isinstance(gpus, int) else gpus[node]
        return count > allocatable.get(node, 0)

    return PodGroup(workload, namespace, pods, timeout, unschedulable_is_final=final)


def run_per_node(
    api: kr8s.Api,
    workload: str,
    nodes: Sequence[str],
    *,
    watch: Callable[[Mapping[str, PodState]], None] | None = None,
    **group: Any,
) -> dict[str, PodOutcome]:
    """Run `per_node_group(workload, nodes, **group)` and wait until every pod settles."""
    return run_group(api, per_node_group(workload, nodes, **group), watch)

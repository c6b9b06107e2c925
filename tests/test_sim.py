"""The simulated cluster is a real control plane: the scheduler decides, kwok plays the kubelets."""

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kr8s
import pytest
from kr8s.objects import Pod

from gpu_conformance import runner
from gpu_conformance.scrape import free_local_port
from gpu_conformance.sim import binaries, scenario
from gpu_conformance.sim.control_plane import KWOK_NODE_ANNOTATION, NODE_LEASE_NAMESPACE, SimCluster, process_status
from gpu_conformance.sim.kwokconfig import NODE_LEASE_S
from gpu_conformance.waiting import wait_for
from gpu_conformance.workloads import GPU_TOLERATION, pod_name, render


@pytest.fixture
def namespace(sim_api: kr8s.Api) -> Iterator[str]:
    name = runner.create_namespace(sim_api, "simtest", "projtest")
    yield name
    runner.delete_namespace(sim_api, name)


def test_every_process_runs_at_the_pinned_release(sim_cluster: SimCluster, sim_api: kr8s.Api) -> None:
    state = sim_cluster.state()
    assert state is not None
    assert all(process_status(state).values())
    assert sim_api.version()["gitVersion"] == f"v{binaries.KUBERNETES_VERSION}"
    assert set(state.ports) >= {"etcd", "apiserver", "kwok"}


def test_nodes_carry_the_scenario_resources_labels_and_taints(sim_api: kr8s.Api) -> None:
    healthy = scenario.load(scenario.resolve("healthy"))
    nodes = {n.name: n.raw for n in sim_api.get("nodes", label_selector=f"{scenario.SCENARIO_LABEL}=healthy")}
    assert sorted(nodes) == sorted(n for n, _ in healthy.expanded())
    h100 = nodes["gpu-h100-2"]
    assert h100["status"]["capacity"]["nvidia.com/gpu"] == "8" == h100["status"]["allocatable"]["nvidia.com/gpu"]
    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    assert h100["metadata"]["labels"]["nvidia.com/cuda.driver.major"] == "580"
    assert h100["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert "nvidia.com/gpu" not in nodes["cpu-1"]["status"]["capacity"]
    ready = {c["type"]: c["status"] for c in h100["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_every_node_heartbeats_through_its_lease(sim_api: kr8s.Api) -> None:
    """The simulated kubelets renew a Lease per node, as kubelets do (every 10 s): the node lifecycle
    controller's heartbeat. Node status heartbeats alone (every 5 s) were minutes late at 1,000 nodes on
    two cores, and the controller-manager marked healthy nodes NotReady and their pods not ready."""
    nodes = [str(n.name) for n in sim_api.get("nodes") if (n.metadata.get("annotations") or {}).get(KWOK_NODE_ANNOTATION) == "fake"]
    leases = {str(lease.name): lease.raw["spec"] for lease in sim_api.get("leases", namespace=NODE_LEASE_NAMESPACE)}
    assert nodes and sorted(set(nodes) - set(leases)) == [], "every simulated node has a Lease"
    now = dt.datetime.now(dt.UTC)
    for node in nodes:
        spec = leases[node]
        assert spec["holderIdentity"] and spec["leaseDurationSeconds"] == NODE_LEASE_S
        renewed = dt.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
        assert (now - renewed).total_seconds() < 60, f"{node}'s Lease was last renewed at {spec['renewTime']}"


def _run_one(api: kr8s.Api, namespace: str, node: str, tolerations: list[dict], gpus: int = 1) -> runner.PodState:
    pod = render("vector-add", namespace=namespace, node=node, run_id="projtest", tolerations=tolerations, gpus=gpus)[0]
    Pod(pod, api=api).create()
    return wait_for(lambda: runner.pod_state(Pod.get(pod["metadata"]["name"], namespace=namespace, api=api).raw),
                    lambda st: st.decided, what="pod to be decided", timeout=60)


def test_scheduler_enforces_the_gpu_taint(sim_api: kr8s.Api, namespace: str) -> None:
    state = _run_one(sim_api, namespace, "gpu-h100-1", tolerations=[])
    assert state.phase == "Pending"
    assert state.unschedulable is not None and "untolerated taint" in state.unschedulable


def test_scheduler_enforces_gpu_resource_fit(sim_api: kr8s.Api, namespace: str) -> None:
    state = _run_one(sim_api, namespace, "gpu-a100-1", tolerations=[GPU_TOLERATION], gpus=5)  # the node has 4
    assert state.unschedulable is not None and "Insufficient nvidia.com/gpu" in state.unschedulable


def test_tolerating_pod_runs_and_its_log_comes_through_the_api(sim_api: kr8s.Api, namespace: str) -> None:
    state = _run_one(sim_api, namespace, "gpu-h100-1", tolerations=[GPU_TOLERATION])
    assert (state.phase, state.exit_code) == ("Succeeded", 0)
    logs = list(Pod.get(pod_name("vector-add", "gpu-h100-1"), namespace=namespace, api=sim_api).logs())
    assert logs[-2:] == ["Test PASSED", "Done"]


def test_up_again_is_idempotent(sim_cluster: SimCluster) -> None:
    before = sim_cluster.state()
    assert before is not None
    test_only = Path(__file__).parent / "data" / "scenarios"  # loaded beside the bundled ones (conftest.py)
    scenarios = [scenario.load(test_only / f"{n}.yaml" if (test_only / f"{n}.yaml").is_file() else scenario.resolve(n))
                 for n in before.scenario_names]
    after = sim_cluster.up(scenarios)
    assert after.pids == before.pids and after.ports == before.ports


def test_down_stops_every_process_and_frees_every_port(tmp_path: Path) -> None:
    import socket

    sim = SimCluster(tmp_path / "sim")
    small = scenario.Scenario(name="tiny", nodes=[scenario.NodeSpec(name="tiny-gpu", gpus=1)])
    state = sim.up([small])
    assert sim.is_up()
    assert sim.down()
    assert not any(process_status(state).values())
    for port in state.ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not (tmp_path / "sim").exists()


def test_a_port_taken_between_picking_and_binding_means_a_fresh_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI failure: the exporter's Jupyter port, free when picked, was bound by something else first."""
    import socket

    from gpu_conformance.sim import control_plane

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks: list[int] = []

    def pick() -> int:
        picks.append(taken.getsockname()[1] if len(picks) == 6 else free_local_port())  # the 7th: jupyter
        return picks[-1]

    monkeypatch.setattr(control_plane, "free_local_port", pick)
    sim = SimCluster(tmp_path / "sim")
    try:
        state = sim.up([scenario.Scenario(name="tiny", nodes=[scenario.NodeSpec(name="tiny-gpu", gpus=1)])])
        assert len(picks) == 14, "one fresh start on seven new ports"
        assert state.ports["jupyter"] != taken.getsockname()[1] and sim.is_up()
    finally:
        sim.down(quiet=True)
        taken.close()


def test_a_wave_of_groups_is_decided_together_each_by_its_own_rules(sim_api: kr8s.Api,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """runner.run_groups: three groups in two namespaces, one wait. A tolerating vector-add runs; an
    untolerating pod is refused for good; two whole-node pods queue on the node and run one after the
    other, each for as long as it says it runs (the simulated kubelet honours the annotation). The group
    with the shortest timeout is created first, whatever its place."""
    node, hold_s = "wave-gpu-1", 3
    created: list[list[str]] = []
    real = runner.concurrently

    def recording(fn, items, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not created and items and all(isinstance(i, dict) and i.get("kind") == "Pod" for i in items):
            created.append([i["metadata"]["name"] for i in items])
        return real(fn, items, *args, **kwargs)

    monkeypatch.setattr(runner, "concurrently", recording)
    first, second = (runner.create_namespace(sim_api, purpose, "projtest") for purpose in ("wave-a", "wave-b"))
    try:
        groups = {
            "vector-add": runner.per_node_group("vector-add", [node], namespace=first, run_id="projtest", timeout=60,
                                                tolerations=[GPU_TOLERATION], allocatable={node: 2}),
            "untolerated": runner.per_node_group("isolation-nogpu", [node], namespace=second, run_id="projtest",
                                                 timeout=45, tolerations=[]),
            "hold": runner.PodGroup("hold", second, {v: (node, render(
                "gpu-hold", namespace=second, node=node, run_id="projtest", gpus=2, tolerations=[GPU_TOLERATION],
                extra={"hold_s": hold_s}, variant=v)[0]) for v in ("a", "b")}, timeout=60, unschedulable_is_final=False),
        }
        out = runner.run_groups(sim_api, groups, what="wave test")
    finally:
        runner.delete_namespace(sim_api, first)
        runner.delete_namespace(sim_api, second)
    assert created[0][0] == pod_name("isolation-nogpu", node) and len(created[0]) == 4
    added = out["vector-add"][node]
    assert added.settled and added.succeeded and "Test PASSED" in added.logs
    refused = out["untolerated"][node]
    assert refused.settled and refused.state.unschedulable and "untolerated taint" in refused.state.unschedulable
    a, b = out["hold"]["a"], out["hold"]["b"]
    assert a.settled and b.settled, (a.describe(), b.describe())
    assert a.succeeded and b.succeeded, (a.describe(), b.describe())
    assert runner.ran_together(a.state, b.state) is False
    for pod in (a, b):
        assert pod.state.started_at and pod.state.finished_at
        took = dt.datetime.fromisoformat(pod.state.finished_at) - dt.datetime.fromisoformat(pod.state.started_at)
        assert took.total_seconds() >= hold_s - 1  # one-second timestamps


def test_a_wave_gives_up_a_hung_pod_and_its_gpus_go_to_the_pods_queued_behind(sim_api: kr8s.Api) -> None:
    """runner.run_groups: a vector-add that never ends holds one of two GPUs; whole-node pods queue
    behind it without spending their own timeout. At its timeout the hung pod is kept as evidence
    (Running, logs read), deleted, and the queued pods then run one after the other."""
    node = "wave-gpu-2"
    namespace = runner.create_namespace(sim_api, "wave-hung", "projtest")
    try:
        groups = {
            "hung": runner.per_node_group("vector-add", [node], namespace=namespace, run_id="projtest", timeout=4,
                                          allocatable={node: 2}),
            "hold": runner.PodGroup("hold", namespace, {v: (node, render(
                "gpu-hold", namespace=namespace, node=node, run_id="projtest", gpus=2,
                extra={"hold_s": 2}, variant=v)[0]) for v in ("a", "b")}, timeout=5, unschedulable_is_final=False),
        }
        out = runner.run_groups(sim_api, groups, what="hung wave test")
        left = {p.name for p in sim_api.get("pods", namespace=namespace)}
    finally:
        runner.delete_namespace(sim_api, namespace)
    hung = out["hung"][node]
    assert not hung.settled and hung.state.phase == "Running"
    assert "Vector addition" in hung.logs, "the given-up pod's log is kept"
    assert hung.pod not in left, "the given-up pod was deleted"
    a, b = out["hold"]["a"], out["hold"]["b"]
    assert a.settled and b.settled and a.succeeded and b.succeeded, (a.describe(), b.describe())
    assert runner.ran_together(a.state, b.state) is False


def _behind_a_hung_pod(api: kr8s.Api, node: str, purpose: str, *, hung_s: float, hold_s: float,
                       timeout: float) -> tuple[runner.PodOutcome, runner.PodOutcome, set[str], dt.datetime]:
    """A wave on `node`: a vector-add that never ends (given up at `hung_s`, then deleted) holds one of two GPUs,
    a whole-node pod (`timeout`) queues behind it. Their outcomes, the pods left when the wave ended, and when
    the wave began."""
    namespace = runner.create_namespace(api, purpose, "projtest")
    try:
        groups = {
            "hung": runner.per_node_group("vector-add", [node], namespace=namespace, run_id="projtest", timeout=hung_s,
                                          allocatable={node: 2}),
            "whole": runner.PodGroup("whole", namespace, {"a": (node, render(
                "gpu-hold", namespace=namespace, node=node, run_id="projtest", gpus=2, extra={"hold_s": hold_s},
                variant="a")[0])}, timeout=timeout, unschedulable_is_final=False),
        }
        began = dt.datetime.now(dt.timezone.utc)
        out = runner.run_groups(api, groups, what=f"{purpose} test")
        left = {p.name for p in api.get("pods", namespace=namespace)}
    finally:
        runner.delete_namespace(api, namespace)
    return out["hung"][node], out["whole"]["a"], left, began


def test_pods_queued_behind_a_deleted_pod_keep_their_clocks_until_it_is_gone(sim_api: kr8s.Api) -> None:
    """A deleted pod holds its GPUs until its kubelet confirms; a swamped one confirms late (at 1,000 nodes,
    pods queued behind the fan-out pods being deleted were given up: 353 errors). Here the hung vector-add is
    given up at 4 s and deleted, and its kubelet confirms 20 s later (wave-gpu-6's deletion_delay_s): the
    whole-node pod queued behind it, timeout 24 s, still runs. Its clock would have run from the deletion."""
    delay_s, hold_s, timeout = 20, 5, 24.0
    assert delay_s + hold_s > timeout, "the old clocks give the queued pod up"
    hung, whole, _, began = _behind_a_hung_pod(sim_api, "wave-gpu-6", "wave-going", hung_s=4, hold_s=hold_s, timeout=timeout)
    assert not hung.settled, hung.describe()
    assert whole.settled and whole.succeeded, whole.describe()
    waited = dt.datetime.fromisoformat(str(whole.state.started_at)) - began
    assert waited.total_seconds() >= 4 + delay_s - 1, "it ran once the late kubelet had confirmed the deletion"


def test_a_pod_queued_behind_a_deletion_never_confirmed_is_given_up(sim_api: kr8s.Api) -> None:
    """A dead kubelet never confirms a deletion (wave-gpu-7's comes after 600 s): the pod queued behind it waits
    for it one timeout at most, then its clock runs, and it is given up (and deleted) before the wave's limit."""
    _, whole, left, _ = _behind_a_hung_pod(sim_api, "wave-gpu-7", "wave-stuck", hung_s=3, hold_s=1, timeout=6)
    assert not whole.settled and whole.state.unschedulable, whole.describe()
    assert whole.pod not in left, "given up at its timeout (and deleted: never placed, it goes at once), not left at the wave's limit"


@pytest.mark.parametrize("pause_image", [None, "registry.k8s.io/pause:3.10"], ids=["pods", "fanout"])
def test_an_exclusive_group_has_its_node_to_itself(sim_api: kr8s.Api, pause_image: str | None) -> None:
    """runner.run_groups: two 1-GPU pods of an exclusive group on a 2-GPU node run together, although a
    1-GPU vector-add pinned there and a pod allowed on that node come first in the wave (either would have
    left one GPU, and the pair would have run one after the other); those two run once the pair has ended."""
    node = "wave-gpu-3"
    namespace = runner.create_namespace(sim_api, "wave-excl", "projtest")
    try:
        groups = {
            "vector-add": runner.PodGroup("vector-add", namespace, {node: (node, render(
                "vector-add", namespace=namespace, node=node, run_id="projtest")[0])}, timeout=60,
                pause_image=pause_image),
            "anywhere": runner.PodGroup("anywhere", namespace, {"pod": ("(any node)", render(
                "vector-add", namespace=namespace, node=[node], run_id="projtest", variant="any")[0])}, timeout=60),
            "pair": runner.PodGroup("pair", namespace, {v: (node, render(
                "gpu-hold", namespace=namespace, node=node, run_id="projtest", gpus=1, extra={"hold_s": 3},
                variant=v)[0]) for v in ("a", "b")}, timeout=60, unschedulable_is_final=False,
                pause_image=pause_image, exclusive=True),
        }
        out = runner.run_groups(sim_api, groups, what="exclusive wave test")
        left = [d.name for d in sim_api.get("daemonsets", namespace=namespace)]
    finally:
        runner.delete_namespace(sim_api, namespace)
    a, b = out["pair"]["a"], out["pair"]["b"]
    assert a.succeeded and b.succeeded, (a.describe(), b.describe())
    assert runner.ran_together(a.state, b.state) is True, (a.state, b.state)
    ended = max(dt.datetime.fromisoformat(str(p.state.finished_at)) for p in (a, b))
    for later in (out["vector-add"][node], out["anywhere"]["pod"]):
        assert later.succeeded, later.describe()
        assert dt.datetime.fromisoformat(str(later.state.started_at)) >= ended, (later.describe(), ended)
    assert left == [], "every fan-out DaemonSet is deleted by the end of the wave"


def _slowed(call: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    """`call`, taking `seconds` longer each time (a slow API server, as creating thousands of pods is)."""

    def slow(*args: Any, **kw: Any) -> Any:
        time.sleep(seconds)
        return call(*args, **kw)

    return slow


def test_a_pods_clock_starts_once_the_wave_is_created(sim_api: kr8s.Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a large wave takes its time (a minute for 4,000 pods at 1,000 nodes): a pod's timeout counts
    from then, not from before the first request. Here creating takes longer than the oversized pod's timeout;
    counted from the start, it was given up at the first look, before the scheduler's refusal could stand."""
    namespace = runner.create_namespace(sim_api, "wave-clock", "projtest")
    monkeypatch.setattr(runner, "create", _slowed(runner.create, runner.REFUSAL_SETTLE_S + 12))
    try:
        pod = render("vector-add", namespace=namespace, node=["wave-gpu-3"], run_id="projtest", gpus=3, variant="oversized")[0]
        group = runner.PodGroup("oversized", namespace, {"pod": ("(any node)", pod)}, timeout=runner.REFUSAL_SETTLE_S + 10,
                                lands_on=frozenset())
        out = runner.run_groups(sim_api, {"oversized": group}, what="wave clock test")
    finally:
        runner.delete_namespace(sim_api, namespace)
    refused = out["oversized"]["pod"]
    assert refused.settled, refused.describe()
    assert "Insufficient nvidia.com/gpu" in str(refused.state.unschedulable), refused.describe()


def test_a_held_pods_clock_starts_once_it_is_created(sim_api: kr8s.Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod held behind an exclusive pair is created when the pair has settled, in the look that saw it; at
    1,000 nodes that look creates thousands (the pairs end together). Here creating it takes longer than its
    timeout: charged to its clock, it was given up while it ran; it runs to the end instead."""
    node = "wave-gpu-4"
    namespace = runner.create_namespace(sim_api, "wave-held", "projtest")
    monkeypatch.setattr(runner, "create_object", _slowed(runner.create_object, 25))
    try:
        groups = {
            "pair": runner.PodGroup("pair", namespace, {v: (node, render(
                "gpu-hold", namespace=namespace, node=node, run_id="projtest", gpus=1, extra={"hold_s": 2},
                variant=v)[0]) for v in ("a", "b")}, timeout=60, unschedulable_is_final=False, exclusive=True),
            "later": runner.PodGroup("later", namespace, {"c": (node, render(
                "gpu-hold", namespace=namespace, node=node, run_id="projtest", gpus=1, extra={"hold_s": 4},
                variant="c")[0])}, timeout=20),
        }
        out = runner.run_groups(sim_api, groups, what="held clock test")
    finally:
        runner.delete_namespace(sim_api, namespace)
    later = out["later"]["c"]
    assert later.settled and later.succeeded, later.describe()


def _bind_slowly(api: kr8s.Api, namespace: str, names: list[str], node: str, every_s: float,
                 stop: threading.Event) -> threading.Thread:
    """A scheduler of the test's own: binds the pods to the node in order, one every `every_s` seconds
    (the first once it exists), as a scheduler at its rate limit reaches the last of thousands."""

    def bind() -> None:
        for i, name in enumerate(names):
            body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
            wait_for(lambda: None if stop.is_set() else runner.api_call(api, "POST", namespace, f"pods/{name}/binding", 10, body)[0],
                     lambda code: code in (None, 201), what=f"binding {name}", timeout=60)
            if i < len(names) - 1 and stop.wait(every_s):
                return

    thread = threading.Thread(target=bind, daemon=True)
    thread.start()
    return thread


def test_a_pod_in_a_working_schedulers_queue_keeps_its_clock(sim_api: kr8s.Api) -> None:
    """A scheduler placing thousands of pods at its rate limit reaches the last ones after their timeout
    (1,636 of a 9,000-pod fan-out wave at 1,000 nodes were given up as never placed). While the scheduler
    keeps answering pods of the wave, a pod it has not answered yet spends none of its clock. Here a slow
    scheduler places four pods 5 s apart, the last 15 s in, with a 7 s timeout: each runs. A fifth, which
    no scheduler places, is still given up (and deleted) as never placed once the scheduler has gone quiet,
    before the wave's own limit."""
    node, every_s, timeout = "wave-gpu-5", 5.0, 7.0
    assert 3 * every_s > timeout and every_s < runner.SCHEDULER_QUIET_S  # the old clocks gave c and d up
    namespace = runner.create_namespace(sim_api, "wave-queue", "projtest")
    placed, unplaced = ["a", "b", "c", "d"], "e"
    pods = {}
    for variant in [*placed, unplaced]:
        manifest = render("vector-add", namespace=namespace, node=node, run_id="projtest", variant=variant)[0]
        manifest["spec"]["schedulerName"] = "gpu-conformance-test-scheduler"  # kube-scheduler leaves them alone
        pods[variant] = (node, manifest)
    stop = threading.Event()
    binder = _bind_slowly(sim_api, namespace, [pod_name("vector-add", node, v) for v in placed], node, every_s, stop)
    try:
        out = runner.run_groups(sim_api, {"queue": runner.PodGroup("queue", namespace, pods, timeout=timeout)},
                                what="scheduler queue test")
        left = {p.name for p in sim_api.get("pods", namespace=namespace)}
    finally:
        stop.set()
        binder.join(timeout=30)
        runner.delete_namespace(sim_api, namespace)
    assert not binder.is_alive()
    for variant in placed:
        pod = out["queue"][variant]
        assert pod.settled and pod.succeeded, pod.describe()
    never = out["queue"][unplaced]
    assert not never.settled and "never placed by a scheduler" in never.describe(), never.describe()
    assert never.pod not in left, "given up at its own timeout (and deleted), not left at the wave's limit"


def test_a_pod_that_fits_no_node_waits_for_no_exclusive_pod() -> None:
    """The oversized pod is allowed on every node and fits none: nothing it could take from a whole-node pair,
    so it is created with the wave's first pods (held behind the pairs on every node, a 1,000-node wave created
    it minutes late, behind thousands of pods, and gave it up before the scheduler came to it). A pod that can
    land somewhere waits for the pairs there only."""
    nodes = ["wave-gpu-1", "wave-gpu-2"]
    pairs = runner.PodGroup("pair", "ns", {(n, v): (n, render("gpu-hold", namespace="ns", node=n, run_id="t", gpus=2, extra={"hold_s": 3},
                                                             variant=v)[0]) for n in nodes for v in ("a", "b")},
                            timeout=60, exclusive=True)

    def anywhere(lands_on: frozenset[str] | None) -> runner.PodGroup[str]:
        pod = render("vector-add", namespace="ns", node=nodes, run_id="t", gpus=3, variant="oversized")[0]
        return runner.PodGroup("oversized", "ns", {"pod": ("(any node)", pod)}, timeout=60, lands_on=lands_on)

    every_pair = frozenset(("pair", k) for k in pairs.pods)
    assert runner._exclusive_waits({"pair": pairs, "oversized": anywhere(None)}) == {("oversized", "pod"): every_pair}
    assert runner._exclusive_waits({"pair": pairs, "oversized": anywhere(frozenset())}) == {}
    assert runner._exclusive_waits({"pair": pairs, "oversized": anywhere(frozenset(["wave-gpu-2"]))}) == {
        ("oversized", "pod"): frozenset({("pair", ("wave-gpu-2", "a")), ("pair", ("wave-gpu-2", "b"))})}


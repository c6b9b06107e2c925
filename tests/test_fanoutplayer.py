"""The simulator's fan-out player: the simulated kubelet of the suite's workload DaemonSet pods.

Pure tests drive `FanoutPlayer.plan` with pods built by gpu_conformance.fanout from rendered workloads
and a fake clock; the live one runs a DaemonSet through the session's simulated cluster (the exporter
process plays it) and deletes it (kwok finishes the deletion).
"""

from __future__ import annotations

import copy
import datetime as dt
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import kr8s
import pytest
from kr8s.objects import DaemonSet

from gpu_conformance import fanout, runner
from gpu_conformance.sim import outputs, scenario
from gpu_conformance.sim.fanoutplayer import (
    NEVER,
    FanoutPlayer,
    Play,
    go_duration,
    played,
    runs,
    stamp,
)
from gpu_conformance.sim.scenario import NodeSpec, Scenario
from gpu_conformance.waiting import wait_for
from gpu_conformance.workloads import RUNS_FOR_ANNOTATION, default_images, render

T0 = 1_800_000_000.0  # the fake wall clock's start (a whole second), when the pods were scheduled


def _scenario(name: str) -> Scenario:
    return scenario.load(scenario.resolve(name))


def _manifest(workload: str, node: str, **extra: Any) -> dict[str, Any]:
    """A workload's pod manifest as the suite renders it for one node."""
    return render(workload, namespace="ns", node=node, run_id="r1", extra=extra or None)[-1]


def _daemonset(workload: str, nodes: list[str], timeout: float = 60, **extra: Any) -> dict[str, Any]:
    pods = {n: (n, _manifest(workload, n, **extra)) for n in nodes}
    sets = fanout.daemonsets(workload, pods, timeout=timeout, pause_image=default_images()["pause"])
    assert len(sets) == 1
    return dict(sets[0].manifest)


def _pod(ds: Mapping[str, Any], node: str, *, deleting: bool = False) -> dict[str, Any]:
    """The pod the DaemonSet controller creates for `node`, bound there by the scheduler (Pending)."""
    template = copy.deepcopy(ds["spec"]["template"])
    meta = {**template["metadata"], "name": f"{ds['metadata']['name']}-{node}", "namespace": ds["metadata"]["namespace"],
            "uid": f"uid-{ds['metadata']['name']}-{node}", "creationTimestamp": "2027-01-15T08:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2027-01-15T08:01:00Z"
    spec = {**template["spec"], "nodeName": node}
    status = {"phase": "Pending", "qosClass": "BestEffort",
              "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(T0)}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def _node(name: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _nodes(sc: Scenario, not_ready: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    return {n: _node(n, n not in not_ready) for n, _ in sc.expanded()}


def _apply(pod: dict[str, Any], play: Play) -> dict[str, Any]:
    """The pod after the player's merge patch of its status."""
    assert (play.namespace, play.name, play.uid) == (pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])
    return {**pod, "status": {**pod["status"], **play.status}}


def _spec(sc: Scenario, node: str) -> NodeSpec:
    return dict(sc.expanded())[node]


def _at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


# -- what a played pod reports ------------------------------------------------------------------------

@pytest.mark.parametrize(("scenario_name", "workload", "node"), [
    ("healthy", "vector-add", "gpu-h100-1"),
    ("fault-vector-add", "vector-add", "vf-gpu-2"),  # the payload fails: the wrapper reports its code
    ("healthy", "nvidia-smi", "gpu-a100-1"),
    ("fault-driver-not-loaded", "nvidia-smi", "dn-gpu-2"),
    ("fault-isolation-leaky", "isolation-nogpu", "li-gpu-2"),
    ("fault-ecc-errors", "nvml-probe", "ecc-gpu-1"),
    ("fault-isolation-leaky", "isolation-pair", "li-gpu-1"),
])
def test_reports_decode_to_the_outputs_of_pod_mode(scenario_name: str, workload: str, node: str) -> None:
    sc = _scenario(scenario_name)
    spec = _spec(sc, node)
    extra = {"code_configmap": "nvml-probe-code"} if workload == "nvml-probe" else {}
    pod = _pod(_daemonset(workload, [node], **extra), node)
    player = FanoutPlayer(None, [sc])
    assert player.plan(T0, [pod], _nodes(sc)) == []  # seen: its containers start
    plays = player.plan(T0 + 30, [pod], _nodes(sc))
    assert len(plays) == 1
    got = fanout.read(_apply(pod, plays[0]))
    assert got is not None and got.pending == () and got.broken is None and got.target == node
    containers = scenario.CONTAINERS.get(workload, (workload,))
    assert tuple(got.reports) == containers
    for c in containers:
        want = outputs.behaviour(workload, node, spec, c if workload in scenario.CONTAINERS else None)
        assert got.reports[c] == fanout.Report(want.exit_code, want.output), c
    if workload == "isolation-pair":  # each container prints what it sees
        assert got.reports["with-gpu"].output != got.reports["without-gpu"].output


def test_the_status_is_that_of_a_running_pod_whose_init_containers_ended() -> None:
    sc = _scenario("healthy")
    pod = _pod(_daemonset("vector-add", ["gpu-h100-1"]), "gpu-h100-1")
    player = FanoutPlayer(None, [sc])
    player.plan(T0, [pod], _nodes(sc))
    (play,) = player.plan(T0 + 1, [pod], _nodes(sc))
    st = play.status
    assert st["phase"] == "Running" and st["hostIP"] == "127.0.0.1" and st["podIP"].startswith("239.255.")
    assert {c["type"]: c["status"] for c in st["conditions"]} == \
        {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    (init,) = st["initContainerStatuses"]
    assert init["name"] == "vector-add" and init["image"] == pod["spec"]["initContainers"][0]["image"]
    assert init["state"]["terminated"]["exitCode"] == 0 and init["state"]["terminated"]["reason"] == "Completed"
    assert (init["ready"], init["started"], init["restartCount"]) == (True, False, 0)
    (wait,) = st["containerStatuses"]
    assert wait["name"] == fanout.PAUSE_CONTAINER and wait["ready"] and wait["started"] and "running" in wait["state"]
    assert played(_apply(pod, play))


# -- time -----------------------------------------------------------------------------------------------

def test_a_hanging_payload_reports_124_and_its_output_so_far_when_the_wrapper_times_out() -> None:
    sc = _scenario("fault-workload-hangs")
    pod = _pod(_daemonset("vector-add", ["hw-gpu-1"], timeout=7), "hw-gpu-1")
    player = FanoutPlayer(None, [sc])
    assert player.plan(T0, [pod], _nodes(sc)) == []
    assert player.plan(T0 + 6.9, [pod], _nodes(sc)) == []
    (play,) = player.plan(T0 + 7, [pod], _nodes(sc))
    got = fanout.read(_apply(pod, play))
    assert got is not None
    report = got.reports["vector-add"]
    assert report.timed_out and report.output == "[Vector addition of 50000 elements]"
    term = play.status["initContainerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0  # the wrapper's own: it always exits 0
    assert _at(term["finishedAt"]) - _at(term["startedAt"]) == 7


def test_a_payload_that_outlives_the_timeout_is_ended_there() -> None:
    sc = _scenario("healthy")
    pod = _pod(_daemonset("gpu-hold", ["gpu-h100-2"], timeout=5, hold_s=30), "gpu-h100-2")
    assert pod["metadata"]["annotations"][RUNS_FOR_ANNOTATION] == "30s"
    spec = _spec(sc, "gpu-h100-2")
    (run,) = runs(pod, "gpu-h100-2", spec)
    assert (run.exit_code, run.seconds, run.output) == (fanout.TIMED_OUT, 5, outputs.behaviour("gpu-hold", "gpu-h100-2", spec).output)
    within = _pod(_daemonset("gpu-hold", ["gpu-h100-2"], timeout=60, hold_s=30), "gpu-h100-2")
    assert [(r.exit_code, r.seconds) for r in runs(within, "gpu-h100-2", spec)] == [(0, 30)]  # runs-for, as kwok reads it


def test_a_hang_without_a_wrapper_timeout_is_never_played() -> None:
    sc = _scenario("fault-workload-hangs")
    pod = _pod(_daemonset("vector-add", ["hw-gpu-1"]), "hw-gpu-1")
    for c in pod["spec"]["initContainers"]:
        c["env"] = [e for e in c["env"] if e["name"] != fanout.TIMEOUT_ENV]
    assert [r.seconds for r in runs(pod, "hw-gpu-1", _spec(sc, "hw-gpu-1"))] == [NEVER]
    player = FanoutPlayer(None, [sc])
    assert player.plan(T0, [pod], _nodes(sc)) == [] and player.plan(T0 + 10**6, [pod], _nodes(sc)) == []


def test_init_containers_run_one_after_the_other_within_the_pods_time() -> None:
    sc = _scenario("healthy")
    ds = _daemonset("isolation-pair", ["gpu-h100-3"])
    ds["spec"]["template"]["metadata"]["annotations"][RUNS_FOR_ANNOTATION] = "4s"
    pod = _pod(ds, "gpu-h100-3")
    player = FanoutPlayer(None, [sc])
    assert player.plan(T0, [pod], _nodes(sc)) == []
    assert player.plan(T0 + 7.9, [pod], _nodes(sc)) == []
    (play,) = player.plan(T0 + 9, [pod], _nodes(sc))
    st = play.status
    first, second = (s["state"]["terminated"] for s in st["initContainerStatuses"])
    assert [s["name"] for s in st["initContainerStatuses"]] == ["with-gpu", "without-gpu"]
    times = [_at(t) for t in (st["startTime"], first["startedAt"], first["finishedAt"], second["startedAt"], second["finishedAt"],
                              st["containerStatuses"][0]["state"]["running"]["startedAt"])]
    assert times == [T0, T0, T0 + 4, T0 + 4, T0 + 8, T0 + 8]
    assert all(t.endswith("Z") and len(t) == len("2027-01-15T08:00:00Z") for t in (first["startedAt"], second["finishedAt"]))
    conds = {c["type"]: c["lastTransitionTime"] for c in st["conditions"]}
    assert conds["PodScheduled"] == pod["status"]["conditions"][0]["lastTransitionTime"]  # the scheduler's, kept
    assert _at(conds["Ready"]) == _at(conds["Initialized"]) == T0 + 8


# -- which pods -----------------------------------------------------------------------------------------

def test_a_pod_runs_from_when_it_was_scheduled_however_late_the_player_sees_it() -> None:
    sc = _scenario("fault-workload-hangs")
    pod = _pod(_daemonset("vector-add", ["hw-gpu-1"], timeout=7), "hw-gpu-1")
    player = FanoutPlayer(None, [sc])
    assert player.plan(T0 + 5, [pod], _nodes(sc)) == []
    assert player.clocks[pod["metadata"]["uid"]].due == T0 + 7
    (play,) = player.plan(T0 + 7, [pod], _nodes(sc))
    assert _at(play.status["startTime"]) == T0
    quick = _pod(_daemonset("vector-add", ["gpu-h100-1"]), "gpu-h100-1")
    healthy = _scenario("healthy")
    (play,) = FanoutPlayer(None, [healthy]).plan(T0 + 2, [quick], _nodes(healthy))  # due when first seen: played at once
    term = play.status["initContainerStatuses"][0]["state"]["terminated"]
    assert _at(term["startedAt"]) == _at(term["finishedAt"]) == T0  # 0.3 s, at second resolution


def test_pods_on_nodes_of_no_scenario_or_not_ready_or_being_deleted_are_left_alone() -> None:
    sc = _scenario("healthy")
    ds = _daemonset("isolation-nogpu", ["gpu-h100-1", "gpu-h100-2"])
    elsewhere = _pod(ds, "gpu-h100-1")
    elsewhere["spec"]["nodeName"] = "real-node-1"
    down, deleting = _pod(ds, "gpu-h100-2"), _pod(ds, "gpu-h100-1", deleting=True)
    nodes = {**_nodes(sc, not_ready=("gpu-h100-2",)), "real-node-1": _node("real-node-1")}
    player = FanoutPlayer(None, [sc])
    for t in (T0, T0 + 60):
        assert player.plan(t, [elsewhere, down, deleting], nodes) == []
    assert player.clocks == {}
    # Ready again: its containers start then (a dead kubelet ran nothing).
    assert player.plan(T0 + 100, [down], _nodes(sc)) == []
    (play,) = player.plan(T0 + 101, [down], _nodes(sc))
    assert _at(play.status["startTime"]) == T0 + 100


def test_a_played_pod_is_never_patched_again_nor_after_a_restart() -> None:
    sc = _scenario("healthy")
    pod = _pod(_daemonset("nvidia-smi", ["gpu-h100-1"]), "gpu-h100-1")
    player = FanoutPlayer(None, [sc])
    player.plan(T0, [pod], _nodes(sc))
    (play,) = player.plan(T0 + 1, [pod], _nodes(sc))
    assert player.plan(T0 + 2, [pod], _nodes(sc)) == []  # the patch not observed yet
    after = _apply(pod, play)
    assert player.plan(T0 + 3, [after], _nodes(sc)) == []
    restarted = FanoutPlayer(None, [sc])
    assert not restarted.wants_nodes(T0 + 4, [after])
    assert restarted.plan(T0 + 4, [after], _nodes(sc)) == [] and restarted.clocks == {}


def test_pods_that_disappear_are_forgotten_and_nodes_are_read_only_when_needed() -> None:
    sc = _scenario("healthy")
    a, b = (_pod(_daemonset("vector-add", [n]), n) for n in ("gpu-h100-1", "gpu-h100-2"))
    player = FanoutPlayer(None, [sc])
    assert not player.wants_nodes(T0, [])
    assert player.wants_nodes(T0, [a, b])  # new pods: their clocks start on a Ready node
    assert player.plan(T0, [a, b], _nodes(sc)) == []
    assert not player.wants_nodes(T0 + 0.1, [a, b])  # waiting: nothing to read
    assert player.wants_nodes(T0 + 0.3, [a, b])  # due
    assert [p.name for p in player.plan(T0 + 0.3, [a], _nodes(sc))] == [a["metadata"]["name"]]
    assert player.clocks == {} and player.done == {a["metadata"]["uid"]}
    assert player.plan(T0 + 1, [], {}) == [] and player.done == set()


def test_go_durations() -> None:
    assert [go_duration(t) for t in ("66s", "1m30s", "1.5s", "250ms", "2h", "", "66", "s", "1x")] == \
        [66, 90, 1.5, 0.25, 7200, None, None, None, None]


# -- through the simulated cluster --------------------------------------------------------------------

@pytest.fixture
def namespace(sim_api: kr8s.Api) -> Iterator[str]:
    name = runner.create_namespace(sim_api, "fanout", "projtest")
    yield name
    runner.delete_namespace(sim_api, name)


def test_a_daemonset_is_played_then_deleted_through_the_simulated_cluster(sim_api: kr8s.Api, namespace: str) -> None:
    node = "gpu-h100-1"  # healthy: vector-add passes there
    run_id = f"fanout-{secrets.token_hex(3)}"
    manifest = render("vector-add", namespace=namespace, node=node, run_id=run_id)[-1]
    # A window in which the bound pod must stay Pending: no kwok stage plays it, the player only when due.
    manifest["metadata"]["annotations"][RUNS_FOR_ANNOTATION] = "3s"
    (fs,) = fanout.daemonsets("vector-add", {node: (node, manifest)}, timeout=60, pause_image=default_images()["pause"])
    ds = DaemonSet(dict(fs.manifest), api=sim_api)
    ds.create()
    selector = f"{fanout.FANOUT_LABEL}={fs.name}"

    seen: list[tuple[str, bool, bool]] = []  # (phase, bound, played) of every observation

    def pods() -> list[dict[str, Any]]:
        raws = [p.raw for p in sim_api.get("pods", namespace=namespace, label_selector=selector)]
        seen.extend(((p.get("status") or {}).get("phase", ""), bool(p["spec"].get("nodeName")), played(p)) for p in raws)
        return raws

    def reported(raws: list[dict[str, Any]]) -> bool:
        got = [fanout.read(p) for p in raws]
        return len(got) == 1 and got[0] is not None and not got[0].pending

    (raw,) = wait_for(pods, reported, what="the fan-out pod's reports", timeout=60,
                      describe=lambda raws: repr([(p["metadata"]["name"], p["status"]) for p in raws]))
    got = fanout.read(raw)
    assert got is not None and got.target == node and got.broken is None
    report = got.reports["vector-add"]
    assert report.exit_code == 0 and report.output is not None and "Test PASSED" in report.output
    assert raw["status"]["phase"] == "Running" and raw["spec"]["nodeName"] == node
    assert ("Pending", True, False) in seen, seen  # bound, then left alone while its init container "ran"
    assert all(phase == "Pending" for phase, _, done in seen if not done), seen
    assert got.started_at is not None and got.finished_at is not None and got.started_at <= got.finished_at
    # Deleted: the garbage collector deletes the pod, kwok's pod-delete stage finishes it.
    ds.delete(propagation_policy="Background")
    wait_for(pods, lambda raws: not raws, what="the fan-out pods gone", timeout=90,
             describe=lambda raws: repr([(p["metadata"]["name"], p["metadata"].get("deletionTimestamp")) for p in raws]))

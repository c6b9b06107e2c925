"""Disruptions and node locks without a cluster: phase timelines, node status, reboot command
templates, and the shared/exclusive node locks across processes."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from gpu_conformance import disruption, nodelocks
from gpu_conformance.disruption import Phase, Phases, PhaseFailed, Timeline
from gpu_conformance.errors import GpuConformanceError
from gpu_conformance.waiting import WaitTimeout


def test_phases_stop_at_the_first_stall_but_always_restore() -> None:
    phases = Phases("n1", "reboot")
    assert phases.run("cordon", lambda: "unschedulable")

    def stall() -> str:
        raise WaitTimeout("n1 to be Ready again", 8, "st", "Ready=False", [], None)

    assert not phases.run("node Ready again", stall)
    assert not phases.run("vector-add", lambda: "never runs")
    assert phases.run("uncordon", lambda: "schedulable", always=True)
    timeline = phases.timeline()
    assert [p.name for p in timeline.phases] == ["cordon", "node Ready again", "uncordon"]
    assert timeline.stalled is not None and timeline.stalled.name == "node Ready again"
    assert "timed out after 8s waiting for n1 to be Ready again" in timeline.stalled.observed
    assert "node Ready again" in timeline.describe() and "(STALLED)" in timeline.describe()


def test_a_failed_phase_is_a_stall_and_other_exceptions_propagate() -> None:
    phases = Phases("n1", "device-plugin restart")

    def failed() -> str:
        raise PhaseFailed("vector-add: Failed")

    assert not phases.run("vector-add", failed)
    with pytest.raises(KeyError):
        Phases("n1", "x").run("boom", lambda: {}["missing"])


def test_a_phase_that_never_read_the_node_is_an_error_not_a_stall() -> None:
    def blind() -> str:
        raise WaitTimeout("n1 to be Ready again", 8, None, "nothing (no successful observation)", [], None)

    with pytest.raises(disruption.DisruptionError, match="node Ready again"):
        Phases("n1", "reboot").run("node Ready again", blind)


def test_seconds_until_a_phase() -> None:
    t = Timeline("n", "x", (Phase("a", 1.0, True, ""), Phase("b", 2.5, True, ""), Phase("c", 4.0, False, "")))
    assert t.seconds_until("b") == 3.5 and t.seconds_until("c") is None and t.seconds_until("zz") is None


def test_node_status_reads_readiness_gpus_heartbeat_boot_id_and_cordon() -> None:
    raw = {"spec": {"unschedulable": True},
           "status": {"conditions": [{"type": "Ready", "status": "False"}],
                      "allocatable": {"nvidia.com/gpu": "8"}, "nodeInfo": {"bootID": "b-1"}}}
    st = disruption.node_status(raw)
    assert (st.ready, st.allocatable, st.boot_id, st.unschedulable) == (False, 8, "b-1", True)
    assert disruption.node_status({}).allocatable is None and not disruption.node_status({}).ready


def test_reboot_command_templates() -> None:
    argv = disruption.fill_command("ssh -o BatchMode=yes {node} 'sudo systemctl reboot'", node="gpu-1", kubeconfig="k", python="p")
    assert argv == ("ssh", "-o", "BatchMode=yes", "gpu-1", "sudo systemctl reboot")
    with pytest.raises(GpuConformanceError, match=r"\{nodename\}|nodename"):
        disruption.fill_command("ssh {nodename} reboot", node="gpu-1", kubeconfig="k", python="p")
    with pytest.raises(GpuConformanceError):
        disruption.fill_command("ssh 'unterminated", node="gpu-1", kubeconfig="k", python="p")


def test_a_failing_reboot_command_is_the_suites_error_not_a_stall() -> None:
    with pytest.raises(disruption.RebootCommandError, match="exited 3: nope") as info:
        disruption._run_command(["sh", "-c", "echo nope; exit 3", "--token=s3cret"], timeout=10)
    assert "s3cret" not in str(info.value)  # only the program is named
    with pytest.raises(disruption.RebootCommandError, match="not found"):
        disruption._run_command(["/no/such/reboot-tool"], timeout=10)


def _hold(server: str, node: str, mode: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    locks = nodelocks.NodeLocks(server)
    cm = locks.exclusive(node) if mode == "exclusive" else locks.shared([node])
    with cm:
        ready.set()
        release.wait(30)


def _try(server: str, node: str, mode: str, timeout: float) -> bool:
    locks = nodelocks.NodeLocks(server)
    try:
        cm = locks.exclusive(node, timeout=timeout) if mode == "exclusive" else locks.shared([node], timeout=timeout)
        with cm:
            return True
    except WaitTimeout:
        return False


@pytest.mark.parametrize(("held", "wanted", "granted"), [
    ("shared", "shared", True), ("shared", "exclusive", False), ("exclusive", "shared", False), ("exclusive", "exclusive", False),
])
def test_node_locks_across_processes(held: str, wanted: str, granted: bool) -> None:
    server = f"https://test-{time.monotonic_ns()}"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(server, "gpu-1", held, ready, release))
    other.start()
    try:
        assert ready.wait(30)
        assert _try(server, "gpu-1", wanted, timeout=1.0) is granted
        assert _try(server, "gpu-2", "exclusive", timeout=1.0)  # another node is free
    finally:
        release.set()
        other.join(30)
    assert _try(server, "gpu-1", "exclusive", timeout=5.0)  # released when the holder ends


def test_node_locks_are_reentrant_within_a_process_but_never_upgrade() -> None:
    locks = nodelocks.NodeLocks(f"https://test-{time.monotonic_ns()}")
    with locks.exclusive("gpu-1"), locks.shared(["gpu-1"]):  # a disruptive check runs its own pods there
        pass
    with locks.shared(["gpu-1"]), pytest.raises(nodelocks.LockOrderError):
        with locks.exclusive("gpu-1"):
            pass


def test_pods_deleted_on_purpose_are_remembered_per_cluster() -> None:
    server = f"https://test-{time.monotonic_ns()}"
    nodelocks.record_disrupted(server, "gpu-operator", "nvidia-device-plugin-daemonset-abc", "r1")
    assert nodelocks.disrupted_pods(server) == {("gpu-operator", "nvidia-device-plugin-daemonset-abc")}
    assert nodelocks.disrupted_pods(server + "-other") == set()

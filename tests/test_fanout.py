"""Fan-out mode's pieces without a cluster: the wrapper script under a real sh, its message format, the
DaemonSets built from a group's pods, and reading a fan-out pod's status."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_conformance import fanout, runner
from gpu_conformance.workloads import render


def run_wrapper(tmp_path: Path, *payload: str, timeout: int = 30) -> str:
    """Run the wrapper as an init container would (its termination message redirected to a file)."""
    message = tmp_path / "termination-log"
    script = fanout.WRAPPER.replace("/dev/termination-log", str(message)).replace("/tmp/gc-fanout.out", str(tmp_path / "out"))
    done = subprocess.run(["sh", "-c", script, "gc-fanout", *payload], env={"PATH": "/usr/bin:/bin", fanout.TIMEOUT_ENV: str(timeout)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr  # the wrapper always exits 0: the chain goes on
    return message.read_text()


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("gzip") is None, reason="needs sh and gzip")
def test_the_wrapper_reports_the_payloads_exit_code_and_output(tmp_path: Path) -> None:
    report = fanout.decode(run_wrapper(tmp_path, "sh", "-c", "echo 'Test PASSED'; echo oops >&2; exit 3"))
    assert report == fanout.Report(3, "Test PASSED\noops\n")


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils timeout")
def test_the_wrapper_stops_a_hanging_payload_at_its_timeout(tmp_path: Path) -> None:
    report = fanout.decode(run_wrapper(tmp_path, "sh", "-c", "echo started; sleep 30", timeout=1))
    assert report is not None and report.timed_out and report.output == "started\n"


def test_a_payload_the_shell_cannot_run_is_reported_not_crashed(tmp_path: Path) -> None:
    report = fanout.decode(run_wrapper(tmp_path, "/no/such/payload"))
    assert report is not None and report.exit_code == 127 and "/no/such/payload" in (report.output or "")


def test_an_output_too_large_for_a_termination_message_is_left_to_the_log(tmp_path: Path) -> None:
    message = run_wrapper(tmp_path, "sh", "-c", "head -c 20000 /dev/urandom | base64")
    assert len(message) < 4096
    assert fanout.decode(message) == fanout.Report(0, None)


@given(st.integers(0, 255), st.text(max_size=3000))
def test_messages_round_trip(code: int, output: str) -> None:
    report = fanout.decode(fanout.encode(code, output))
    assert report is not None and report.exit_code == code
    assert report.output in (output, None)  # None: too large even compressed (read from the log)


@given(st.text(max_size=200))
def test_anything_else_is_not_a_report(junk: str) -> None:
    if not junk.startswith(fanout.MESSAGE_VERSION):
        assert fanout.decode(junk) is None


def test_a_damaged_message_is_not_a_report() -> None:
    good = fanout.encode(0, "Test PASSED\n" * 20)
    assert fanout.decode(good[: len(good) // 2]) is None


def _pods(nodes: dict[str, int]) -> dict[str, tuple[str, dict]]:
    return {n: (n, render("nvidia-smi", namespace="ns", node=n, run_id="r1", gpus=g)[0]) for n, g in nodes.items()}


def test_one_daemonset_per_pod_shape_pinned_to_its_nodes() -> None:
    sets = fanout.daemonsets("nvidia_smi", _pods({"a": 1, "b": 1, "c": 2}), timeout=300, pause_image="pause:1")
    assert [fs.name for fs in sets] == ["nvidia-smi-0", "nvidia-smi-1"]
    assert [dict(fs.keys) for fs in sets] == [{"a": "a", "b": "b"}, {"c": "c"}]
    spec = sets[0].manifest["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchFields"][0]["values"] for t in terms] == [["a"], ["b"]]
    init = spec["initContainers"][0]
    assert init["name"] == "nvidia-smi" and init["command"][:2] == ["sh", "-c"] and init["command"][-1] == "nvidia-smi"
    assert init["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": fanout.TIMEOUT_ENV, "value": "300"} in init["env"]
    assert [c["name"] for c in spec["containers"]] == [fanout.PAUSE_CONTAINER] and "resources" in spec["containers"][0]
    assert sets[0].manifest["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sets[0].manifest["spec"]["template"]["metadata"]["labels"][fanout.FANOUT_LABEL] == "nvidia-smi-0"


def test_a_workload_without_a_command_is_wrapped_through_its_declared_entrypoint() -> None:
    pods = {"a": ("a", render("vector-add", namespace="ns", node="a", run_id="r1")[0])}
    init = fanout.daemonsets("vector_add", pods, timeout=60, pause_image="p")[0].manifest["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][-1] == "/cuda-samples/vectorAdd"
    with pytest.raises(ValueError, match="names no command"):
        fanout.wrap({"name": "x", "image": "i"}, 60)


def _pod(*inits: tuple[str, dict | None], node: str = "n1") -> dict:
    statuses = [{"name": n, "state": ({"terminated": t} if t else {"waiting": {"reason": "PodInitializing"}})} for n, t in inits]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
    return {"metadata": {"name": "p-x1", "namespace": "ns", "labels": {fanout.FANOUT_LABEL: "isolation-pair-0"}},
            "spec": {"affinity": affinity, "initContainers": [{"name": n} for n, _ in inits]},
            "status": {"phase": "Pending", "initContainerStatuses": statuses}}


def _ended(code: int, output: str, start: str = "2026-11-23T10:00:00Z", end: str = "2026-11-23T10:00:02Z") -> dict:
    return {"exitCode": 0, "reason": "Completed", "message": fanout.encode(code, output), "startedAt": start, "finishedAt": end}


def test_a_fan_out_pod_is_its_payloads_outcome() -> None:
    raw = _pod(("with-gpu", _ended(0, "GPU 0\n", end="2026-11-23T10:00:01Z")),
               ("without-gpu", _ended(4, "none\n", start="2026-11-23T10:00:01Z", end="2026-11-23T10:00:03Z")))
    fp = fanout.read(raw)
    assert fp is not None and fp.daemonset == "isolation-pair-0" and fp.target == "n1" and not fp.pending
    state = runner.payload_state(runner.pod_state(raw), fp, 60)
    assert (state.phase, state.exit_code) == ("Failed", 4)
    assert (state.started_at, state.finished_at) == ("2026-11-23T10:00:00Z", "2026-11-23T10:00:03Z")
    assert fanout.read({"metadata": {"name": "other"}}) is None


def test_a_fan_out_pod_still_running_its_payload_is_pending() -> None:
    fp = fanout.read(_pod(("with-gpu", _ended(0, "GPU 0\n")), ("without-gpu", None)))
    assert fp is not None and fp.pending == ("without-gpu",)
    assert runner.payload_state(runner.PodState("Pending"), fp, 60).phase == "Pending"


def test_a_stopped_payload_or_a_missing_report_never_settles() -> None:
    stopped = fanout.read(_pod(("with-gpu", _ended(fanout.TIMED_OUT, "started\n"))))
    assert stopped is not None
    state = runner.payload_state(runner.PodState("Running"), stopped, 60)
    assert not state.finished and "stopped it at 60s" in state.reason
    broken = fanout.read(_pod(("with-gpu", {"exitCode": 1, "reason": "Error", "message": "sh: not found"})))
    assert broken is not None and broken.broken is not None
    assert not runner.payload_state(runner.PodState("Pending"), broken, 60).finished


def test_the_two_pods_of_a_pair_on_one_node_go_to_two_daemonsets() -> None:
    pods = {(n, v): (n, render("gpu-hold", namespace="ns", node=n, run_id="r1", gpus=8, extra={"hold_s": 3}, variant=v)[0])
            for n in ("a", "b") for v in ("a", "b")}
    sets = fanout.daemonsets("gpu_hold_pairs", pods, timeout=60, pause_image="p")
    assert [dict(fs.keys) for fs in sets] == [{"a": ("a", "a"), "b": ("b", "a")}, {"a": ("a", "b"), "b": ("b", "b")}]

"""kwok configuration generated from scenarios: exclusive stages, CRI logs keyed on the suite's pod names."""

from pathlib import Path

import pytest
import yaml

from gpu_conformance.sim import kwokconfig, outputs, scenario
from gpu_conformance.sim.scenario import KNOWN_WORKLOADS
from gpu_conformance.workloads import pod_name


@pytest.fixture
def fault_docs(tmp_path: Path) -> list[dict]:
    sc = scenario.load(scenario.resolve("fault-vector-add"))
    return kwokconfig.generate(sc.expanded(), tmp_path)


def _completion_stages(docs: list[dict], workload: str) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == "Stage" and name.startswith(f"pod-complete-{workload}-exit-"):
            exprs = d["spec"]["selector"]["matchExpressions"]
            nodes = next(e["values"] for e in exprs if e["key"] == ".spec.nodeName")
            code = int(name.removeprefix(f"pod-complete-{workload}-exit-").split("-")[0])
            out.setdefault(code, set()).update(nodes)
    return out


def test_each_node_has_exactly_one_completion_stage_per_workload(fault_docs: list[dict]) -> None:
    for workload in KNOWN_WORKLOADS:
        if workload == "notebook":
            continue  # long-running: no completion stage
        stages = _completion_stages(fault_docs, workload)
        members = [n for nodes in stages.values() for n in nodes]
        assert sorted(members) == ["vf-gpu-1", "vf-gpu-2"], workload


def test_vector_add_fails_only_where_the_scenario_says(fault_docs: list[dict]) -> None:
    assert _completion_stages(fault_docs, "vector-add") == {0: {"vf-gpu-1"}, 1: {"vf-gpu-2"}}
    failed = next(d for d in fault_docs if d["metadata"]["name"].startswith("pod-complete-vector-add-exit-1-"))
    template = failed["spec"]["next"]["statusTemplate"]
    assert "exitCode: 1" in template and "phase: Failed" in template


def test_logs_are_cri_lines_keyed_on_the_suite_pod_names(fault_docs: list[dict]) -> None:
    logs = [d for d in fault_docs if d["kind"] == "ClusterLogs" and d["metadata"]["name"].startswith("vector-add-")]
    by_pod = {name: Path(d["spec"]["logs"][0]["logsFile"]) for d in logs for name in d["spec"]["selector"]["matchNames"]}
    assert set(by_pod) == {pod_name("vector-add", "vf-gpu-1"), pod_name("vector-add", "vf-gpu-2")}
    passed = by_pod[pod_name("vector-add", "vf-gpu-1")].read_text().splitlines()
    assert passed[-2].endswith(" stdout F Test PASSED")
    assert all(line.split(" ", 3)[1:3] == ["stdout", "F"] for line in passed)
    failed = by_pod[pod_name("vector-add", "vf-gpu-2")].read_text()
    assert "Test PASSED" not in failed and "no CUDA-capable device" in failed


def test_nodes_without_allocatable_gpus_fail_cuda_workloads_by_default() -> None:
    sc = scenario.load(scenario.resolve("fault-allocatable-zero"))
    specs = dict(sc.expanded())
    assert outputs.behaviour("vector-add", "az-gpu-2", specs["az-gpu-2"]).exit_code == 1
    assert outputs.behaviour("vector-add", "az-gpu-1", specs["az-gpu-1"]).exit_code == 0


FANOUT_EXCLUDED = {"key": '.metadata.labels["gpu-conformance.io/fanout"]', "operator": "DoesNotExist"}


def test_no_stage_but_deletion_plays_fan_out_pods(tmp_path: Path) -> None:
    """The simulator's fan-out player plays them (gpu_conformance.sim.fanoutplayer); kwok only finishes their deletion."""
    from gpu_conformance.fanout import FANOUT_LABEL
    from gpu_conformance.sim import stackobjects

    assert FANOUT_EXCLUDED["key"] == f'.metadata.labels["{FANOUT_LABEL}"]'
    scenarios = [scenario.load(scenario.resolve(n)) for n in scenario.bundled()]
    nodes = [n for sc in scenarios for n in sc.expanded()]
    docs = kwokconfig.generate(nodes, tmp_path, stackobjects.crash_keys(scenarios), stackobjects.restart_keys(scenarios), 8888)
    stages = {d["metadata"]["name"]: d["spec"]["selector"]["matchExpressions"]
              for d in docs if d["kind"] == "Stage" and d["spec"]["resourceRef"]["kind"] == "Pod"}
    ready = {"pod-ready", "pod-running-not-ready", "pod-ready-no-ip"}
    assert ready <= set(stages)
    for name in ready:
        assert FANOUT_EXCLUDED in stages[name], name
    assert FANOUT_EXCLUDED not in stages["pod-delete"]
    assert stages["pod-delete"] == [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}]
    # The others cannot match a DaemonSet's pod: completions want restartPolicy Never/OnFailure (a DaemonSet's
    # is Always); crash-loops and restarts are keyed on stack components, strandings on their own label.
    for name, exprs in stages.items():
        if name.startswith("pod-complete-"):
            assert {"key": ".spec.restartPolicy", "operator": "In", "values": ["Never", "OnFailure"]} in exprs, name
        elif name in ("pod-crashloop", "pod-restarting"):
            assert any(e["key"] == kwokconfig.COMPONENT_AT_NODE and e["operator"] == "In" for e in exprs), name
        elif name == "pod-stranded":
            assert {"key": f'.metadata.labels["{kwokconfig.STRANDED_LABEL}"]', "operator": "In", "values": ["true"]} in exprs
        else:
            assert name in ready or name == "pod-delete", f"unexpected pod stage {name}: exclude fan-out pods there"


def test_a_late_kubelet_confirms_deletions_after_its_delay(tmp_path: Path) -> None:
    """deletion_delay_s: the node's pods are deleted by a twin of pod-delete that waits; pod-delete leaves them."""
    nodes = [("late-1", scenario.NodeSpec(name="late-1", gpus=2, deletion_delay_s=16)), ("prompt-1", scenario.NodeSpec(name="prompt-1"))]
    stages = {d["metadata"]["name"]: d["spec"] for d in kwokconfig.generate(nodes, tmp_path) if d["kind"] == "Stage"}
    deleting = {"key": ".metadata.deletionTimestamp", "operator": "Exists"}
    assert stages["pod-delete"]["selector"]["matchExpressions"] == [
        deleting, {"key": ".spec.nodeName", "operator": "NotIn", "values": ["late-1"]}]
    late = stages["pod-delete-after-16000ms"]
    assert late["selector"]["matchExpressions"] == [deleting, {"key": ".spec.nodeName", "operator": "In", "values": ["late-1"]}]
    assert late["delay"] == {"durationMilliseconds": 16000}
    assert late["next"] == stages["pod-delete"]["next"]
    prompt = kwokconfig.generate([nodes[1]], tmp_path / "prompt")
    assert not [d for d in prompt if d["metadata"]["name"].startswith("pod-delete-after")]
    base = next(d for d in yaml.safe_load_all(kwokconfig._STAGES.read_text()) if d["metadata"]["name"] == "pod-delete")
    assert next(d for d in prompt if d["metadata"]["name"] == "pod-delete") == base, "without late nodes: as before"

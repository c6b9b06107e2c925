"""The suite end to end on the simulated cluster: every check passes on the healthy scenario and
fails, naming the node, on the fault scenario built for it."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import kr8s

from gpu_conformance.sim import scenario
from gpu_conformance.waiting import wait_for

HEALTHY_GPU_NODES = ["gpu-a100-1", "gpu-h100-1", "gpu-h100-2", "gpu-h100-3"]
CHECKS = ["GPU-NODE-001", "GPU-WL-001"]  # checks that apply to every GPU node without a profile


def _by_check(summary: dict) -> dict[tuple[str, str], dict]:
    return {(r["id"], r["node"]): r for r in summary["results"]}


def test_healthy_scenario_passes_every_check_on_every_gpu_node(run_suite, sim_api: kr8s.Api) -> None:
    code, summary, out, report_dir = run_suite("healthy", "--run-id=e2eheal", "--gate=disruptive")
    assert code == 0, out
    results = _by_check(summary)
    assert {(c, n) for c in CHECKS for n in HEALTHY_GPU_NODES} <= set(results)
    assert {results[(c, n)]["status"] for c in CHECKS for n in HEALTHY_GPU_NODES} == {"passed"}
    assert summary["totals"]["failed"] == summary["totals"]["error"] == 0
    # Without a profile, profile-dependent checks are skipped with their reason, never passed silently.
    taint = results[("GPU-TAINT-001", "gpu-h100-1")]
    assert taint["status"] == "skipped" and "taints.required" in taint["message"]
    # The device plugin of the first eligible GPU node was restarted and its recovery timed; the
    # disruptive reboot check waits for an opt-in.
    restart = results[("GPU-REC-001", "gpu-a100-1")]
    assert restart["status"] == "passed" and "phases: delete the device-plugin pod" in restart["evidence"]
    assert "recovered (pod deleted to vector-add passed) in" in restart["evidence"]
    (reboot,) = [r for r in summary["results"] if r["id"] == "GPU-REC-002"]
    assert reboot["status"] == "skipped" and "--reboot-nodes" in reboot["message"] and not reboot["node"]
    # Every report is written.
    assert (report_dir / "report.html").stat().st_size > 10_000
    assert any((report_dir / "allure-results").glob("*-result.json"))
    junit = ET.parse(report_dir / "junit.xml").getroot()
    props = {p.get("value") for p in junit.iter("property") if p.get("name") == "requirement"}
    assert set(CHECKS) <= props
    # Nothing the run created is left behind.
    wait_for(lambda: [ns.name for ns in sim_api.get("namespaces", label_selector="gpu-conformance.io/run-id=e2eheal")],
             lambda left: not left, what="the run's namespaces to be deleted", timeout=60)


def test_allocatable_zero_fails_capacity_on_that_node_only(run_suite) -> None:
    code, summary, out, _ = run_suite("fault-allocatable-zero")
    assert code == 1, out
    results = _by_check(summary)
    bad = results[("GPU-NODE-001", "az-gpu-2")]
    assert bad["status"] == "failed"
    assert bad["message"].startswith("GPU-NODE-001 node az-gpu-2: expected allocatable nvidia.com/gpu == capacity (8), "
                                      "observed capacity 8, allocatable 0.")
    assert "Remediation:" in bad["message"]
    assert results[("GPU-NODE-001", "az-gpu-1")]["status"] == "passed"
    # The real scheduler refuses the vector-add pod there: a conformance failure, not an error.
    wl = results[("GPU-WL-001", "az-gpu-2")]
    assert wl["status"] == "failed" and "Insufficient nvidia.com/gpu" in wl["message"]
    assert "FAILED GPU-NODE-001 az-gpu-2" in out


def test_failing_vector_add_fails_that_node_only(run_suite) -> None:
    code, summary, out, _ = run_suite("fault-vector-add")
    assert code == 1, out
    results = _by_check(summary)
    bad = results[("GPU-WL-001", "vf-gpu-2")]
    assert bad["status"] == "failed"
    assert bad["message"].startswith("GPU-WL-001 node vf-gpu-2: expected phase Succeeded with exit code 0")
    assert "exit code 1" in bad["message"] and "no CUDA-capable device" in bad["message"]
    assert results[("GPU-WL-001", "vf-gpu-1")]["status"] == "passed"
    assert {results[("GPU-NODE-001", n)]["status"] for n in ("vf-gpu-1", "vf-gpu-2")} == {"passed"}


def test_no_gpu_nodes_is_a_failure_not_a_pass(run_suite) -> None:
    code, summary, out, report_dir = run_suite("healthy", selector=f"{scenario.SCENARIO_LABEL}=healthy,!nvidia.com/gpu.present")
    assert code == 1, out
    assert {r["status"] for r in summary["results"]} == {"failed"}
    assert all("0 GPU nodes among 2 nodes" in r["message"] for r in summary["results"])
    # Found while setting the checks up (the `gpu_nodes` fixture), yet a failure in every report, with its parts.
    assert all(r["expected"].startswith("at least one GPU node") and r["observed"] == "0 GPU nodes among 2 nodes"
               for r in summary["results"])
    junit = ET.parse(report_dir / "junit.xml").getroot()
    suite = junit if junit.tag == "testsuite" else junit.find("testsuite")
    assert (int(suite.get("failures")), int(suite.get("errors"))) == (len(summary["results"]), 0)


def test_parallel_run_gives_the_same_verdicts(run_suite) -> None:
    code, summary, out, _ = run_suite("fault-vector-add", "-n", "2", "-k", "capacity or vector_add_passes")
    assert code == 1, out
    statuses = {k: r["status"] for k, r in _by_check(summary).items()}
    assert statuses == {("GPU-NODE-001", "vf-gpu-1"): "passed", ("GPU-NODE-001", "vf-gpu-2"): "passed",
                        ("GPU-WL-001", "vf-gpu-1"): "passed", ("GPU-WL-001", "vf-gpu-2"): "failed"}


def test_selecting_no_checks_is_a_usage_error(run_suite) -> None:
    code, _, out, _ = run_suite("healthy", "-k", "no_such_check")
    assert code == 2 and "no checks selected" in out


def test_summary_schema_fields(run_suite, tmp_path: Path) -> None:
    code, summary, out, report_dir = run_suite("fault-allocatable-zero", "-k", "capacity")
    assert code == 1, out
    doc = json.loads((report_dir / "summary.json").read_text())
    assert doc["schema"] == "gpu-conformance/summary/v2"
    for r in doc["results"]:
        assert set(r) >= {"id", "title", "level", "node", "status", "expected", "observed", "remediation", "duration_s"}
        assert r["status"] in ("passed", "failed", "skipped", "error")
    (failed,) = [r for r in doc["results"] if r["status"] == "failed"]
    assert (failed["expected"], failed["observed"]) == ("allocatable nvidia.com/gpu == capacity (8)", "capacity 8, allocatable 0")
    assert failed["remediation"].startswith("The device plugin on this node is not advertising all of its GPUs")
    assert doc["totals_by_level"]["MUST"]["failed"] == 1 and doc["cluster"]["gpu_nodes"] == 2


def test_workload_that_never_finishes_is_an_error_not_a_verdict(run_suite) -> None:
    code, summary, out, _ = run_suite("fault-workload-hangs", "--workload-timeout=3")
    assert code == 3, out
    results = _by_check(summary)
    wl = results[("GPU-WL-001", "hw-gpu-1")]
    assert wl["status"] == "error"
    assert "vector-add on node hw-gpu-1 was not decided within 3s" in wl["message"] and "phase Running" in wl["message"]
    assert results[("GPU-NODE-001", "hw-gpu-1")]["status"] == "passed"


def test_sigterm_mid_run_cleans_up_and_exits_3(sim_kubeconfig: Path, sim_api: kr8s.Api, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    run_id = "e2eterm"
    cmd = [sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={sim_kubeconfig}", f"--report-dir={tmp_path}",
           f"--gpu-node-selector={scenario.SCENARIO_LABEL}=fault-workload-hangs", "--workload-timeout=120",
           f"--run-id={run_id}", "-k", "vector_add"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Interrupt while the run's pod is live.
        wait_for(lambda: [p.name for p in sim_api.get("pods", namespace=kr8s.ALL, label_selector=f"gpu-conformance.io/run-id={run_id}")],
                 bool, what="the run's vector-add pod", timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, out
    wait_for(lambda: [ns.name for ns in sim_api.get("namespaces", label_selector=f"gpu-conformance.io/run-id={run_id}")],
             lambda left: not left, what="the interrupted run's namespaces to be deleted", timeout=60)


def test_driver_gate_reports_mode_and_needed_driver_on_pass_and_fail(run_suite, tmp_path: Path) -> None:
    import yaml

    sc = scenario.load(scenario.resolve("fault-driver-too-old"))
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(sc.profile.model_dump(mode="json")))
    code, summary, out, _ = run_suite(sc.name, f"--profile={profile}", "-k", "supports_profile_cuda")
    assert code == 1, out
    results = _by_check(summary)
    native, minor, old = (results[("GPU-VER-001", n)] for n in ("od-gpu-1", "od-gpu-2", "od-gpu-3"))
    assert (native["status"], minor["status"], old["status"]) == ("passed", "passed", "failed")
    assert "CUDA 12.4: native (native needs >= 550.54.14" in native["evidence"]
    assert "driver 535.216.01 (nvidia-smi in a GPU pod)" in minor["evidence"]
    assert "CUDA 12.4: minor-version (native needs >= 550.54.14, minor-version compatibility >= 525.60.13)" in minor["evidence"]
    assert old["message"].startswith("GPU-VER-001 node od-gpu-3: expected a driver at or above 450.80.02 that runs CUDA 12.4")
    assert "CUDA 12.4: incompatible (native needs >= 550.54.14, minor-version compatibility >= 525.60.13)" in old["message"]
    assert old["evidence"] and "Remediation: Upgrade the NVIDIA driver" in old["message"]


def test_without_versions_in_the_profile_the_gate_is_skipped_with_the_reason(run_suite) -> None:
    code, summary, out, _ = run_suite("fault-driver-too-old", "-k", "supports_profile_cuda")
    assert code == 0, out
    assert {(r["status"], r["message"]) for r in summary["results"]} == {
        ("skipped", "the profile sets no versions.minimum_driver and no versions.cuda to check the driver against")}


def test_the_jupyter_token_never_reaches_a_report(run_suite) -> None:
    code, summary, out, report_dir = run_suite("fault-notebook-no-gpu", "-k", "notebook", "--gate=full")
    assert code == 1, out
    results = _by_check(summary)
    failed = results[("GPU-NB-003", None)]
    assert failed["status"] == "failed" and "tensorflow to see at least 1 GPU" in failed["message"]
    assert "token=<redacted>" in failed["message"]  # the log tail is in the message, token removed
    leaked = [p.name for p in report_dir.rglob("*") if p.is_file() and "0badc0de0badc0de" in p.read_text(errors="replace")]
    assert leaked == [] and "0badc0de0badc0de" not in out


def test_privileged_checks_run_only_when_opted_in(run_suite, tmp_path: Path) -> None:
    # Without the opt-in, dcgmproftester (SYS_ADMIN) never runs: skipped, with the way to opt in.
    code, summary, out, _ = run_suite("fault-metrics-no-profiling", "-k", "tensor")
    assert code == 0, out
    assert {(r["status"], r["message"]) for r in summary["results"]} == {
        ("skipped", "opt-in: this check runs a pod with the SYS_ADMIN capability; pass --allow-privileged "
                    "or set allow_privileged: true in the profile (the full and disruptive gates opt in)")}
    # With --allow-privileged it runs, and the node without profiling metrics fails it.
    code, summary, out, _ = run_suite("fault-metrics-no-profiling", "-k", "tensor", "--allow-privileged")
    assert code == 1, out
    statuses = {k: r["status"] for k, r in _by_check(summary).items()}
    assert statuses == {("GPU-MET-005", "np-gpu-1"): "passed", ("GPU-MET-005", "np-gpu-2"): "failed"}
    assert "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE GPU" in _by_check(summary)[("GPU-MET-005", "np-gpu-2")]["message"]


def test_pods_stranded_before_the_run_are_reported_not_failed(run_suite) -> None:
    code, summary, out, _ = run_suite("fault-device-plugin-crash", "-k", "capacity")
    assert code == 0, out  # the capacity checks pass; the stranded pods do not fail the run
    stranded = summary["run_start"]["stranded_pods"]
    assert [(s["node"], s["name"], s["reason"], s["owner"]) for s in stranded] == [
        ("dp-gpu-2", "trainer-dp-gpu-2-0", "UnexpectedAdmissionError", None),
        ("dp-gpu-2", "trainer-dp-gpu-2-1", "UnexpectedAdmissionError", None)]
    assert "run start: 2 GPU pod(s) already stranded by a failed GPU allocation (reported, not failed):" in out
    assert "trainer-dp-gpu-2-0 on dp-gpu-2: UnexpectedAdmissionError (Allocate failed due to no healthy devices" in out


RESTRICTED_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
    "metadata": {"name": "gc-test-restricted"},
    # What the suite needs, except pods/proxy, pods/portforward and services/proxy.
    "rules": [
        {"apiGroups": [""], "verbs": ["*"],
         "resources": ["pods", "pods/log", "namespaces", "nodes", "services", "configmaps", "secrets", "events",
                       "serviceaccounts", "endpoints"]},
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list"]},
        {"apiGroups": ["monitoring.coreos.com"], "resources": ["servicemonitors", "podmonitors"], "verbs": ["get", "list"]},
        {"apiGroups": ["nvidia.com"], "resources": ["clusterpolicies"], "verbs": ["get", "list"]},
    ],
}


def test_metrics_refused_by_rbac_are_errors_not_failures(sim_kubeconfig: Path, sim_api: kr8s.Api, tmp_path: Path) -> None:
    import subprocess
    import sys

    from gpu_conformance.sim.control_plane import new_objects

    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "gc-test-restricted"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gc-test-restricted"},
               "subjects": [{"kind": "User", "name": "gpu-conformance-restricted", "apiGroup": "rbac.authorization.k8s.io"}]}
    made = new_objects(sim_api, [RESTRICTED_ROLE, binding], exist_ok=True)
    try:
        report_dir = tmp_path / "reports"
        cmd = [sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={sim_kubeconfig.with_name('restricted.kubeconfig')}",
               f"--report-dir={report_dir}", f"--gpu-node-selector={scenario.SCENARIO_LABEL}=healthy",
               "-k", "exporter_serves_the_node"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        out = proc.stdout + proc.stderr
        summary = json.loads((report_dir / "summary.json").read_text())
    finally:
        for obj in made:
            obj.delete()
    assert proc.returncode == 3, out  # undecided: not a conformance failure
    results = summary["results"]
    assert len(results) == 4 and {r["status"] for r in results} == {"error"}, results
    assert all("RBAC: the suite may neither proxy to nor port-forward this pod" in r["message"]
               and "the suite needs get on pods/proxy or get and create on pods/portforward" in r["message"] for r in results)


def _reboot_run(sim_kubeconfig: Path, tmp_path: Path, node: str, run_id: str):
    import subprocess
    import sys

    import yaml

    sc = scenario.load(Path(__file__).parent / "data" / "scenarios" / "interrupt-reboot.yaml")
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(sc.profile.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "gpu_conformance", "run", f"--kubeconfig={sim_kubeconfig}", f"--report-dir={tmp_path}",
           f"--gpu-node-selector={scenario.SCENARIO_LABEL}=interrupt-reboot", f"--profile={profile}",
           f"--reboot-nodes={node}", f"--run-id={run_id}", "-k", "after_node_reboot"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _cordoned_and_down(sim_api: kr8s.Api, node: str) -> bool:
    raw = next(n for n in sim_api.get("nodes") if n.name == node).raw
    ready = next(c["status"] for c in raw["status"]["conditions"] if c["type"] == "Ready")
    return bool(raw["spec"].get("unschedulable")) and ready != "True"


def _cordon_state(sim_api: kr8s.Api, node: str) -> tuple[bool, str | None]:
    raw = next(n for n in sim_api.get("nodes") if n.name == node).raw
    return bool(raw["spec"].get("unschedulable")), (raw["metadata"].get("annotations") or {}).get(
        "gpu-conformance.io/cordoned-by-run")


def test_a_run_interrupted_during_a_reboot_leaves_the_node_uncordoned(
        sim_kubeconfig: Path, sim_api: kr8s.Api, tmp_path: Path) -> None:
    import signal

    proc = _reboot_run(sim_kubeconfig, tmp_path, "ir-gpu-1", "e2eintr")
    try:
        # Interrupt while the node is cordoned and down (its simulated reboot takes a minute).
        wait_for(lambda: _cordoned_and_down(sim_api, "ir-gpu-1"), bool, what="ir-gpu-1 cordoned and rebooting", timeout=90)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, out
    assert _cordon_state(sim_api, "ir-gpu-1") == (False, None), out


def test_cleanup_uncordons_a_node_a_killed_run_left_cordoned(
        sim_kubeconfig: Path, sim_api: kr8s.Api, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    proc = _reboot_run(sim_kubeconfig, tmp_path, "ir-gpu-2", "e2ekill")
    try:
        wait_for(lambda: _cordoned_and_down(sim_api, "ir-gpu-2"), bool, what="ir-gpu-2 cordoned and rebooting", timeout=90)
        proc.send_signal(signal.SIGKILL)  # no finally runs: the cordon stays, marked with the run id
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert _cordon_state(sim_api, "ir-gpu-2") == (True, "e2ekill")
    done = subprocess.run([sys.executable, "-m", "gpu_conformance", "cleanup", f"--kubeconfig={sim_kubeconfig}",
                           "--run-id=e2ekill"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ir-gpu-2" in done.stdout, done.stdout + done.stderr
    assert _cordon_state(sim_api, "ir-gpu-2") == (False, None)


def test_smoke_gate_reads_node_facts_and_runs_one_vector_add_per_node_group(run_suite) -> None:
    code, summary, out, _ = run_suite("healthy", "--gate=smoke")
    assert code == 0, out
    ids = {r["id"] for r in summary["results"]}
    assert summary["gate"] == "smoke" and "(smoke gate)" in out
    assert {"GPU-NODE-001", "GPU-STACK-001", "GPU-MET-001", "GPU-WL-001"} <= ids
    assert not ids & {"GPU-SMI-001", "GPU-ISO-001", "GPU-SCHED-001", "GPU-NB-001", "GPU-REC-001", "GPU-REC-002"}
    # Without a profile the node groups are the GPU products: one H100 node and the A100 node.
    vector_add = sorted(r["node"] for r in summary["results"] if r["id"] == "GPU-WL-001")
    assert vector_add == ["gpu-a100-1", "gpu-h100-1"], vector_add

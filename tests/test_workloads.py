"""Workload manifests: pinned images, labels, GPU toleration, node pinning, overrides."""

import re

import pytest

from gpu_conformance.errors import ConfigError
from gpu_conformance.workloads import MANAGED_BY_LABEL, RUN_LABEL, WORKLOAD_DIR, default_images, pod_name, render

WORKLOADS = sorted(p.stem for p in WORKLOAD_DIR.glob("*.yaml") if p.stem != "images")


def test_every_workload_has_a_pinned_default_image() -> None:
    images = default_images()
    assert set(WORKLOADS) <= set(images)
    for name, image in images.items():
        assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), (name, image)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_rendered_pods_are_labelled_pinned_and_tolerate_the_gpu_taint(workload: str) -> None:
    docs = render(workload, namespace="ns", node="gpu-1", run_id="r1", extra={"duration_s": 30, "hold_s": 5, "code_configmap": "code",
                                                                          "token_secret": "nb-token", "service_ports": []})
    pods = [d for d in docs if d["kind"] == "Pod"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["name"] == pod_name(workload, "gpu-1")
    assert pod["metadata"]["labels"][MANAGED_BY_LABEL] == "gpu-conformance"
    assert pod["metadata"]["labels"][RUN_LABEL] == "r1"
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in pod["spec"]["tolerations"]
    limits = [c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") for c in pod["spec"]["containers"]]
    # The no-GPU isolation probe must request nothing; every other workload's first container requests 1.
    assert limits == ({"isolation-nogpu": [None], "isolation-pair": [1, None]}.get(workload) or [1])
    assert {c["image"] for c in pod["spec"]["containers"]} == {default_images()[workload]}


def test_images_can_be_overridden_for_private_registries() -> None:
    pod = render("vector-add", namespace="ns", node="n", run_id="r", images={"vector-add": "registry.local/cuda:va-1"})[0]
    assert pod["spec"]["containers"][0]["image"] == "registry.local/cuda:va-1"


def test_unknown_workload_and_missing_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown workload 'matmul'"):
        render("matmul", namespace="ns", node="n", run_id="r")
    with pytest.raises(ConfigError, match="needs a value for duration_s"):  # noqa: PT012
        render("dcgmproftester", namespace="ns", node="n", run_id="r")


def test_pod_names_are_valid_for_awkward_node_names() -> None:
    assert pod_name("vector-add", "Node_A.example") == "vector-add-node-a.example"
    assert len(pod_name("vector-add", "n" * 300)) == 253


def test_simulated_workloads_and_manifests_agree() -> None:
    from gpu_conformance.sim.scenario import KNOWN_WORKLOADS

    assert sorted(KNOWN_WORKLOADS) == WORKLOADS


def test_the_probe_runs_from_a_configmap_on_a_stock_python_image(tmp_path) -> None:
    """Lay the ConfigMap out as the kubelet mounts it and run the probe from it (here: no NVML, so exit 3).

    The same layout ran on a real H100: tests/data/h100/probe-from-configmap.json is its output.
    """
    import subprocess
    import sys

    from gpu_conformance.workloads import PROBE_CODE_CONFIGMAP, probe_code

    cm = probe_code("ns", "r1")
    assert cm["metadata"]["labels"][RUN_LABEL] == "r1" and cm["metadata"]["name"] == PROBE_CODE_CONFIGMAP
    assert sum(len(v.encode()) for v in cm["data"].values()) < 1024 * 1024  # the ConfigMap size limit
    pod = render("nvml-probe", namespace="ns", node="n", run_id="r1", extra={"code_configmap": PROBE_CODE_CONFIGMAP})[0]
    volume = pod["spec"]["volumes"][0]["configMap"]
    assert volume["name"] == PROBE_CODE_CONFIGMAP
    for item in volume["items"]:
        (tmp_path / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item["path"]).write_text(cm["data"][item["key"]])
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PYTHONPATH"] == container["volumeMounts"][0]["mountPath"]
    env["PYTHONPATH"] = str(tmp_path)
    code = "import runpy, sys, pynvml; print(pynvml.__file__, file=sys.stderr); runpy.run_module('gpu_conformance.probe', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False,
                          cwd=tmp_path)
    assert proc.stderr.splitlines()[0] == str(tmp_path / "pynvml.py")  # the shipped pynvml, not an installed one
    assert proc.returncode == 3 and "gpu-conformance probe: NVML not available" in proc.stderr

"""The notebook workload: token handling, redaction, the framework's GPU line, and the simulator's
readiness and endpoint variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_conformance import notebook, redaction
from gpu_conformance.sim import kwokconfig, outputs
from gpu_conformance.sim.scenario import NodeSpec, WorkloadBehaviour
from gpu_conformance.workloads import render


def test_the_token_is_only_in_the_secret() -> None:
    token = notebook.new_token()
    docs = render("notebook", namespace="ns", node="n", run_id="r1",
                  extra={"token_secret": "nb-token", "service_ports": [{"name": "http", "port": 8888, "targetPort": "http"}]})
    assert token not in repr(docs)
    env = docs[0]["spec"]["containers"][0]["env"]
    assert env == [{"name": "JUPYTER_TOKEN", "valueFrom": {"secretKeyRef": {"name": "nb-token", "key": "token"}}}]
    secret = notebook.token_secret("nb-token", "ns", "r1", token)
    assert secret["stringData"] == {"token": token} and secret["metadata"]["labels"]["gpu-conformance.io/run-id"] == "r1"
    assert [d["kind"] for d in docs] == ["Pod", "Service"] and docs[1]["spec"]["type"] == "NodePort"
    assert docs[0]["spec"]["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/api", "port": "http"}


def test_the_simulated_jupyter_prints_a_token_that_redaction_removes() -> None:
    log = outputs.behaviour("notebook", "n", NodeSpec(name="n", gpus=4)).output or ""
    assert outputs.NOTEBOOK_TOKEN in log
    clean = redaction.redact(log)
    assert outputs.NOTEBOOK_TOKEN not in clean and "token=<redacted>" in clean
    assert notebook.gpus_seen(clean) == ("tensorflow", 1)


@pytest.mark.parametrize(("log", "seen"), [
    ("2026-11-23 ... gpu-conformance: tensorflow sees 2 GPU(s)\n[I ServerApp] ...", ("tensorflow", 2)),
    ("gpu-conformance: tensorflow sees 0 GPU(s)", ("tensorflow", 0)),
    ("ImportError: libcudart.so.12: cannot open shared object file", None),
    ("", None),
])
def test_gpus_seen(log: str, seen: tuple[str, int] | None) -> None:
    assert notebook.gpus_seen(log) == seen


def test_simulated_notebook_variants_get_their_own_stages(tmp_path: Path) -> None:
    nodes = [
        ("a", NodeSpec(name="a", gpus=1, workloads={"notebook": WorkloadBehaviour(keep_running=True, ready=False)})),
        ("b", NodeSpec(name="b", gpus=1, workloads={"notebook": WorkloadBehaviour(keep_running=True, pod_ip=False)})),
        ("c", NodeSpec(name="c", gpus=1)),
    ]
    stages = {d["metadata"]["name"]: d for d in kwokconfig.generate(nodes, tmp_path) if d["kind"] == "Stage"}
    not_ready = stages["pod-running-not-ready"]["spec"]
    assert not_ready["selector"]["matchExpressions"][-1]["values"] == ["notebook@a"]
    assert 'status: "False"\n  type: Ready' in not_ready["next"]["statusTemplate"]
    no_ip = stages["pod-ready-no-ip"]["spec"]
    assert no_ip["selector"]["matchExpressions"][-1]["values"] == ["notebook@b"]
    assert "podIP" not in no_ip["next"]["statusTemplate"] and "phase: Running" in no_ip["next"]["statusTemplate"]
    ready = stages["pod-ready"]["spec"]["selector"]["matchExpressions"]
    assert {"key": kwokconfig.WORKLOAD_AT_NODE, "operator": "NotIn", "values": ["notebook@a", "notebook@b"]} in ready


def test_answering_notebooks_are_forwarded_to_the_simulated_jupyter(tmp_path: Path) -> None:
    nodes = [
        ("a", NodeSpec(name="a", gpus=1)),
        ("b", NodeSpec(name="b", gpus=1, workloads={"notebook": WorkloadBehaviour(keep_running=True, answers_http=False)})),
        ("cpu", NodeSpec(name="cpu")),
    ]
    (forward,) = [d for d in kwokconfig.generate(nodes, tmp_path, jupyter_port=31234) if d["kind"] == "ClusterPortForward"]
    assert forward["spec"]["selector"] == {"matchNames": ["notebook-a"]}
    assert forward["spec"]["forwards"] == [{"ports": [8888], "target": {"address": "127.0.0.1", "port": 31234}}]

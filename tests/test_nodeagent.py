"""The simulator's node agent: device-plugin restarts and node reboots, as a kubelet recovers from them.

Pure tests drive `NodeAgent.plan` with observed objects and a fake clock; the live ones run the
agent against the session's simulated cluster on a node of their own (never a bundled scenario's:
other tests use those concurrently), with kwok playing that node and its pods.
"""

from __future__ import annotations

import copy
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kr8s
import pytest
from kr8s.objects import Node, Pod
from pydantic import ValidationError

from gpu_conformance import cli, runner
from gpu_conformance.sim import control_plane, stackobjects
from gpu_conformance.sim.kwokconfig import COMPONENT_LABEL, NOT_READY_LABEL, STRANDED_LABEL
from gpu_conformance.sim.nodeagent import (
    REBOOT_HANDLED, REBOOT_REQUESTED, CreateStranded, NodeAgent, PatchMeta, SetAllocatable, SetNotReady,
)
from gpu_conformance.sim.scenario import SCENARIO_LABEL, NodeRecovery, NodeSpec, Scenario, Taint
from gpu_conformance.waiting import wait_for

GPU = "nvidia.com/gpu"


# -- the model ------------------------------------------------------------------------------------

def test_recovery_defaults() -> None:
    rec = NodeSpec(name="a", gpus=8).recovery
    assert rec == NodeRecovery()
    assert (rec.plugin_reregister_s, rec.reboot_down_s, rec.comes_back, rec.reboot_allocatable_s, rec.strands_after_reboot) \
        == (2.0, 3.0, True, 3.0, 0)


def test_recovery_accepts_never_and_rejects_out_of_range() -> None:
    rec = NodeRecovery(plugin_reregister_s=None, reboot_allocatable_s=None, comes_back=False, strands_after_reboot=50)
    assert rec.plugin_reregister_s is None and rec.reboot_allocatable_s is None
    for bad in ({"plugin_reregister_s": -1}, {"reboot_down_s": 3601}, {"strands_after_reboot": 51}, {"reboot_down_s": None},
                {"reboot_s": 1}):
        with pytest.raises(ValidationError):
            NodeRecovery.model_validate(bad)


def test_recovery_loads_from_a_scenario_file(tmp_path: Path) -> None:
    from gpu_conformance.sim import scenario

    path = tmp_path / "s.yaml"
    path.write_text("name: x\nnodes:\n  - name: a\n    gpus: 2\n    recovery:\n      plugin_reregister_s: null\n"
                    "      strands_after_reboot: 2\n")
    rec = scenario.load(path).nodes[0].recovery
    assert rec.plugin_reregister_s is None and rec.strands_after_reboot == 2 and rec.reboot_down_s == 3.0


# -- the timeline, on observed objects and a fake clock ---------------------------------------------

class FakeCluster:
    """Observed nodes and device-plugin pods; applies the agent's actions; Ready follows the not-ready label (kwok)."""

    def __init__(self, scenario: Scenario) -> None:
        self.agent = NodeAgent(None, [scenario])
        self.nodes: dict[str, dict[str, Any]] = {}
        for name, spec in scenario.expanded():
            labels = {NOT_READY_LABEL: "true"} if not spec.ready else {}
            alloc = {GPU: str(spec.allocatable)} if spec.capacity else {}
            self.nodes[name] = {"metadata": {"name": name, "labels": labels, "annotations": {}},
                                "status": {"allocatable": alloc, "conditions": []}}
            self.kwok(name)
        self.pods: list[dict[str, Any]] = []
        self.stranded: list[dict[str, Any]] = []

    def kwok(self, name: str) -> None:
        node = self.nodes[name]
        ready = node["metadata"]["labels"].get(NOT_READY_LABEL) != "true"
        node["status"]["conditions"] = [{"type": "Ready", "status": str(ready)}]

    def plugin(self, node: str, uid: str, phase: str = "Running", at: str = "2025-01-01T00:00:00Z") -> dict[str, Any]:
        pod = {"metadata": {"uid": uid, "creationTimestamp": at}, "spec": {"nodeName": node}, "status": {"phase": phase}}
        self.pods.append(pod)
        return pod

    def step(self, now: float, kwok: bool = True) -> list[Any]:
        actions = self.agent.plan(now, copy.deepcopy(self.nodes), copy.deepcopy(self.pods))
        for a in actions:
            node = self.nodes[a.node]
            if isinstance(a, SetAllocatable):
                node["status"]["allocatable"][GPU] = a.value
            elif isinstance(a, PatchMeta):
                for where, changes in (("labels", a.labels), ("annotations", a.annotations)):
                    for k, v in changes.items():
                        if v is None:
                            node["metadata"][where].pop(k, None)
                        else:
                            node["metadata"][where][k] = v
            elif isinstance(a, SetNotReady):
                node["status"]["conditions"][a.index]["status"] = "False"
            else:
                self.stranded += a.manifests
        if kwok:
            for name in self.nodes:
                self.kwok(name)
        return actions

    def alloc(self, node: str) -> str:
        return str(self.nodes[node]["status"]["allocatable"].get(GPU))

    def ready(self, node: str) -> bool:
        return self.nodes[node]["status"]["conditions"][0]["status"] == "True"

    def reboot(self, node: str, value: str) -> None:
        self.nodes[node]["metadata"]["annotations"][REBOOT_REQUESTED] = value


def _scenario(**recovery: Any) -> Scenario:
    return Scenario(name="t", nodes=[NodeSpec(name="g", gpus=8, recovery=NodeRecovery(**recovery)),
                                     NodeSpec(name="off", gpus=2, ready=False), NodeSpec(name="cpu")])


def test_only_gpu_nodes_are_played() -> None:
    assert sorted(NodeAgent(None, [_scenario()]).nodes) == ["g", "off"]


def test_plugin_restart_drops_allocatable_until_the_replacement_reregisters() -> None:
    c = FakeCluster(_scenario(plugin_reregister_s=5))
    first = c.plugin("g", "a")
    assert c.step(0) == []  # the plugin the node started with
    first["metadata"]["deletionTimestamp"] = "2025-01-01T00:01:00Z"
    assert c.step(1) == [SetAllocatable("g", "0")]
    c.pods.remove(first)
    second = c.plugin("g", "b", phase="Pending", at="2025-01-01T00:01:01Z")
    assert c.step(2) == [] and c.alloc("g") == "0"
    second["status"]["phase"] = "Running"
    c.step(3)  # Running: re-registers 5 s from now
    assert c.step(7.9) == [] and c.alloc("g") == "0"
    assert c.step(8) == [SetAllocatable("g", "8")]
    assert c.step(9) == [] and c.alloc("g") == "8"


def test_a_replacement_that_appears_beside_the_old_plugin_also_counts() -> None:
    c = FakeCluster(_scenario(plugin_reregister_s=0))
    c.plugin("g", "a")
    c.step(0)
    c.plugin("g", "b", phase="Pending", at="2025-01-01T00:02:00Z")
    assert c.step(1) == [SetAllocatable("g", "0")]
    c.pods[-1]["status"]["phase"] = "Running"
    assert c.step(2) == [SetAllocatable("g", "8")]


def test_plugin_that_never_reregisters_and_lost_allocatable_is_reasserted() -> None:
    c = FakeCluster(_scenario(plugin_reregister_s=None))
    c.plugin("g", "a")
    c.step(0)
    c.pods.clear()
    c.step(1)
    c.plugin("g", "b")
    for t in (2, 100, 10_000):
        c.step(t)
        assert c.alloc("g") == "0"
    c.nodes["g"]["status"]["allocatable"][GPU] = "8"  # a stale status write (kwok re-initializing the node)
    assert c.step(10_001) == [SetAllocatable("g", "0")]


def test_a_crash_looping_plugin_changes_nothing() -> None:
    c = FakeCluster(_scenario())
    c.plugin("g", "a", phase="Running")
    assert all(c.step(t) == [] for t in range(10))
    assert c.alloc("g") == "8"


def test_reboot_timeline() -> None:
    c = FakeCluster(_scenario(reboot_down_s=3, reboot_allocatable_s=4, strands_after_reboot=2))
    c.step(0)
    c.reboot("g", "r1")
    actions = c.step(1)
    assert PatchMeta("g", annotations={REBOOT_HANDLED: "r1"}) in actions
    assert PatchMeta("g", labels={NOT_READY_LABEL: "true"}) in actions and SetAllocatable("g", "0") in actions
    assert not c.ready("g") and c.alloc("g") == "0"
    assert c.step(3.9) == [] and not c.ready("g")
    assert c.step(4, kwok=False) == [PatchMeta("g", labels={NOT_READY_LABEL: None})]
    assert c.step(4.1) == []  # label gone, kwok not yet Ready: waiting
    [strand] = c.step(4.2)  # Ready: the pods that start before the plugin re-registers fail
    assert isinstance(strand, CreateStranded) and len(strand.manifests) == 2
    assert all(m["spec"]["nodeName"] == "g" and m["metadata"]["labels"][STRANDED_LABEL] == "true" for m in strand.manifests)
    assert c.step(8.1) == [] and c.alloc("g") == "0"
    assert c.step(8.2) == [SetAllocatable("g", "8")]
    assert c.step(20) == []
    # A second reboot strands pods under other names.
    c.reboot("g", "r2")
    c.step(21)
    c.step(24)
    c.step(25)
    names = [m["metadata"]["name"] for m in c.stranded]
    assert len(names) == 4 == len(set(names))
    assert all(n.startswith("trainer-g-reboot-") for n in names)


def test_the_agent_turns_the_node_not_ready_when_kwok_is_late() -> None:
    c = FakeCluster(_scenario(reboot_down_s=3))
    c.reboot("g", "r1")
    c.step(0, kwok=False)  # labelled; kwok's heartbeat stage wins and the node stays Ready
    assert c.step(0.5, kwok=False) == [SetNotReady("g", 0)]
    assert not c.ready("g") and c.step(1, kwok=False) == []
    c.nodes["g"]["status"]["conditions"][0]["status"] = "True"  # a heartbeat that was already due
    assert c.step(1.5, kwok=False) == [SetNotReady("g", 0)]
    assert c.step(3, kwok=False) == [PatchMeta("g", labels={NOT_READY_LABEL: None})]  # no SetNotReady once it is over


def test_a_reboot_goes_through_not_ready_however_short() -> None:
    c = FakeCluster(_scenario(reboot_down_s=0))
    c.reboot("g", "r1")
    c.step(0, kwok=False)
    assert c.step(1, kwok=False) == [SetNotReady("g", 0)]  # still labelled: not seen NotReady yet
    assert c.step(2) == [PatchMeta("g", labels={NOT_READY_LABEL: None})]


def test_node_that_does_not_come_back_or_never_regains_allocatable() -> None:
    c = FakeCluster(_scenario(comes_back=False))
    c.reboot("g", "r1")
    for t in (0, 10, 3600):
        c.step(t)
        assert not c.ready("g") and c.alloc("g") == "0"
    c = FakeCluster(_scenario(reboot_down_s=0, reboot_allocatable_s=None))
    c.reboot("g", "r1")
    for t in (0, 1, 2, 3600):
        c.step(t)
    assert c.ready("g") and c.alloc("g") == "0"


def test_a_node_the_scenario_has_not_ready_keeps_its_label() -> None:
    c = FakeCluster(_scenario(reboot_down_s=0))
    c.reboot("off", "r1")
    for t in (0, 1, 100):
        actions = c.step(t)
        assert not any(isinstance(a, PatchMeta) and a.labels for a in actions)
    assert c.nodes["off"]["metadata"]["labels"] == {NOT_READY_LABEL: "true"} and c.alloc("off") == "0"


def test_a_restarted_agent_does_not_replay_a_handled_reboot_but_finishes_one_left_half_done() -> None:
    sc = _scenario(reboot_down_s=3, strands_after_reboot=1)
    c = FakeCluster(sc)
    c.reboot("g", "r1")
    for t in (0, 10, 20, 30):
        c.step(t)
    assert c.ready("g") and c.alloc("g") == "8"  # the reboot is over
    c.agent = NodeAgent(None, [sc])
    assert c.step(40) == [] and c.step(41) == []
    c.reboot("g", "r2")
    c.step(50)
    assert not c.ready("g")
    c.agent = NodeAgent(None, [sc])  # restarted mid-reboot: the label must not stay forever
    assert PatchMeta("g", labels={NOT_READY_LABEL: None}) in c.step(60)
    c.step(61)
    c.step(70)
    assert c.ready("g") and c.alloc("g") == "8"
    c.nodes["g"]["status"]["allocatable"][GPU] = "0"
    c.agent = NodeAgent(None, [sc])  # restarted before allocatable came back: the kubelet re-registers
    assert c.step(80) == [SetAllocatable("g", "8")]


# -- the CLI --------------------------------------------------------------------------------------

def test_reboot_of_an_unreachable_cluster_is_one_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    assert cli.main(["sim", "reboot", "gpu-1", "--kubeconfig", str(kubeconfig)]) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "cannot reach" in err


# -- live: the agent on a node of its own in the session's simulated cluster --------------------------

def _wait(probe: Any, done: Any, what: str) -> Any:
    return wait_for(probe, done, what=what, timeout=60, tolerate=(kr8s.NotFoundError,), max_interval=0.5)


@pytest.fixture
def own_node(sim_api: kr8s.Api) -> Iterator[tuple[Scenario, str]]:
    """A kwok node only this test knows (no scenario label: no other test selects it), and a namespace."""
    name = f"nodeagent-{secrets.token_hex(3)}"
    spec = NodeSpec(name=name, gpus=4, gfd_labels=False,
                    taints=[Taint(key="sim.gpu-conformance.io/test", value="nodeagent", effect="NoSchedule")],
                    recovery=NodeRecovery(plugin_reregister_s=5, reboot_down_s=3, reboot_allocatable_s=4, strands_after_reboot=2))
    sc = Scenario(name=name, nodes=[spec])
    manifest = control_plane.node_manifest(name, spec, sc.name)
    manifest["metadata"]["labels"].pop(SCENARIO_LABEL)
    node = Node(manifest, api=sim_api)
    node.create()
    node.patch({"status": manifest["status"]}, subresource="status")
    ns = runner.create_namespace(sim_api, "nodeagent", "projtest")
    try:
        _wait(lambda: Node.get(name, api=sim_api).raw, _ready, f"node {name} to be Ready")
        yield sc, ns
    finally:
        runner.delete_namespace(sim_api, ns)
        runner.delete_namespace(sim_api, stackobjects.stranded_namespace(sc)["metadata"]["name"])
        try:
            node.delete()
        except kr8s.NotFoundError:
            pass


def _ready(raw: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in raw["status"].get("conditions") or [])


def _plugin_pod(sim_api: kr8s.Api, ns: str, node: str, name: str) -> Pod:
    pod = Pod({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": {COMPONENT_LABEL: "device-plugin"}},
               "spec": {"nodeName": node, "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "device-plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"}]}}, api=sim_api)
    pod.create()
    _wait(lambda: Pod.get(name, namespace=ns, api=sim_api).raw["status"].get("phase"), lambda p: p == "Running",
          f"{name} to be Running")
    return pod


def test_live_plugin_restart_and_reboot(sim_api: kr8s.Api, sim_kubeconfig: Path, own_node: tuple[Scenario, str]) -> None:
    sc, ns = own_node
    node = sc.nodes[0].name
    agent = NodeAgent(sim_api, [sc])

    def at(now: float) -> dict[str, Any]:
        agent.tick(now)
        return dict(Node.get(node, api=sim_api).raw)

    def alloc(raw: dict[str, Any]) -> str:
        return str(raw["status"]["allocatable"][GPU])

    def converge(now: float, done: Any, what: str) -> dict[str, Any]:
        return dict(_wait(lambda: at(now), done, what))

    # Device-plugin restart.
    first = _plugin_pod(sim_api, ns, node, "device-plugin-a")
    assert alloc(at(0)) == "4"
    first.delete()
    converge(1, lambda n: alloc(n) == "0", "allocatable 0 after the plugin pod is deleted")
    _plugin_pod(sim_api, ns, node, "device-plugin-b")
    assert alloc(at(2)) == "0"  # Running now: re-registers at 7
    assert alloc(at(6.9)) == "0"
    converge(7, lambda n: alloc(n) == "4", "allocatable back after re-registration")

    # Reboot, requested as the suite does.
    proc = subprocess.run([sys.executable, "-m", "gpu_conformance", "sim", "reboot", node, "--kubeconfig", str(sim_kubeconfig)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"[gpu-conformance sim] reboot of {node} requested"
    # kwok's not-ready stage renders the node's status from its cache and may put back allocatable from before the
    # agent's patch: the agent corrects it on its next tick, so the wait is for the whole state.
    raw = converge(10, lambda n: not _ready(n) and alloc(n) == "0", "NotReady, allocatable 0 after the reboot request")
    assert raw["metadata"]["labels"][NOT_READY_LABEL] == "true"
    requested = raw["metadata"]["annotations"][REBOOT_REQUESTED]
    assert raw["metadata"]["annotations"][REBOOT_HANDLED] == requested
    assert not _ready(at(12.9))
    raw = converge(13, lambda n: _ready(n) and alloc(n) == "0", "Ready again after reboot_down_s, allocatable still 0")
    assert NOT_READY_LABEL not in raw["metadata"]["labels"]
    # The agent strands pods on the tick that sees the node Ready; allocatable is due 4 s later, at 17.
    _wait(lambda: (agent.tick(13), agent.nodes[node].phase)[1], lambda phase: phase == "up", "the agent to see the node Ready")
    stranded_ns = stackobjects.stranded_namespace(sc)["metadata"]["name"]
    pods = _wait(lambda: [p.raw for p in sim_api.get("pods", namespace=stranded_ns)],
                 lambda ps: len(ps) == 2 and all(p["status"].get("reason") == "UnexpectedAdmissionError" for p in ps),
                 "two pods stranded by the reboot")
    assert {p["spec"]["nodeName"] for p in pods} == {node} and {p["status"]["phase"] for p in pods} == {"Failed"}
    assert alloc(at(16.9)) == "0"
    converge(17, lambda n: alloc(n) == "4", "allocatable back after reboot_allocatable_s")

    # A restarted agent does not replay the handled request.
    again = NodeAgent(sim_api, [sc])
    assert again.tick(100) == [] and again.tick(200) == []
    assert _ready(Node.get(node, api=sim_api).raw)


def test_reboot_of_a_node_that_does_not_exist(sim_kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sim", "reboot", "no-such-node-x", "--kubeconfig", str(sim_kubeconfig)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == ["gpu-conformance: error: node 'no-such-node-x' not found"]

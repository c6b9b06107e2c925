"""Start, inspect and stop the simulated cluster: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager and kwok, all on loopback, tracked by PID in a state directory."""

from __future__ import annotations

import hashlib
import json
import os
from functools import partial
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import kr8s
import yaml
from kr8s.objects import Node

from gpu_conformance import transport
from gpu_conformance.cluster import LEGACY_GPU_RESOURCE, list_nodes
from gpu_conformance.progress import Ticker, say
from gpu_conformance.runner import create_object
from gpu_conformance.scrape import free_local_port
from gpu_conformance.errors import SimError
from gpu_conformance.sim import binaries, exporter, kwokconfig, pki, stackobjects
from gpu_conformance.sim.kwokconfig import NOT_READY_LABEL
from gpu_conformance.sim.scenario import SCENARIO_LABEL, NodeSpec, Scenario
from gpu_conformance.waiting import WaitTimeout, wait_for

_say = partial(say, topic="sim")

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_LEASE_NAMESPACE = "kube-node-lease"

# Start-up budgets: etcd and the apiserver start in seconds on a laptop; CI machines are slower.
START_TIMEOUT_S = 120.0
NODES_READY_TIMEOUT_S = 120.0
# Large simulated clusters: the DaemonSet controller (100 requests/s) and kwok start the stack's pods
# at a bounded rate; each pod adds this much to the start-up budget (6,000 pods: 420 s).
STACK_POD_BUDGET_S = 0.07
STOP_GRACE_S = 10.0

# `exporter` is this package's simulated GPU metrics exporters (gpu_conformance.sim.exporter).
PROCESS_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "exporter")
# Written into every state directory `sim up` creates: nothing without it is ever deleted.
MARKER = ".gpu-conformance-sim"


def default_state_dir() -> Path:
    """The state directory of the default simulated cluster (override with GPU_CONFORMANCE_SIM_DIR)."""
    explicit = os.environ.get("GPU_CONFORMANCE_SIM_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpu-conformance" / "sim"




def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# Children started by this process, so their exit status can be reported and reaped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class SimState:
    """What `sim up` recorded: ports, PIDs and binaries of the running cluster."""

    state_dir: Path
    ports: dict[str, int]
    pids: dict[str, int]
    binaries: dict[str, str]
    scenario_digest: str
    scenario_names: list[str]
    kubernetes_version: str
    complete: bool = False  # set once every process is up and the nodes and stack are in place

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def save(self) -> None:
        data = {
            "ports": self.ports,
            "pids": self.pids,
            "binaries": self.binaries,
            "scenario_digest": self.scenario_digest,
            "scenario_names": self.scenario_names,
            "kubernetes_version": self.kubernetes_version,
            "complete": self.complete,
        }
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.state_dir / "state.json")  # atomic: never a half-written state

    @classmethod
    def load(cls, state_dir: Path) -> SimState | None:
        path = state_dir / "state.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(state_dir=state_dir, **data)


def _pid_is(pid: int, binary: str) -> bool:
    """True when pid is alive and runs `binary` (guards against PID reuse).

    For our own children Popen.poll() decides: right after exec, /proc/<pid>/cmdline can still
    read empty (the exec pipe closes before the new argv is mapped).
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == binary


def process_status(state: SimState) -> dict[str, bool]:
    """Per process: is it alive and still ours."""
    return {name: _pid_is(pid, state.binaries[name]) for name, pid in state.pids.items()}


def _healthy(state: SimState | None) -> bool:
    """A cluster `up` finished starting, with every one of its processes alive."""
    if state is None or not state.complete:
        return False
    alive = process_status(state)
    return all(alive.get(name, False) for name in PROCESS_ORDER)


def _remove_state_dir(path: Path) -> None:
    """Delete a state directory, but only one that `sim up` created (it holds the marker) or an empty one."""
    if not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        return
    if not (path / MARKER).is_file():
        raise SimError(f"{path} exists but was not created by `gpu-conformance sim up` (no {MARKER}); "
                       "refusing to delete it: choose another --state-dir")
    shutil.rmtree(path)


def _start(name: str, argv: list[str], state_dir: Path) -> int:
    log = (state_dir / "logs" / f"{name}.log").open("ab")
    # A new session: Ctrl-C in the terminal that ran `sim up` must not stop the cluster.
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _exit_status(pid: int) -> str:
    proc = _CHILDREN.get(pid)
    code = proc.poll() if proc is not None else None
    return f" (exit status {code})" if code is not None else ""


AUDIT_LOG = "audit.log"


def _audit_policy(state_dir: Path) -> Path:
    """An audit policy recording only the benchmark identity's requests (metadata, once each)."""
    path = state_dir / "audit-policy.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived", "ResponseStarted"],
        "rules": [{"level": "Metadata", "users": [pki.AUDITED_USER]}, {"level": "None"}]}))
    return path


def audited_requests(state_dir: Path) -> int:
    """How many requests the benchmark identity has made (completed ones in the audit log)."""
    path = state_dir / "logs" / AUDIT_LOG
    if not path.is_file():
        return 0
    with path.open() as f:
        return sum(1 for line in f if '"stage":"ResponseComplete"' in line or '"stage":"Panic"' in line)


def _api(st: SimState) -> kr8s.Api:
    """A client for this start of the cluster: kr8s caches clients by their arguments, and a restart on the
    same state directory keeps the kubeconfig's path but moves the API server to a new port."""
    return kr8s.api(url=st.server, kubeconfig=str(st.kubeconfig))


def _free_node_leases(st: SimState) -> None:
    """Delete the nodes' Leases before kwok starts again: each kwok holds them under an identity of its own,
    and a new one would leave a node unplayed until the Lease its predecessor renewed had run out."""
    api = _api(st)
    for lease in api.get("leases", namespace=NODE_LEASE_NAMESPACE):
        try:
            lease.delete()
        except kr8s.NotFoundError:
            pass


# Start-ups retried when a port was taken between picking and binding it.
START_ATTEMPTS = 3


def _log_tail(state_dir: Path, name: str, lines: int = 12) -> str:
    path = state_dir / "logs" / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _https_ok(url: str, pki_dir: Path | None) -> bool:
    ctx = ssl.create_default_context()
    if pki_dir is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(pki_dir / "ca.crt")
        ctx.load_cert_chain(pki_dir / "admin.crt", pki_dir / "admin.key")
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310 - loopback health URL
        return bool(resp.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback health URL
        return bool(resp.status == 200)


def _wait_healthy(name: str, check: Any, state_dir: Path, pid: int, binary: str) -> None:
    def probe() -> bool:
        if not _pid_is(pid, binary):
            raise SimError(f"{name} exited during start-up{_exit_status(pid)}; last log lines:\n{_log_tail(state_dir, name)}")
        return bool(check())

    try:
        wait_for(probe, bool, what=f"{name} to become healthy", timeout=START_TIMEOUT_S, tolerate=(OSError,), max_interval=1.0)
    except WaitTimeout as exc:
        raise SimError(f"{exc}\n{name} log tail:\n{_log_tail(state_dir, name)}") from None


def scenario_digest(scenarios: list[Scenario]) -> str:
    blob = json.dumps([s.model_dump(mode="json") for s in scenarios], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def all_nodes(scenarios: list[Scenario]) -> list[tuple[str, NodeSpec, str]]:
    """Every node of every scenario with its spec and scenario name; names must be unique."""
    seen: dict[str, str] = {}
    out = []
    for sc in scenarios:
        for name, spec in sc.expanded():
            if name in seen:
                raise SimError(f"node {name!r} is in both scenario {seen[name]!r} and {sc.name!r}")
            seen[name] = sc.name
            out.append((name, spec, sc.name))
    return out


def node_manifest(name: str, spec: NodeSpec, scenario: str) -> dict[str, Any]:
    """The Node object kwok will manage for one scenario node."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        SCENARIO_LABEL: scenario,
    }
    if not spec.ready:
        labels[NOT_READY_LABEL] = "true"
    if spec.gpus > 0 and spec.gfd_labels:
        driver = spec.labelled_driver or spec.driver
        cuda = spec.labelled_cuda or spec.cuda
        drv = (driver.split(".") + ["", ""])[:3]
        cu = (cuda.split(".") + ["0"])[:2]
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": spec.product,
                "nvidia.com/gpu.count": str(spec.gpus),
                "nvidia.com/gpu.memory": str(spec.memory_mib),
                # GPU Feature Discovery writes the current names and, still, the deprecated ones.
                "nvidia.com/cuda.driver-version.full": driver,
                "nvidia.com/cuda.driver-version.major": drv[0],
                "nvidia.com/cuda.driver-version.minor": drv[1],
                "nvidia.com/cuda.driver-version.revision": drv[2],
                "nvidia.com/cuda.runtime-version.full": cuda,
                "nvidia.com/cuda.runtime-version.major": cu[0],
                "nvidia.com/cuda.runtime-version.minor": cu[1],
                "nvidia.com/cuda.driver.major": drv[0],
                "nvidia.com/cuda.driver.minor": drv[1],
                "nvidia.com/cuda.driver.rev": drv[2],
                "nvidia.com/cuda.runtime.major": cu[0],
                "nvidia.com/cuda.runtime.minor": cu[1],
            }
        )
    labels.update(stackobjects.operand_labels(spec.metrics.exporter))
    labels.update(spec.labels)
    capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods)}
    allocatable = dict(capacity)
    if spec.capacity > 0 or spec.allocatable_gpus:
        capacity["nvidia.com/gpu"] = str(spec.capacity)
        allocatable["nvidia.com/gpu"] = str(spec.allocatable)
    if spec.legacy_gpus:
        capacity[LEGACY_GPU_RESOURCE] = allocatable[LEGACY_GPU_RESOURCE] = str(spec.legacy_gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [t.model_dump(exclude_none=True) for t in spec.taints]},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "nodeInfo": {
                "kubeletVersion": f"v{binaries.KUBERNETES_VERSION}",
                "osImage": "Ubuntu 24.04 LTS (simulated)",
                "kernelVersion": "6.8.0-sim",
                "containerRuntimeVersion": "containerd://2.1.0-sim",
            },
        },
    }


def new_objects(api: kr8s.Api, manifests: list[dict[str, Any]], exist_ok: bool = False) -> list[Any]:
    """Create API objects of any kind."""
    return [create_object(api, m, exist_ok=exist_ok) for m in manifests]


def _crd_established(api: kr8s.Api, name: str) -> bool:
    crd = next(iter(api.get("customresourcedefinitions", name)), None)
    # A CRD just created has `conditions: null` until the apiextensions controller looks at it.
    conds = (crd.raw.get("status") or {}).get("conditions") or [] if crd is not None else []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


class SimCluster:
    """One simulated cluster, identified by its state directory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()

    # -- inspection ---------------------------------------------------------------
    def state(self) -> SimState | None:
        return SimState.load(self.state_dir)

    def is_up(self) -> bool:
        return _healthy(self.state())

    def api(self) -> kr8s.Api:
        st = self.state()
        if st is None:
            raise SimError(f"no simulated cluster in {self.state_dir}; run `gpu-conformance sim up`")
        return _api(st)

    # -- lifecycle ----------------------------------------------------------------
    def up(self, scenarios: list[Scenario], kubeconfig_out: Path | None = None) -> SimState:
        """Start the cluster with these scenarios' nodes; idempotent."""
        digest = scenario_digest(scenarios)
        nodes = all_nodes(scenarios)
        existing = self.state()
        if existing is not None:
            if _healthy(existing):
                if existing.scenario_digest == digest:
                    _say(f"already up at {existing.server} with scenario(s) {', '.join(existing.scenario_names)}")
                else:
                    _say("already up; applying the new scenario(s)")
                    existing = self._apply(existing, scenarios, nodes, digest)
                self._export_kubeconfig(existing, kubeconfig_out)
                return existing
            _say("found a stale or partly running cluster; stopping it first")
            self.down(quiet=True)
        bins = binaries.ensure()
        started = time.monotonic()
        st = self._start_retrying_port_collisions(bins, scenarios, nodes, digest)
        _say(f"up in {time.monotonic() - started:.1f}s: {len(nodes)} nodes, API server {st.server}")
        self._export_kubeconfig(st, kubeconfig_out)
        return st

    def _start_retrying_port_collisions(self, bins: binaries.Binaries, scenarios: list[Scenario],
                                        nodes: list[tuple[str, NodeSpec, str]], digest: str) -> SimState:
        """Start; a process that found its port taken (picked free, bound later) means a fresh start on new ports."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start(bins, scenarios, nodes, digest)
            except SimError as exc:
                if attempt == START_ATTEMPTS or "address already in use" not in str(exc).lower():
                    raise
                _say(f"a port was taken between picking and binding it; starting again on fresh ports ({attempt}/{START_ATTEMPTS})")
        raise AssertionError("unreachable")

    def _export_kubeconfig(self, st: SimState, out: Path | None) -> None:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(st.kubeconfig, out)
            out.chmod(0o600)
        _say(f"kubeconfig: {out or st.kubeconfig}")

    def _start(self, bins: binaries.Binaries, scenarios: list[Scenario], nodes: list[tuple[str, NodeSpec, str]], digest: str) -> SimState:
        sd = self.state_dir
        _remove_state_dir(sd)
        (sd / "logs").mkdir(parents=True)
        sd.chmod(0o700)
        (sd / MARKER).write_text("state directory of a simulated GPU cluster; `gpu-conformance sim down` removes it\n")
        pki_dir = sd / "pki"
        pki.generate(pki_dir, SERVICE_IP)
        ports = {k: free_local_port() for k in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok", "jupyter")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        for ident in ("admin", "controller-manager", "scheduler", "restricted", "bench"):
            name = "kubeconfig" if ident == "admin" else f"{ident}.kubeconfig"
            pki.write_kubeconfig(sd / name, pki_dir, server, ident, "gpu-conformance-sim")
        st = SimState(
            state_dir=sd,
            ports=ports,
            pids={},
            binaries={**{k: str(v) for k, v in bins.paths.items()}, "exporter": sys.executable},
            scenario_digest=digest,
            scenario_names=[s.name for s in scenarios],
            kubernetes_version=binaries.KUBERNETES_VERSION,
        )
        st.save()
        try:
            for name in PROCESS_ORDER:
                if name == "kwok":
                    self._write_kwok_config(st, nodes, scenarios)
                    # kwok serves PortForward objects only when their CRD exists before it starts.
                    self._ensure_crd(_api(st), stackobjects.portforward_crd())
                if name == "exporter":
                    self._write_scenarios(st, scenarios)
                argv = self._argv(name, st)
                st.pids[name] = _start(name, argv, sd)
                st.save()  # record each PID at once so `sim down` can stop a half-started cluster
                _say(f"started {name} (pid {st.pids[name]})")
                self._wait_process(name, st)
            self._create_nodes(st, nodes)
            self._wait_ready(st, nodes)
            self._create_stack(st, scenarios)
            self._create_stranded(st, scenarios)
        except BaseException:
            _say("start-up failed; stopping what was started")
            self.down(quiet=True, keep_logs=True)
            raise
        done = replace(st, complete=True)
        done.save()
        return done

    def _argv(self, name: str, st: SimState) -> list[str]:
        sd, p, b = st.state_dir, st.ports, st.binaries
        pk = sd / "pki"
        if name == "etcd":
            peer = f"http://127.0.0.1:{p['etcd_peer']}"
            client = f"http://127.0.0.1:{p['etcd']}"
            return [
                b["etcd"], "--name=sim", f"--data-dir={sd / 'etcd'}", f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=sim={peer}",
                "--unsafe-no-fsync", "--quota-backend-bytes=4294967296", "--log-level=warn",
            ]
        if name == "kube-apiserver":
            return [
                b[name], f"--etcd-servers=http://127.0.0.1:{p['etcd']}", "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1", f"--secure-port={p['apiserver']}",
                f"--tls-cert-file={pk / 'apiserver.crt'}", f"--tls-private-key-file={pk / 'apiserver.key'}",
                f"--client-ca-file={pk / 'ca.crt'}", "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pk / 'sa.pub'}", f"--service-account-signing-key-file={pk / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
                "--allow-privileged=true", "--kubelet-preferred-address-types=InternalIP",
                f"--audit-policy-file={_audit_policy(sd)}", f"--audit-log-path={sd / 'logs' / AUDIT_LOG}",
                "--audit-log-maxsize=0", "--profiling=false", "--v=1",
            ]
        if name == "kube-controller-manager":
            kc = sd / "controller-manager.kubeconfig"
            return [
                b[name], f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={p['controller_manager']}", "--leader-elect=false",
                f"--root-ca-file={pk / 'ca.crt'}", f"--service-account-private-key-file={pk / 'sa.key'}",
                "--use-service-account-credentials=true", f"--cluster-signing-cert-file={pk / 'ca.crt'}",
                # kwok renews each node's Lease every 10 s; on a loaded CI machine a few renewals can be
                # late. A dead node must come from the scenario, never from load.
                "--node-monitor-grace-period=120s",
                # A large cluster's usual tuning (the default, 20/s, paces the DaemonSet controller's pod
                # creations and deletions in fan-out mode at 100 nodes and more).
                "--kube-api-qps=100", "--kube-api-burst=200",
                f"--cluster-signing-key-file={pk / 'ca.key'}", "--profiling=false", "--v=1",
            ]
        if name == "kube-scheduler":
            kc = sd / "scheduler.kubeconfig"
            return [
                b[name], f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={p['scheduler']}", "--leader-elect=false",
                # As for the controller-manager: the default, 50/s, held the scheduler's bindings back 7-8 s
                # at a time ("client-side throttling") during a 1,000-node wave.
                "--kube-api-qps=100", "--kube-api-burst=200",
                "--profiling=false", "--v=1",
            ]
        if name == "kwok":
            return [
                b[name], f"--kubeconfig={sd / 'kubeconfig'}", f"--config={sd / 'kwok.yaml'}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1", "--node-name=localhost", f"--node-port={p['kwok']}",
                f"--server-address=127.0.0.1:{p['kwok']}", f"--tls-cert-file={pk / 'kubelet.crt'}",
                f"--tls-private-key-file={pk / 'kubelet.key'}", "--enable-crds=PortForward", "--v=1",
            ]
        if name == "exporter":
            return [
                b[name], "-m", "gpu_conformance.sim.exporter", f"--kubeconfig={sd / 'kubeconfig'}",
                f"--scenarios={sd / 'scenarios.json'}", f"--ready-file={sd / 'exporter.ready'}", f"--jupyter-port={p['jupyter']}",
            ]
        raise SimError(f"unknown process {name}")

    def _wait_process(self, name: str, st: SimState) -> None:
        p, pk = st.ports, st.state_dir / "pki"
        checks = {
            "etcd": lambda: _http_ok(f"http://127.0.0.1:{p['etcd']}/health"),
            "kube-apiserver": lambda: _https_ok(f"https://127.0.0.1:{p['apiserver']}/readyz", pk),
            "kube-controller-manager": lambda: _https_ok(f"https://127.0.0.1:{p['controller_manager']}/healthz", None),
            "kube-scheduler": lambda: _https_ok(f"https://127.0.0.1:{p['scheduler']}/healthz", None),
            "kwok": lambda: _port_open(p["kwok"]),
            "exporter": lambda: (st.state_dir / "exporter.ready").is_file(),
        }
        _wait_healthy(name, checks[name], st.state_dir, st.pids[name], st.binaries[name])

    def _write_scenarios(self, st: SimState, scenarios: list[Scenario]) -> None:
        (st.state_dir / "exporter.ready").unlink(missing_ok=True)
        (st.state_dir / "scenarios.json").write_text(json.dumps([s.model_dump(mode="json") for s in scenarios]))

    def _write_kwok_config(self, st: SimState, nodes: list[tuple[str, NodeSpec, str]], scenarios: list[Scenario]) -> None:
        kwokconfig.write(st.state_dir / "kwok.yaml", [(n, s) for n, s, _ in nodes], st.state_dir / "pod-logs",
                         stackobjects.crash_keys(scenarios), stackobjects.restart_keys(scenarios), st.ports["jupyter"])

    def _create_nodes(self, st: SimState, nodes: list[tuple[str, NodeSpec, str]]) -> None:
        api = _api(st)
        _say(f"creating {len(nodes)} nodes")
        for name, spec, scenario in nodes:
            manifest = node_manifest(name, spec, scenario)
            node = Node(manifest, api=api)
            node.create()
            # The API server drops status on create: set capacity/allocatable through the status subresource.
            node.patch({"status": manifest["status"]}, subresource="status")

    def _wait_ready(self, st: SimState, nodes: list[tuple[str, NodeSpec, str]]) -> None:
        """Wait until kwok has initialized every node: Ready, or NotReady where the scenario says so."""
        api = _api(st)
        wanted = {n for n, _, _ in nodes}
        should_be_ready = {n: spec.ready for n, spec, _ in nodes}

        def ready_nodes() -> set[str]:
            # "ready" here: in the state the scenario asks for.
            return {
                n.name for n in list_nodes(api, SCENARIO_LABEL)
                if n.name in should_be_ready and n.ready == should_be_ready[n.name] and n.initialized
            }

        def default_sa() -> bool:
            return any(True for _ in api.get("serviceaccounts", "default", namespace="default"))

        try:
            wait_for(ready_nodes, lambda r: wanted <= r, what=f"{len(wanted)} simulated nodes to be Ready and initialized",
                     timeout=NODES_READY_TIMEOUT_S, describe=lambda r: f"{len(r & wanted)}/{len(wanted)} Ready; not ready: {sorted(wanted - r)[:5]}",
                     tolerate=(kr8s.ServerError, OSError))
            # The controller-manager creates the default ServiceAccount: proof it is working.
            wait_for(default_sa, bool, what="the default ServiceAccount (controller-manager running)",
                     timeout=START_TIMEOUT_S, tolerate=(kr8s.NotFoundError, kr8s.ServerError, OSError))
        except WaitTimeout as exc:
            raise SimError(f"{exc}\nkwok log tail:\n{_log_tail(st.state_dir, 'kwok')}") from None

    def _create_stranded(self, st: SimState, scenarios: list[Scenario]) -> None:
        """Bare pods the scenario says failed their GPU allocation on a node (kwok fails them at admission)."""
        api = _api(st)
        for sc in scenarios:
            pods = [stackobjects.stranded_pod(sc, name, i) for name, spec in sc.expanded() for i in range(spec.stranded_pods)]
            if pods:
                new_objects(api, [stackobjects.stranded_namespace(sc), *pods])

    def _create_stack(self, st: SimState, scenarios: list[Scenario]) -> None:
        """Each scenario's GPU stack: DaemonSets (the DaemonSet controller makes the pods), ClusterPolicy."""
        with_stack = [sc for sc in scenarios if sc.stack.flavour != "none"]
        if not with_stack:
            return
        api = _api(st)
        if any(sc.stack.flavour == "gpu-operator" for sc in with_stack):
            self._ensure_crd(api, stackobjects.crd())
        expected = 0
        for sc in with_stack:
            owner = None
            if sc.stack.flavour == "gpu-operator":
                cp = new_objects(api, [stackobjects.cluster_policy(sc)])[0]
                owner = cp.metadata.uid
            ns = {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": stackobjects.namespace_of(sc), "labels": {SCENARIO_LABEL: sc.name}}}
            new_objects(api, [ns, *stackobjects.daemonsets(sc, owner)])
            if sc.stack.flavour == "gpu-operator":
                new_objects(api, [stackobjects.dcgm_service(sc)])
            if sc.stack.flavour in ("gpu-operator", "gke") and sc.stack.service_monitor != "none":
                for definition in (stackobjects.service_monitor_crd(), stackobjects.pod_monitor_crd()):
                    self._ensure_crd(api, definition)
                new_objects(api, [stackobjects.monitor(sc)])
            expected += stackobjects.expected_pods(sc)
        _say(f"stack: {len(with_stack)} scenario(s), {expected} DaemonSet pod(s) expected")
        crashing = set(stackobjects.crash_keys(scenarios))

        ticker = Ticker()

        def settled() -> int:
            count = 0
            for p in transport.list_raw(api, "pods", label_selector=stackobjects.COMPONENT_LABEL):
                key = f"{p['metadata']['labels'][stackobjects.COMPONENT_LABEL]}@{p['spec'].get('nodeName', '')}"
                status = p.get("status") or {}
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
                count += ready == (key not in crashing) and status.get("phase") == "Running"
            if count < expected and ticker.due():
                _say(f"stack: {count}/{expected} pods settled")
            return count

        budget = max(START_TIMEOUT_S, STACK_POD_BUDGET_S * expected)
        wait_for(settled, lambda n: n >= expected, what=f"{expected} GPU-stack pods to settle", timeout=budget,
                 describe=lambda n: f"{n}/{expected} settled", tolerate=(kr8s.ServerError, OSError))
        serving = exporter.serving_nodes(scenarios)
        if serving:  # every exporter pod must be reachable before `up` returns
            group, version = stackobjects.PORTFORWARD_API
            wait_for(lambda: len(transport.list_raw(api, "portforwards", group=group, version=version)), lambda n: n >= len(serving),
                     what=f"port-forwards for {len(serving)} simulated metrics exporter(s)", timeout=budget,
                     describe=lambda n: f"{n}/{len(serving)} in place", tolerate=(kr8s.ServerError, OSError))

    def _ensure_crd(self, api: kr8s.Api, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        new_objects(api, [manifest], exist_ok=True)
        wait_for(lambda: _crd_established(api, name), bool, what=f"the CRD {name} to be established",
                 timeout=START_TIMEOUT_S, tolerate=(kr8s.NotFoundError, kr8s.ServerError, ValueError))

    def _delete_stack(self, st: SimState) -> None:
        """Remove every scenario's stack objects (their pods go with the namespaces)."""
        api = _api(st)
        for ns in api.get("namespaces", label_selector=SCENARIO_LABEL):
            ns.delete()
        try:
            for cp in api.get("clusterpolicies.nvidia.com"):
                cp.delete()
        except (kr8s.NotFoundError, kr8s.ServerError, ValueError):
            pass
        # A namespace being deleted cannot be created again: the new stack waits for the old to go.
        wait_for(lambda: [n.name for n in api.get("namespaces", label_selector=SCENARIO_LABEL)], lambda left: not left,
                 what="old stack namespaces to be deleted", timeout=START_TIMEOUT_S, tolerate=(kr8s.ServerError, OSError))

    def _apply(self, st: SimState, scenarios: list[Scenario], nodes: list[tuple[str, NodeSpec, str]], digest: str) -> SimState:
        """Switch a running cluster to other scenarios: replace nodes and restart kwok."""
        api = _api(st)
        for node in list(api.get("nodes", label_selector=SCENARIO_LABEL)):
            node.delete()
        self._delete_stack(st)
        self._stop_pid("exporter", st)
        self._stop_pid("kwok", st)
        _free_node_leases(st)
        self._write_kwok_config(st, nodes, scenarios)
        self._write_scenarios(st, scenarios)
        for name in ("kwok", "exporter"):
            st.pids[name] = _start(name, self._argv(name, st), st.state_dir)
            st.save()  # so `sim down` stops it even if applying fails below
            self._wait_process(name, st)
        wait_for(lambda: [n.name for n in api.get("nodes", label_selector=SCENARIO_LABEL)], lambda ns: not ns,
                 what="old simulated nodes to be deleted", timeout=START_TIMEOUT_S)
        self._create_nodes(st, nodes)
        self._wait_ready(st, nodes)
        self._create_stack(st, scenarios)
        self._create_stranded(st, scenarios)
        new = replace(st, scenario_digest=digest, scenario_names=[s.name for s in scenarios], complete=True)
        new.save()
        return new

    def _stop_pid(self, name: str, st: SimState) -> None:
        pid = st.pids.get(name)
        if pid is None or not _pid_is(pid, st.binaries[name]):
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: _pid_is(pid, st.binaries[name]), lambda alive: not alive, what=f"{name} to exit", timeout=STOP_GRACE_S)
        except WaitTimeout:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: _pid_is(pid, st.binaries[name]), lambda alive: not alive, what=f"{name} to die", timeout=STOP_GRACE_S)

    def stop_process(self, name: str) -> None:
        """Stop one process of the running cluster (a fault on purpose); start_process brings it back."""
        st = self.state()
        if st is None or name not in st.pids:
            raise SimError(f"no running simulated cluster with a {name} process in {self.state_dir}")
        self._stop_pid(name, st)
        proc = _CHILDREN.pop(st.pids[name], None)
        if proc is not None:
            proc.poll()
        _say(f"stopped {name}")

    def start_process(self, name: str) -> None:
        """Start one process of the cluster again, with the arguments and ports it had; wait until healthy."""
        st = self.state()
        if st is None or name not in st.pids:
            raise SimError(f"no simulated cluster with a {name} process in {self.state_dir}")
        if _pid_is(st.pids[name], st.binaries[name]):
            return
        if name == "kwok":
            _free_node_leases(st)
        st.pids[name] = _start(name, self._argv(name, st), self.state_dir)
        st.save()
        self._wait_process(name, st)
        _say(f"started {name} again (pid {st.pids[name]})")

    def down(self, quiet: bool = False, keep_logs: bool = False) -> bool:
        """Stop every process `up` started (by PID) and remove the state; True if anything was running."""
        st = self.state()
        if st is None:
            if not quiet:
                _say(f"nothing to stop in {self.state_dir}")
            if not keep_logs:
                _remove_state_dir(self.state_dir)
            return False
        # Stop in reverse start order; reap the ones that are our own children.
        for name in reversed(PROCESS_ORDER):
            self._stop_pid(name, st)
            proc = _CHILDREN.pop(st.pids.get(name, -1), None)
            if proc is not None:
                proc.poll()
        if keep_logs:
            (st.state_dir / "state.json").unlink(missing_ok=True)
        else:
            _remove_state_dir(st.state_dir)
        if not quiet:
            _say(f"stopped {len(st.pids)} processes and removed {st.state_dir}")
        return True

    def status(self) -> dict[str, Any]:
        """A JSON-able description of the cluster's state."""
        st = self.state()
        if st is None:
            return {"state_dir": str(self.state_dir), "up": False, "processes": {}}
        procs = process_status(st)
        out: dict[str, Any] = {
            "state_dir": str(st.state_dir),
            "up": _healthy(st),
            "complete": st.complete,
            "server": st.server if "apiserver" in st.ports else None,
            "kubeconfig": str(st.kubeconfig),
            "kubernetes_version": st.kubernetes_version,
            "scenarios": st.scenario_names,
            "processes": {n: {"pid": st.pids[n], "running": ok} for n, ok in procs.items()},
        }
        if out["up"]:
            try:
                nodes = list_nodes(_api(st))
                out["nodes"] = len(nodes)
                out["ready_nodes"] = sum(n.ready for n in nodes)
            except (kr8s.ServerError, OSError) as exc:
                out["error"] = str(exc)
        return out

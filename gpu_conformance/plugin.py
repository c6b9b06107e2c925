"""The pytest plugin: options, the `requirement` marker, per-node parameters, cluster session and summary.json."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import allure
import allure_commons
import httpx
import kr8s
import pytest
import yaml

from gpu_conformance import (__version__, catalogue, disruption, facts, nodelocks, progress, recovery, redaction, reports, runner,
                             stack, summary)
from gpu_conformance import profile as profiles
from gpu_conformance.catalogue import GATES, Requirement
from gpu_conformance.cluster import NodeFacts, Target, connect, resolve_target
from gpu_conformance.errors import GpuConformanceError
from gpu_conformance.progress import say
from gpu_conformance.summary import AI_FILE, Result, ai_evidence, build_summary, failure_text, outcome_of, write_json
from gpu_conformance.versions import DriverFacts, node_group
from gpu_conformance.workloads import GPU_TOLERATION

NO_GPU_NODES = "no-gpu-nodes"
# The parameter of a check on chosen nodes when no GPU node qualifies (the check is skipped).
NO_ELIGIBLE = "no-eligible-node"
# The parameter of an opt-in per-node check when the operator did not opt in (the check is skipped).
NOT_OPTED_IN = "not-opted-in"
NOT_OPTED_IN_REASON = ("opt-in: node reboots run only with --reboot-nodes NAME[,NAME] or --reboot-count N "
                       "(and recovery.reboot.command in the profile)")
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
SUITES_DIR_ENV = "GPU_CONFORMANCE_SUITES_DIR"


def suites_dir() -> Path:
    """Where every test must declare a requirement id: the checkout's suites/, or $GPU_CONFORMANCE_SUITES_DIR."""
    override = os.environ.get(SUITES_DIR_ENV)
    return Path(override).resolve() if override else SUITES_DIR


@dataclass
class Session:
    """Per-process state of a run against one cluster (lives in config.stash)."""

    kubeconfig: str | None
    context: str | None
    profile: profiles.Profile
    node_selector: str | None
    workload_timeout: float
    images: dict[str, str]
    run_id: str
    tolerations: list[dict[str, str]]
    # Where this run's xdist workers share what one of them computed (None without workers).
    run_cache: Path | None
    _target: Target | None = None
    _api: kr8s.Api | None = None
    _facts: facts.ClusterFacts | None = None
    results: list[Result] = field(default_factory=list)
    # What the run found before its first check (reported, never failed): pre-existing damage.
    run_start: dict[str, Any] = field(default_factory=dict)
    # The reboot opt-in: node names, or a count of nodes to pick.
    reboot_names: tuple[str, ...] = ()
    reboot_count: int = 0
    gate: str = "standard"
    # Driver versions the checks read from nvidia-smi pods, per node (for the reports' cluster facts).
    observed_drivers: dict[str, DriverFacts] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        """The cluster under test: --kubeconfig, else $KUBECONFIG, else ~/.kube/config."""
        if self._target is None:
            self._target = resolve_target(self.kubeconfig, self.context)
            redaction.register_kubeconfig(self._target.kubeconfig)
        return self._target

    @property
    def api(self) -> kr8s.Api:
        if self._api is None:
            self._api = connect(self.target)
        return self._api

    @property
    def locks(self) -> nodelocks.NodeLocks:
        """Which checks may use a node now (shared with this machine's other runs on the cluster)."""
        return nodelocks.for_server(self.api.auth.server)

    @property
    def reboot_nodes(self) -> list[str]:
        """The nodes the operator opted in to reboot: named ones, or the first N that can run a GPU pod."""
        gpu = self.facts.gpu_nodes
        if self.reboot_names:
            known = {n.name for n in gpu}
            unknown = [n for n in self.reboot_names if n not in known]
            if unknown:
                raise GpuConformanceError(f"--reboot-nodes: {', '.join(unknown)} is not a selected GPU node")
            return list(dict.fromkeys(self.reboot_names))
        return sorted(n.name for n in gpu if n.gpu_pod_blocker() is None)[: self.reboot_count]

    def smoke_sample(self) -> list[str]:
        """One GPU node per node group (profile group, else GPU product) that can run a GPU pod."""
        chosen: dict[str, str] = {}
        for node in sorted(self.facts.gpu_nodes, key=lambda n: n.name):
            if node.gpu_pod_blocker() is None:
                chosen.setdefault(node_group(self.profile, node.labels) or node.name, node.name)
        return sorted(chosen.values())

    def plugin_restart_nodes(self) -> list[str]:
        """The node whose device plugin is restarted: the profile's, else the first that can run a GPU pod."""
        wanted = self.profile.recovery.plugin_restart.node
        gpu = self.facts.gpu_nodes
        if wanted is not None:
            if wanted not in {n.name for n in gpu}:
                raise GpuConformanceError(f"profile recovery.plugin_restart.node {wanted!r} is not a selected GPU node")
            return [wanted]
        return sorted(n.name for n in gpu if n.gpu_pod_blocker() is None)[:1]

    def shared_path(self, name: str) -> Path | None:
        """A file this run's xdist workers share (None without workers)."""
        return self.run_cache / name if self.run_cache is not None else None

    @property
    def facts(self) -> facts.ClusterFacts:
        if self._facts is None:
            self._facts = facts.shared(self.api, self.node_selector, self.shared_path("facts.json"))
        return self._facts


SESSION_KEY = pytest.StashKey[Session]()
STARTED_KEY = pytest.StashKey[dt.datetime]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu-conformance", "GPU conformance suite")
    group.addoption("--kubeconfig", help="kubeconfig of the cluster under test (default: $KUBECONFIG, ~/.kube/config)")
    group.addoption("--context", help="kubeconfig context to use (default: current-context)")
    group.addoption("--gpu-node-selector", help="label selector limiting which nodes are considered, e.g. pool=gpu")
    group.addoption("--profile", help="cluster profile (YAML) stating what the cluster is expected to be")
    group.addoption("--workload-timeout", type=float,
                    help=f"seconds a workload pod may take to finish (default: the profile's, "
                         f"else {profiles.DEFAULT_WORKLOAD_TIMEOUT_S:.0f})")
    group.addoption("--image", action="append", default=[], metavar="WORKLOAD=IMAGE",
                    help="override a workload image, e.g. vector-add=registry.local/cuda-sample:vectoradd")
    group.addoption("--summary-json", help="write summary.json (one entry per check result) to this path; "
                                           f"{AI_FILE} goes beside it")
    group.addoption("--gate", choices=GATES, default="standard",
                    help="which checks run: smoke (node facts, stack health, metrics exposure, one vector-add per "
                         "node group), standard (default: all but the notebook and the node reboot), "
                         "full (adds the notebook, and opts in to the privileged dcgmproftester check), disruptive (adds the "
                         "opt-in node reboot; --reboot-nodes or --reboot-count select it)")
    group.addoption("--fanout", choices=("pods", "daemonset"),
                    help="how per-node workloads reach the nodes (default: the profile's fanout, else pods): one pod "
                         "per node created by the suite, or one DaemonSet per workload fanned out by the cluster")
    group.addoption("--run-id", help="label value marking everything this run creates (default: random)")
    group.addoption("--allow-privileged", action="store_true", default=False,
                    help="also run the checks marked `privileged`, whose pods need elevated capabilities "
                         "(dcgmproftester: SYS_ADMIN); the profile's allow_privileged: true does the same")
    group.addoption("--reboot-nodes", default="", metavar="NAME[,NAME]",
                    help="opt in to the disruptive reboot check on these GPU nodes (needs recovery.reboot.command "
                         "in the profile)")
    group.addoption("--reboot-count", type=int, default=0, metavar="N",
                    help="opt in to the disruptive reboot check on the first N Ready GPU nodes, by name")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the catalogue requirement a check verifies (exactly one per check)")
    config.addinivalue_line("markers", "disruptive: the check disrupts a node (it holds the node alone and runs "
                                       "after every other check)")
    config.addinivalue_line("markers", "nodes(kind): per-node parameters other than every GPU node: plugin-restart, "
                                       "reboot, recovered, smoke-sample (every node; one per node group in the smoke gate)")
    config.addinivalue_line("markers", "privileged: the check runs a pod with elevated capabilities; skipped unless "
                                       "--allow-privileged or the profile's allow_privileged: true")
    runner.few_malloc_arenas()
    try:
        path = config.getoption("profile")
        profile = profiles.load(Path(path)) if path else profiles.Profile()
    except GpuConformanceError as exc:
        raise pytest.UsageError(str(exc)) from None
    images = dict(profile.images)
    for item in config.getoption("image"):
        workload, sep, image = item.partition("=")
        if not sep or not workload or not image:
            raise pytest.UsageError(f"--image expects WORKLOAD=IMAGE, got {item!r}")
        images[workload] = image
    if config.getoption("fanout"):
        profile = profile.model_copy(update={"fanout": config.getoption("fanout")})
    timeout = config.getoption("workload_timeout") or profile.timeouts.workload_s
    if not (0 < timeout < 86400):  # also refuses nan and inf, which would make every wait endless
        raise pytest.UsageError("--workload-timeout must be between 0 and 86400 seconds")
    node_selector = config.getoption("gpu_node_selector") or profile.gpu_nodes.selector
    kubeconfig = config.getoption("kubeconfig")
    target = None
    if kubeconfig:
        try:
            target = resolve_target(kubeconfig, config.getoption("context"))
        except GpuConformanceError as exc:
            raise pytest.UsageError(str(exc)) from None
        # Let pytest-kubernetes's `k8s` fixture locate the same cluster (kubectl-based debugging helpers).
        if not config.getoption("k8s_kubeconfig", None) and not config.getoption("k8s_provider", None):
            config.option.k8s_provider = "external"
            config.option.k8s_kubeconfig = str(target.kubeconfig)
    # Decided once on the controller and handed to every xdist worker (workers re-parse the command
    # line, so a default chosen here would differ per worker).
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get("gc_run_id"):
        config.option.run_id = workerinput["gc_run_id"]
    if not config.option.run_id:
        config.option.run_id = runner.new_run_id()
    run_id = config.option.run_id
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(run_id), "gpu-conformance-xdist")
    cache = _run_cache(run_id) if _is_worker(config) else None
    # Workloads tolerate the GPU taint, and the profile's own GPU taint where it uses another key.
    tolerations = [dict(GPU_TOLERATION)]
    if profile.taints.key != GPU_TOLERATION["key"]:
        tolerations.append({"key": profile.taints.key, "operator": "Exists"})
    reboot_names = tuple(n.strip() for n in config.getoption("reboot_nodes").split(",") if n.strip())
    reboot_count = config.getoption("reboot_count")
    if reboot_count < 0:
        raise pytest.UsageError("--reboot-count must be 0 or more")
    if (reboot_names or reboot_count) and not profile.recovery.reboot.command:
        raise pytest.UsageError("the reboot opt-in needs recovery.reboot.command in the profile (Kubernetes cannot "
                                "reboot a node: e.g. \"ssh {node} sudo systemctl reboot\")")
    if profile.recovery.reboot.command:
        try:
            disruption.fill_command(profile.recovery.reboot.command, node="n", kubeconfig="k", python="p")
        except GpuConformanceError as exc:
            raise pytest.UsageError(str(exc)) from None
    gate = config.getoption("gate")
    if (reboot_names or reboot_count) and gate != "disruptive":
        gate = "disruptive"  # the reboot opt-in is explicit: it selects the gate that runs the reboot check
    if target is not None:
        redaction.register_kubeconfig(target.kubeconfig)
    sess = Session(kubeconfig, config.getoption("context"), profile, node_selector, timeout, images, run_id,
                   tolerations, cache, _target=target, reboot_names=reboot_names, reboot_count=reboot_count,
                   gate=gate)
    config.stash[SESSION_KEY] = sess
    config.stash[STARTED_KEY] = dt.datetime.now(dt.timezone.utc)
    config.pluginmanager.register(_Recorder(sess), "gpu-conformance-recorder")
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None and not _is_worker(config):  # long steps show progress through pytest's capture
        progress.show_through(capture.global_and_fixture_disabled)
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(_HtmlColumns(), "gpu-conformance-html")


class _HtmlColumns:
    """pytest-html's results table: requirement, node and (for failures) remediation columns."""

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[1:1] = ['<th class="sortable" data-column-type="requirement">Requirement</th>',
                      '<th class="sortable" data-column-type="node">Node</th>',
                      '<th data-column-type="remediation">Remediation</th>']

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        props = dict(report.user_properties)
        req_id = str(props.get("requirement", ""))
        req = catalogue.load().by_id.get(req_id)
        remediation = req.remediation if req is not None and report.failed and props.get("gc_status") == "failed" else ""
        cells[1:1] = [f'<td class="col-requirement">{html.escape(req_id)}</td>',
                      f'<td class="col-node">{html.escape(str(props.get("node", "")))}</td>',
                      f'<td class="col-remediation">{html.escape(remediation)}</td>']


class _XdistController:
    """xdist-only hook, registered only when xdist is installed."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["gc_run_id"] = self.run_id


def _run_cache(run_id: str) -> Path:
    """Where a run's xdist workers share the cluster facts and the workload wave's results."""
    return Path(tempfile.gettempdir()) / "gpu-conformance" / f"run-{run_id}"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def session_of(config: pytest.Config) -> Session:
    return config.stash[SESSION_KEY]


def requirement_of(item: pytest.Item) -> Requirement | None:
    marks = list(item.iter_markers("requirement"))
    if len(marks) != 1 or len(marks[0].args) != 1:
        return None
    req_id = marks[0].args[0]
    cat = catalogue.load()
    return cat[req_id] if req_id in cat else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every check in suites/ declares exactly one known requirement id, and no id has two checks."""
    cat = catalogue.load()
    problems = []
    owner: dict[str, str] = {}
    suites = suites_dir()
    in_suites_by_file: dict[Path, bool] = {}  # a module's items share their file (25,000 items at 1,000 nodes)
    for item in items:
        marks = list(item.iter_markers("requirement"))
        if item.path not in in_suites_by_file:
            in_suites_by_file[item.path] = suites in Path(str(item.path)).resolve().parents
        in_suites = in_suites_by_file[item.path]
        if not marks:
            if in_suites:
                problems.append(f"{item.nodeid}: declares no requirement id (@pytest.mark.requirement)")
            continue
        ids = [m.args[0] if m.args else None for m in marks]
        if len(ids) != 1:
            problems.append(f"{item.nodeid}: declares {len(ids)} requirement ids; exactly one is allowed")
        elif ids[0] not in cat:
            problems.append(f"{item.nodeid}: unknown requirement id {ids[0]!r}")
        else:
            check = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
            if owner.setdefault(str(ids[0]), check) != check:
                problems.append(f"{item.nodeid}: requirement id {ids[0]} is already verified by {owner[str(ids[0])]}")
    if problems:
        raise pytest.UsageError("invalid requirement markers:\n  " + "\n  ".join(sorted(set(problems))))
    _select_gate(config, items)
    # Checks that disrupt a node run after every other check (the sort is stable).
    items.sort(key=lambda it: it.get_closest_marker("disruptive") is not None)
    for item in items:
        req = requirement_of(item)
        if req is not None:
            # On every report of the item: JUnit properties, and the xdist controller's recorder.
            callspec = getattr(item, "callspec", None)
            node = callspec.params.get("gpu_node_name") if callspec else None
            node = None if node in (NO_GPU_NODES, NOT_OPTED_IN, NO_ELIGIBLE) else node
            item.user_properties += [("requirement", req.id), ("node", node or "")]


def _select_gate(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the checks outside the run's gate (the catalogue names each check's smallest gate)."""
    rank = GATES.index(session_of(config).gate)
    outside = [it for it in items if (req := requirement_of(it)) is not None and GATES.index(req.gate) > rank]
    if outside:
        config.hook.pytest_deselected(items=outside)
        dropped = {id(it) for it in outside}
        items[:] = [it for it in items if id(it) not in dropped]


def _report_labels(req: Requirement, node: str | None) -> None:
    """The one place report labels come from: the catalogue entry of the running check's requirement, handed
    to its open Allure result (not markers on every item: a run keeps its items, 25,000 at 1,000 nodes)."""
    labels = {"epic": req.area, "feature": f"{req.id} {req.title}", "story": node or "cluster-wide",
              "severity": "critical" if req.level == "MUST" else "normal", "tag": req.id}
    if req.ai_conformance:
        labels["ai_conformance"] = req.ai_conformance
    for label_type, value in labels.items():
        allure.dynamic.label(label_type, value)
    allure.dynamic.description(f"{req.statement}\n\nLevel: {req.level}. Remediation when it fails: {req.remediation}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Checks that take `gpu_node` run once per GPU node of the cluster."""
    if "gpu_node" not in metafunc.fixturenames:
        return
    sess = session_of(metafunc.config)
    mark = metafunc.definition.get_closest_marker("nodes")
    try:
        names = [n.name for n in sess.facts.gpu_nodes]
        if mark is not None and names and mark.args[0] == "smoke-sample":
            names = (sess.smoke_sample() or [NO_ELIGIBLE]) if sess.gate == "smoke" else names
        elif mark is not None and names:
            names = _chosen_nodes(sess, str(mark.args[0])) or [NOT_OPTED_IN if mark.args[0] == "reboot" else NO_ELIGIBLE]
    except GpuConformanceError as exc:
        raise pytest.UsageError(str(exc)) from None
    except kr8s.ServerError as exc:  # e.g. a malformed --gpu-node-selector (HTTP 400)
        raise pytest.UsageError(f"listing nodes failed: {exc}") from None
    metafunc.parametrize("gpu_node_name", names or [NO_GPU_NODES], ids=names or [NO_GPU_NODES], scope="function")


def _chosen_nodes(sess: Session, kind: str) -> list[str]:
    """The nodes a `nodes(kind)` check runs on."""
    if kind == "plugin-restart":
        return sess.plugin_restart_nodes()
    if kind == "reboot":
        return sess.reboot_nodes
    if kind == "recovered":
        return sorted(set(sess.plugin_restart_nodes()) | set(sess.reboot_nodes))
    raise pytest.UsageError(f"unknown nodes({kind!r}) marker")


@pytest.fixture(scope="session")
def gc_session(request: pytest.FixtureRequest) -> Session:
    """The run's cluster session: API client, run id, options."""
    return session_of(request.config)


@pytest.fixture(scope="session")
def cluster_facts(gc_session: Session) -> facts.ClusterFacts:
    """Read-only facts about the cluster, gathered once per run."""
    return gc_session.facts


@pytest.fixture
def requirement(request: pytest.FixtureRequest) -> Requirement:
    """The catalogue entry of the running check."""
    req = requirement_of(request.node)
    if req is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses `requirement` but declares no known requirement id")
    return req


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a line of evidence for the reports (summary.json, JUnit properties), whatever the outcome."""

    def add(text: str) -> None:
        request.node.user_properties.append(("gc_evidence", redaction.redact(text)))

    return add


@pytest.fixture
def gpu_nodes(cluster_facts: facts.ClusterFacts, requirement: Requirement) -> tuple[NodeFacts, ...]:
    """Every selected GPU node; with none at all, the check fails (a cluster without GPUs is not conformant)."""
    if not cluster_facts.gpu_nodes:
        where = f" matching selector {cluster_facts.node_selector!r}" if cluster_facts.node_selector else ""
        pytest.fail(
            requirement.violation(
                None,
                f"at least one GPU node{where} (nvidia.com/gpu capacity or label nvidia.com/gpu.present=true)",
                f"0 GPU nodes among {len(cluster_facts.nodes)} nodes",
            ),
            pytrace=False,
        )
    return cluster_facts.gpu_nodes


@pytest.fixture
def gpu_node(gpu_node_name: str, cluster_facts: facts.ClusterFacts, request: pytest.FixtureRequest) -> NodeFacts:
    """The GPU node this check instance is about; with no GPU nodes at all, the check fails."""
    if gpu_node_name == NO_GPU_NODES:
        request.getfixturevalue("gpu_nodes")  # fails the check with the shared message
    if gpu_node_name == NOT_OPTED_IN:
        pytest.skip(NOT_OPTED_IN_REASON)
    if gpu_node_name == NO_ELIGIBLE:
        pytest.skip("no selected GPU node is Ready with an allocatable GPU (see GPU-NODE-001, GPU-NODE-002)")
    node = cluster_facts.node(gpu_node_name)
    attach(request.node, f"node {node.name} (as the run read it)", _node_yaml(node), "yaml")
    return node


_NODE_YAML: dict[int, tuple[NodeFacts, str]] = {}  # id -> (the facts, kept alive so the id stays theirs; YAML)


def _node_yaml(node: NodeFacts) -> str:
    """A node's facts as YAML, written once per read of the node (every check instance on it attaches them)."""
    seen = _NODE_YAML.get(id(node))
    if seen is None or seen[0] is not node:
        seen = _NODE_YAML[id(node)] = (node, _yaml(asdict(node)))
    return seen[1]


def _yaml(data: Any) -> str:
    """Data as redacted YAML (libyaml's emitter: several times faster than the pure-Python one)."""
    return yaml.dump(redaction.redact_any(data), Dumper=yaml.CSafeDumper, sort_keys=False)


class _Children(list[str]):
    """An Allure container's children (test uuids) with a constant-time `in`: allure-pytest asks, for each test
    and each fixture it uses, whether the test is among the fixture's children already, and a session fixture's
    children are every test of the run (a list scan each time: quadratic, minutes at 1,000 nodes)."""

    def __init__(self, items: list[str]) -> None:
        super().__init__(items)
        self._seen = set(items)

    def append(self, value: str) -> None:
        super().append(value)
        self._seen.add(value)

    def __contains__(self, value: object) -> bool:
        return value in self._seen


class _EndedStagesOnly:
    """Allure's developer hook, ahead of its file logger: a fixture container keeps only the tear-down stages
    that ended. pytest 9.1 gives every fixture an internal finalizer, which allure-pytest (2.16) opens as a
    tear-down stage and ends only after the container is written: without a status, the Allure report showed an
    'unknown' tear-down under every check (allure-framework/allure-python#918). Real tear-downs have ended."""

    @allure_commons.hookimpl(tryfirst=True)
    def report_container(self, container: Any) -> None:
        container.afters = [stage for stage in container.afters if stage.status is not None]


def _allure_adjusted(config: pytest.Config) -> None:
    """Every Allure fixture container started from now on keeps its children in a `_Children`, and is written
    with only the tear-down stages that ended (until this pytest session's cleanup)."""
    logger = getattr(config.pluginmanager.getplugin("allure_listener"), "allure_logger", None)
    if logger is None:
        return
    start_group = logger.start_group

    def start(uuid: str, group: Any) -> None:
        group.children = _Children(list(group.children))
        start_group(uuid, group)

    logger.start_group = start
    ended = _EndedStagesOnly()
    allure_commons.plugin_manager.register(ended)

    def unregister() -> None:
        if allure_commons.plugin_manager.is_registered(ended):
            allure_commons.plugin_manager.unregister(ended)

    config.add_cleanup(unregister)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Report GPU pods already stranded before the run (a failed GPU allocation nothing will redo)."""
    config = session.config
    _allure_adjusted(config)
    sess = session_of(config)
    if _is_worker(config) or sess._target is None:
        return
    try:
        found = recovery.list_stranded(sess.api, [n.name for n in sess.facts.gpu_nodes])
    except (GpuConformanceError, kr8s.ServerError, kr8s.APITimeoutError, httpx.TransportError) as exc:
        say(f"run start: could not look for stranded GPU pods ({type(exc).__name__}: {exc})")
        return
    sess.run_start = {"stranded_pods": [asdict(s) for s in found]}
    if found:
        say(f"run start: {len(found)} GPU pod(s) already stranded by a failed GPU allocation (reported, not failed):")
        for s in found:
            say(f"  {s.describe()}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Checks marked `privileged` run only where the operator opted in."""
    if item.get_closest_marker("privileged") is None:
        return
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("gpu_node_name") == NO_GPU_NODES:
        return  # no GPU nodes at all: the check fails on that (it starts no pod), like every other check
    config = item.config
    sess = session_of(config)
    if not (config.getoption("allow_privileged") or sess.profile.allow_privileged or sess.gate in ("full", "disruptive")):
        pytest.skip("opt-in: this check runs a pod with the SYS_ADMIN capability; pass --allow-privileged "
                    "or set allow_privileged: true in the profile (the full and disruptive gates opt in)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the check's outcome to this phase's report (it travels to the xdist controller)."""
    report = yield
    req = requirement_of(item)
    if req is None:
        return report
    status, message = outcome_of(report, call.excinfo)
    if status is not None:
        report.user_properties += [("gc_status", status), ("gc_message", redaction.redact(message))]
    if status == "failed":
        found = catalogue.violation_in(failure_text(call.excinfo.value) if call.excinfo else message, req.id)
        if found is not None:
            report.user_properties += [("gc_expected", redaction.redact(found.expected)),
                                       ("gc_observed", redaction.redact(found.observed))]
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:  # JUnit's failure message (and the terminal's short summary): the remediation
            where = f" node {found.node}" if found is not None and found.node else ""
            crash.message = f"{req.id}{where}: {req.remediation}"
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):
        text = str(report.longrepr)
        if redaction.redact(text) != text:
            report.longrepr = redaction.redact(text)
    if report.when == "teardown":
        _attach_to_allure(item, report, req)
        # Handed on: pytest keeps every item to the end of the run, and the evidence with it otherwise.
        item.stash[ATTACHMENTS_KEY] = []
    return report


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a test file's last check (its module fixtures torn down): freed memory back to the system."""
    if nextitem is None or nextitem.path != item.path:
        runner.release_free_memory()


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """A failure message built for an earlier check is not this one's."""
    catalogue.forget_violations()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A conformance failure found while setting a check up is that check's failure in every report
    (JUnit and pytest-html would call any setup-phase problem an error): it runs first, before the
    reporters and before xdist forwards the report."""
    if report.when == "setup" and report.failed and dict(report.user_properties).get("gc_status") == "failed":
        report.when = "call"  # type: ignore[assignment]


ATTACHMENTS_KEY = pytest.StashKey[list[tuple[str, str, str]]]()
_ATTACHMENT_TYPES = {"text": allure.attachment_type.TEXT, "json": allure.attachment_type.JSON,
                     "yaml": allure.attachment_type.YAML}


def attach(item: pytest.Item, name: str, body: Any, kind: str = "text") -> None:
    """Evidence for the check's Allure result (redacted): text as is, json/yaml serialised from data (a
    string is taken as serialised already)."""
    if kind == "json" and not isinstance(body, str):
        text = json.dumps(redaction.redact_any(body), indent=2, default=str)
    elif kind == "yaml" and not isinstance(body, str):
        text = _yaml(body)
    else:
        text = redaction.redact(str(body))
    item.stash.setdefault(ATTACHMENTS_KEY, []).append((name, text, kind))


def attach_pod(item: pytest.Item, outcome: runner.PodOutcome) -> None:
    """A workload pod's evidence: the spec the suite submitted, its logs and its events."""
    label = f"pod {outcome.namespace}/{outcome.pod}"
    if (spec := outcome.spec):
        attach(item, f"{label}: submitted spec", dict(spec), "yaml")
    for container, log in outcome.container_logs.items():
        attach(item, f"{label}: log of {container}", log)
    if outcome.events:
        attach(item, f"{label}: events", "\n".join(outcome.events))


def _attach_to_allure(item: pytest.Item, report: pytest.TestReport, req: Requirement) -> None:
    """Hand the check's labels and evidence to Allure (after its last phase, while its result is still open)."""
    if not item.config.pluginmanager.hasplugin("allure_listener"):
        return
    node = dict(report.user_properties).get("node")  # "" for a cluster-wide check
    _report_labels(req, str(node) if node else None)
    evidence = "\n".join(str(v) for k, v in report.user_properties if k == "gc_evidence")
    if evidence:
        allure.attach(redaction.redact(evidence), name="evidence", attachment_type=allure.attachment_type.TEXT)
    for name, text, kind in item.stash.get(ATTACHMENTS_KEY, []):
        allure.attach(text, name=name, attachment_type=_ATTACHMENT_TYPES[kind])


class _Recorder:
    """Collects one Result per check instance (on the xdist controller, from forwarded reports)."""

    def __init__(self, sess: Session) -> None:
        self.sess = sess
        self.index: dict[str, int] = {}  # nodeid -> its place in sess.results

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if "requirement" not in props:
            return
        if "gc_status" in props:
            status, message = str(props["gc_status"]), str(props["gc_message"])
        elif report.failed:  # e.g. a crashed xdist worker's report: never drop it
            status, message = "error", str(report.longrepr)[-2000:]
        else:
            return
        for key, value in report.user_properties:
            if key == "gc_driver":
                seen = json.loads(str(value))
                node = seen.pop("node")
                self.sess.observed_drivers[node] = DriverFacts(**seen)
        result = Result(
            nodeid=report.nodeid,
            id=str(props["requirement"]),
            node=str(props["node"]) or None,
            status=status,
            message=message,
            duration_s=round(report.duration, 3),
            evidence="\n".join(str(v) for k, v in report.user_properties if k == "gc_evidence"),
            expected=str(props["gc_expected"]) if "gc_expected" in props else None,
            observed=str(props["gc_observed"]) if "gc_observed" in props else None,
        )
        results = self.sess.results
        # One result per check: a later phase replaces a pass or skip with a failure or error;
        # the first failure or error stands.
        existing = self.index.get(report.nodeid)
        if existing is None:
            self.index[report.nodeid] = len(results)
            results.append(result)
        elif results[existing].status in ("passed", "skipped") and result.status in ("failed", "error"):
            results[existing] = result


def pytest_unconfigure(config: pytest.Config) -> None:
    progress.show_through(None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    sess = session_of(config)
    if _is_worker(config):
        return
    # Only when this run talked to a cluster (the xdist controller never does itself).
    talked = sess._api is not None or (sess._target is not None and config.pluginmanager.hasplugin("dsession"))
    if talked:
        # Sweep anything this run created that a finalizer did not get to (e.g. after Ctrl-C).
        try:
            runner.delete_run_namespaces(sess.api, sess.run_id)
            # A reboot check uncordons in its own finally; this catches a worker killed mid-check.
            for node in disruption.restore_cordons(sess.api, sess.run_id):
                print(f"[gpu-conformance] uncordoned node {node}, left cordoned by this run")
        except Exception as exc:  # cleanup must not mask the run's outcome
            print(f"[gpu-conformance] warning: cleanup of run {sess.run_id} incomplete: {exc}")
    shutil.rmtree(_run_cache(sess.run_id), ignore_errors=True)  # shared by this run's workers only
    path = config.getoption("summary_json")
    allure_dir = getattr(config.option, "allure_report_dir", None)
    if not path and not allure_dir:
        return
    info = _cluster_info(sess) if talked else reports.cluster_info(None, None)
    if path:
        cat = catalogue.load()
        doc = build_summary(sess.results, cat, started=config.stash[STARTED_KEY], suite_version=__version__,
                            run_id=sess.run_id, gate=sess.gate, exitstatus=int(exitstatus), cluster=info,
                            run_start=sess.run_start)
        write_json(Path(path), doc)
        write_json(Path(path).with_name(AI_FILE), ai_evidence(doc, cat))
    if allure_dir and Path(allure_dir).is_dir():
        # After the results, so nothing wipes it; Allure shows it as the report's Environment.
        (Path(allure_dir) / "environment.properties").write_text(
            reports.environment_properties(info, __version__, sess.gate))


def _cluster_info(sess: Session) -> summary.ClusterInfo:
    """The cluster facts for the reports; what could not be read stays unknown (the run's outcome stands)."""
    target = sess.target
    try:
        found = sess.facts
        plugins = stack.gather(sess.api, [n.name for n in found.gpu_nodes]).flavours()
    except Exception as exc:  # noqa: BLE001 - reporting must not mask the run's outcome
        say(f"could not read the cluster facts for the reports ({type(exc).__name__}: {exc})")
        return reports.cluster_info(None, target.server)
    return reports.cluster_info(found, target.server, plugins, sess.observed_drivers, sess.profile)

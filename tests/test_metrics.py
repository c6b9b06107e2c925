"""GPU metrics: the Prometheus text of dcgm-exporter and GKE's device plugin, required families, series
per GPU, pod attribution, load against idle, monitor selection, and the simulator's exporters."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from gpu_conformance import metrics, scrape
from gpu_conformance.sim import exporter
from gpu_conformance.sim.scenario import NodeMetrics, NodeSpec

DATA = Path(__file__).parent / "data" / "metrics"
DCGM = (DATA / "dcgm-exporter-gpu-operator.txt").read_text()


def test_the_issue_sample_line_parses() -> None:
    text = ('DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-3a3c30e0",device="nvidia0",container="tf-notebook",'
            'namespace="default",pod="tf-notebook"} 405\n')
    scrape_ = metrics.parse_metrics(text)
    (sample,) = scrape_.series("DCGM_FI_DEV_SM_CLOCK")
    assert sample.value == 405 and sample.labels["pod"] == "tf-notebook" and sample.labels["device"] == "nvidia0"
    assert metrics.attributed(metrics.parse_metrics(text.replace("SM_CLOCK", "GPU_UTIL")), "dcgm-exporter",
                              "default", "tf-notebook")[0].gpu == "GPU-3a3c30e0"


def test_a_scrape_keeps_one_label_set_per_series_identity() -> None:
    """A run keeps two scrapes per node: samples with the same labels share one mapping, not a dict each."""
    s = metrics.parse_metrics(DCGM)
    by_labels = {tuple(sorted(smp.labels.items())): smp.labels for smp in s.samples}
    assert all(smp.labels is by_labels[tuple(sorted(smp.labels.items()))] for smp in s.samples)
    assert len(by_labels) < len(s.samples) / 2  # the capture's families share their GPUs' label sets
    assert not hasattr(s.samples[0], "__dict__")


def test_dcgm_exporter_output_has_every_required_family_per_gpu() -> None:
    s = metrics.parse_metrics(DCGM)
    assert metrics.missing_families(s, "dcgm-exporter") == []
    assert metrics.missing_families(s, "dcgm-exporter", ["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"]) == ["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"]
    names = metrics.served_required(s, "dcgm-exporter")
    assert names[0] == "DCGM_FI_DEV_GPU_UTIL" and len(names) == 7
    assert metrics.gpus_per_family(s, "dcgm-exporter", names) == dict.fromkeys(names, 2)
    # dcgm-exporter serves counters without `_total`; prometheus_client names the sample `<name>_total`:
    # both names find it.
    assert len(s.series("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")) == 2
    assert s.series("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION") == s.series("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total")
    assert metrics.missing_families(s, "dcgm-exporter", ["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]) == []


def test_a_missing_family_is_named_with_what_it_measures() -> None:
    text = "\n".join(line for line in DCGM.splitlines() if "SM_CLOCK" not in line)
    assert metrics.missing_families(metrics.parse_metrics(text), "dcgm-exporter") == ["SM clock (DCGM_FI_DEV_SM_CLOCK)"]


def test_attribution_and_load_against_idle() -> None:
    loaded = metrics.parse_metrics(DCGM)
    found = metrics.attributed(loaded, "dcgm-exporter", "default", "tf-notebook")
    assert [(a.sample.name, a.gpu) for a in found] == [
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "GPU-9b1f5b52-2f0c-4c1b-8d7e-0c1d2e3f4a5b"),
        ("DCGM_FI_DEV_GPU_UTIL", "GPU-9b1f5b52-2f0c-4c1b-8d7e-0c1d2e3f4a5b")]
    assert metrics.attributed(loaded, "dcgm-exporter", "other", "tf-notebook") == []
    idle = metrics.parse_metrics(DCGM.replace("} 97", "} 0").replace("} 0.981234", "} 0.000000"))
    verdict = metrics.rose_under_load(idle, "dcgm-exporter", found)
    assert verdict.rose and "DCGM_FI_DEV_GPU_UTIL GPU GPU-9b1f5b52-2f0c-4c1b-8d7e-0c1d2e3f4a5b: idle 0 -> load 97" in verdict.lines
    flat = metrics.attributed(idle, "dcgm-exporter", "default", "tf-notebook")
    assert not metrics.rose_under_load(idle, "dcgm-exporter", flat).rose
    # Already busy before the load (another tenant): not rising is not a rise.
    assert not metrics.rose_under_load(loaded, "dcgm-exporter", found).rose


def test_legacy_attribution_labels_are_accepted() -> None:
    s = metrics.parse_metrics((DATA / "dcgm-exporter-legacy-labels.txt").read_text())
    (found,) = metrics.attributed(s, "dcgm-exporter", "ml", "resnet-7d9f4c8b6-x2k9p")
    assert found.sample.value == 88 and found.gpu == "GPU-8c7e1d9a-4d2b-11ea-a1b2-0242ac120002"


def test_gke_device_plugin_metrics() -> None:
    s = metrics.parse_metrics((DATA / "gke-device-plugin.txt").read_text())
    assert metrics.missing_families(s, "gke-device-plugin") == []
    (found,) = metrics.attributed(s, "gke-device-plugin", "default", "cuda-load-0")
    assert found.sample.name == "duty_cycle" and found.gpu == "GPU-5d635989-51d0-3742-b2a2-208e46e38de3"
    assert metrics.rose_under_load(None, "gke-device-plugin", [found]).rose  # no idle series: idle counts as 0


@pytest.mark.parametrize(("text", "message"), [
    ("", "no metric samples in the response (it is empty)"),
    ("# HELP x y\n# TYPE x gauge\n", "no metric samples in the response (only comments)"),
    ('DCGM_FI_DEV_GPU_UTIL{gpu="0",UU', "not the Prometheus text format"),
    ("<html><body>404 page not found</body></html>", "not the Prometheus text format"),
])
def test_bad_text_is_a_parse_error(text: str, message: str) -> None:
    with pytest.raises(metrics.MetricsParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        metrics.parse_metrics(text)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(DCGM)))
def test_every_truncation_parses_or_is_a_parse_error(cut: int) -> None:
    try:
        s = metrics.parse_metrics(DCGM[:cut])
    except metrics.MetricsParseError:
        return
    assert s.samples  # never a silent empty result


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_parses_or_is_a_parse_error(text: str) -> None:
    try:
        s = metrics.parse_metrics(text)
    except metrics.MetricsParseError:
        return
    assert s.samples


def test_sample_lines_render_back() -> None:
    (sample,) = [s for s in metrics.parse_metrics(DCGM).series("DCGM_FI_DEV_GPU_UTIL") if s.labels["gpu"] == "1"]
    assert sample.line().startswith('DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-9b1f5b52') and sample.line().endswith("} 97")


# --- the simulator's exporters -----------------------------------------------------------------


def _render(spec: NodeSpec, pods: list[exporter.GpuPod], kind: metrics.ExporterKind = "dcgm-exporter") -> metrics.Scrape:
    registry = CollectorRegistry()
    registry.register(exporter._Metrics(exporter.NodeExporter("n1", spec, kind, "dcgm-exporter", 9400), pods))
    return metrics.parse_metrics(generate_latest(registry).decode())


LOAD = exporter.GpuPod("ns", "gpu-load-n1", "gpu-load", 1, "gpu-load")
HOLD = exporter.GpuPod("ns", "gpu-hold-n1", "gpu-hold", 2, "gpu-hold")
TENSOR = exporter.GpuPod("ns", "tensor-n1", "dcgmproftester", 1, "dcgmproftester")


def test_simulated_exporter_serves_every_gpu_and_attributes_pods_in_order() -> None:
    s = _render(NodeSpec(name="n1", gpus=8), [HOLD, LOAD])
    names = metrics.served_required(s, "dcgm-exporter")
    assert metrics.gpus_per_family(s, "dcgm-exporter", names) == dict.fromkeys(names, 8)
    held = {smp.labels["gpu"]: smp.labels["pod"] for smp in s.series("DCGM_FI_DEV_GPU_UTIL") if smp.labels["pod"]}
    assert held == {"0": "gpu-hold-n1", "1": "gpu-hold-n1", "2": "gpu-load-n1"}
    found = metrics.attributed(s, "dcgm-exporter", "ns", "gpu-load-n1")
    assert metrics.rose_under_load(_render(NodeSpec(name="n1", gpus=8), []), "dcgm-exporter", found).rose
    hold = metrics.attributed(s, "dcgm-exporter", "ns", "gpu-hold-n1")
    assert hold and not metrics.rose_under_load(None, "dcgm-exporter", hold).rose  # holding is not loading


@pytest.mark.parametrize(("faults", "check"), [
    (NodeMetrics(missing_families=["DCGM_FI_DEV_SM_CLOCK"]),
     lambda s: metrics.missing_families(s, "dcgm-exporter") == ["SM clock (DCGM_FI_DEV_SM_CLOCK)"]),
    (NodeMetrics(attribution=False), lambda s: metrics.attributed(s, "dcgm-exporter", "ns", "gpu-load-n1") == []),
    (NodeMetrics(rises_under_load=False),
     lambda s: not metrics.rose_under_load(None, "dcgm-exporter", metrics.attributed(s, "dcgm-exporter", "ns", "gpu-load-n1")).rose),
    (NodeMetrics(profiling=False),
     lambda s: [a.sample.value for a in metrics.attributed(s, "dcgm-exporter", "ns", "tensor-n1")] == [0.0, 0.0, 100.0]),
    (NodeMetrics(legacy_labels=True),
     lambda s: metrics.attributed(s, "dcgm-exporter", "ns", "gpu-load-n1")[0].sample.labels["pod_name"] == "gpu-load-n1"),
])
def test_simulated_exporter_faults(faults: NodeMetrics, check) -> None:
    assert check(_render(NodeSpec(name="n1", gpus=2, metrics=faults), [LOAD, TENSOR]))


def test_simulated_dcgmproftester_raises_tensor_activity() -> None:
    s = _render(NodeSpec(name="n1", gpus=2), [TENSOR])
    (found,) = metrics.attributed(s, "dcgm-exporter", "ns", "tensor-n1", (metrics.TENSOR_ACTIVE,))
    assert found.sample.value == 0.93 and metrics.rose_under_load(None, "dcgm-exporter", [found]).rose


def test_simulated_gke_exporter_has_series_only_for_gpus_in_use() -> None:
    idle = _render(NodeSpec(name="n1", gpus=2), [], "gke-device-plugin")
    assert metrics.missing_families(idle, "gke-device-plugin") != []
    busy = _render(NodeSpec(name="n1", gpus=2), [LOAD], "gke-device-plugin")
    (found,) = metrics.attributed(busy, "gke-device-plugin", "ns", "gpu-load-n1")
    assert found.sample.value == 100 and found.sample.labels["container"] == "gpu-load"


# --- which monitors scrape the exporter ----------------------------------------------------------


SERVICE = {"metadata": {"name": "nvidia-dcgm-exporter", "namespace": "gpu-operator", "labels": {"app": "nvidia-dcgm-exporter"}},
           "spec": {"ports": [{"name": "gpu-metrics", "port": 9400, "targetPort": 9400}]}}
POD = {"metadata": {"name": "nvidia-dcgm-exporter-abcde", "namespace": "gpu-operator", "labels": {"app": "nvidia-dcgm-exporter"}},
       "spec": {"containers": [{"name": "exporter", "ports": [{"name": "metrics", "containerPort": 9400}]}]}}


def _sm(port: str, *, namespace: str = "gpu-operator", selector: dict | None = None, ns_selector: dict | None = None) -> dict:
    spec = {"selector": selector if selector is not None else {"matchLabels": {"app": "nvidia-dcgm-exporter"}},
            "endpoints": [{"port": port}]}
    if ns_selector is not None:
        spec["namespaceSelector"] = ns_selector
    return {"kind": "ServiceMonitor", "metadata": {"name": "dcgm", "namespace": namespace}, "spec": spec}


@pytest.mark.parametrize(("monitor", "selects", "near"), [
    (_sm("gpu-metrics"), True, False),
    (_sm("metrics"), False, True),
    (_sm("gpu-metrics", namespace="monitoring"), False, False),  # watches only its own namespace
    (_sm("gpu-metrics", namespace="monitoring", ns_selector={"matchNames": ["gpu-operator"]}), True, False),
    (_sm("gpu-metrics", namespace="monitoring", ns_selector={"any": True}), True, False),
    (_sm("gpu-metrics", selector={"matchLabels": {"app": "other"}}), False, False),
    (_sm("gpu-metrics", selector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["nvidia-dcgm-exporter"]}]}), True, False),
    ({"kind": "PodMonitor", "metadata": {"name": "p", "namespace": "gpu-operator"},
      "spec": {"selector": {"matchLabels": {"app": "nvidia-dcgm-exporter"}}, "podMetricsEndpoints": [{"port": "metrics"}]}}, True, False),
    ({"kind": "PodMonitor", "metadata": {"name": "p", "namespace": "gpu-operator"},
      "spec": {"selector": {"matchLabels": {"app": "nvidia-dcgm-exporter"}}, "podMetricsEndpoints": [{"port": "http"}]}}, False, True),
])
def test_monitor_selection(monitor: dict, selects: bool, near: bool) -> None:
    ok, misses = scrape.monitors_selecting(SERVICE, [POD], [monitor])
    assert bool(ok) is selects and bool(misses) is near


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    (None, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
])
def test_label_selectors(selector: dict | None, labels: dict, matches: bool) -> None:
    assert scrape.label_selector_matches(selector, labels) is matches


def test_mig_gpus_count_engine_activity_as_utilization() -> None:
    # dcgm-exporter serves no DCGM_FI_DEV_GPU_UTIL for GPUs in MIG mode.
    text = "\n".join(line for line in DCGM.splitlines() if "GPU_UTIL" not in line)
    s = metrics.parse_metrics(text)
    assert metrics.missing_families(s, "dcgm-exporter") == []
    assert metrics.served_required(s, "dcgm-exporter")[0] == "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    neither = metrics.parse_metrics("\n".join(line for line in text.splitlines() if "GR_ENGINE" not in line))
    assert metrics.missing_families(neither, "dcgm-exporter") == [
        "GPU utilization (DCGM_FI_DEV_GPU_UTIL or DCGM_FI_PROF_GR_ENGINE_ACTIVE)"]


class _PortCollision:
    """A pod whose port-forward binds the local port it is given, as kr8s does, and forwards to `target`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.tried: list[int] = []

    @contextlib.contextmanager
    def portforward(self, remote_port: int, local_port: int):
        self.tried.append(local_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", local_port))  # raises EADDRINUSE on a taken port
            yield self.target


def test_a_port_forward_whose_local_port_was_taken_retries_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken_port = taken.getsockname()[1]
    picks = iter([taken_port, scrape.free_local_port()])
    monkeypatch.setattr(scrape, "free_local_port", lambda: next(picks))
    pod = _PortCollision(server.server_address[1])
    try:
        resp = scrape._forwarded_get(pod, 9400, "/metrics", timeout=5)  # type: ignore[arg-type]
    finally:
        server.shutdown()
        taken.close()
    assert resp.status_code == 200 and resp.text == "ok"
    assert pod.tried[0] == taken_port and len(pod.tried) == 2 and pod.tried[1] != taken_port


def test_port_forwarded_reads_ignore_a_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GET goes to the forward's loopback port, never to a proxy that CI's environment names (one that
    cannot reach this machine's loopback); several reads one after another each get their answer."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{dead.getsockname()[1]}"  # nothing listens there
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pod = _PortCollision(server.server_address[1])
    try:
        answers = [scrape._forwarded_get(pod, 9400, "/metrics", timeout=5) for _ in range(3)]  # type: ignore[arg-type]
    finally:
        server.shutdown()
    assert [(r.status_code, r.text) for r in answers] == [(200, "ok")] * 3


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_free_ports_come_from_below_the_ephemeral_range_and_skip_bound_ones() -> None:
    """Outgoing loopback connections take source ports from the ephemeral range, so a port handed out
    there could be taken before its user binds it (a CI failure: the simulator's Jupyter port)."""
    try:
        low = int(scrape._EPHEMERAL_RANGE.read_text().split()[0])
    except OSError:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range: the kernel picks ports here")
    if low <= scrape._LISTEN_PORTS_FLOOR + 1000:
        pytest.skip(f"the ephemeral range starts at {low}: no room below it, the kernel picks ports here")
    picks = {scrape.free_local_port() for _ in range(20)}
    assert all(scrape._LISTEN_PORTS_FLOOR <= p < low for p in picks), picks
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", min(picks)))
        assert not scrape._bindable(min(picks))


class _PodsApi:
    """Stands for kr8s.Api in Exporters (the tests hand its pods, which they change, to reconcile)."""

    def __init__(self) -> None:
        self.pods: list[dict] = []


@pytest.fixture
def pods_api() -> _PodsApi:
    """The pods the simulator's helper would follow (handed to each reconcile pass)."""
    return _PodsApi()


def test_a_scrape_sees_the_pods_running_when_it_arrives_not_a_stale_list(pods_api: _PodsApi) -> None:
    """A CI failure under load: the load pod ran, but the simulated exporter's pod list lagged behind
    every scrape. A scrape now waits for a reconcile pass that began after it arrived."""
    import threading

    api = pods_api
    exporters = exporter.Exporters(api, [exporter.NodeExporter("n1", NodeSpec(name="n1", gpus=2), "dcgm-exporter",  # type: ignore[arg-type]
                                                                "dcgm-exporter", 9400)], jupyter_port=0)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            exporters.reconcile(list(api.pods))
            exporters.wake.wait(30)  # only a scrape wakes it: a stale list would be served otherwise
            exporters.wake.clear()

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        assert b'pod="gpu-load-n1"' not in exporters.render("n1")
        api.pods = [_gpu_pod("gpu-load-n1", "Running")]
        assert b'pod="gpu-load-n1"' in exporters.render("n1")
    finally:
        stop.set()
        exporters.wake.set()
        worker.join(5)



def _gpu_pod(name: str, phase: str, gpus: int = 1, created: str = "2026-11-23T00:00:00Z", ended: str | None = None) -> dict:
    status: dict = {"phase": phase}
    if ended is not None:
        status["containerStatuses"] = [{"name": "c", "state": {"terminated": {"finishedAt": ended}}}]
    return {"metadata": {"namespace": "ns", "name": name, "labels": {}, "creationTimestamp": created},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
            "status": status}


def test_a_finished_pod_keeps_its_attribution_briefly_on_gpus_no_running_pod_holds(pods_api: _PodsApi) -> None:
    """Like dcgm-exporter, whose pod attribution is refreshed once per collection interval."""
    import datetime as dt

    def ago(seconds: float) -> str:
        return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    api = pods_api
    exporters = exporter.Exporters(api, [exporter.NodeExporter("n1", NodeSpec(name="n1", gpus=2), "dcgm-exporter",  # type: ignore[arg-type]
                                                                "dcgm-exporter", 9400)], jupyter_port=0)
    api.pods = [_gpu_pod("just-ended", "Succeeded", gpus=2, created="2026-11-23T00:00:00Z", ended=ago(3)),
                _gpu_pod("long-gone", "Succeeded", created="2026-11-23T00:00:00Z", ended=ago(600)),
                _gpu_pod("running", "Running", created="2026-11-23T00:05:00Z")]
    exporters.reconcile(api.pods)
    held = exporter.assign(exporters.pods["n1"], 2)
    assert {i: p.name for i, p in held.items()} == {0: "running", 1: "just-ended"}


def test_the_pod_proxy_is_given_up_for_a_namespace_after_it_failed_for_three_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures import metrics as metric_fixtures

    monkeypatch.setattr(metric_fixtures, "_NO_PROXY", set())
    monkeypatch.setattr(metric_fixtures, "_PROXY_WORKS", set())
    pod = scrape.ExporterPod("n9", "gpu-operator", "dcgm-exporter-x", True)
    other = scrape.ExporterPod("n9", "elsewhere", "dcgm-exporter-y", True)
    assert metric_fixtures._try_proxy(pod)
    metric_fixtures._NO_PROXY.update({("gpu-operator", f"dcgm-exporter-{i}") for i in range(2)})
    assert metric_fixtures._try_proxy(pod)  # two failures: still tried
    metric_fixtures._NO_PROXY.add(("gpu-operator", "dcgm-exporter-2"))
    assert not metric_fixtures._try_proxy(pod)  # three: the namespace's other pods go straight to the port-forward
    assert metric_fixtures._try_proxy(other)  # another namespace is judged on its own
    metric_fixtures._PROXY_WORKS.add("gpu-operator")
    assert metric_fixtures._try_proxy(pod)  # it worked for one pod there: it may work for this one
    assert not metric_fixtures._try_proxy(scrape.ExporterPod("n0", "gpu-operator", "dcgm-exporter-0", True))  # failed for this pod

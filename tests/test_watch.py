"""gpu_conformance.watch against the simulated cluster: one list, then a watch that follows pods as
they change; streams cut or dropped are resumed, 410 Gone lists again, a refused watch falls back to
lists. Faults come from the fault proxy in front of the real API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kr8s
import pytest
from kr8s._async_utils import as_sync_func
from kr8s.objects import Pod

from gpu_conformance import runner, transport
from gpu_conformance.watch import Watch
from gpu_conformance.runner import PodState, pod_state
from gpu_conformance.sim.control_plane import SimCluster
from gpu_conformance.sim.faultproxy import Fault, FaultProxy
from gpu_conformance.waiting import wait_for
from gpu_conformance.workloads import MANAGED_BY, MANAGED_BY_LABEL

WATCHES = r"^GET /api/v1/namespaces/[^/]+/pods\?.*watch=true"


@pytest.fixture
def namespace(sim_api: kr8s.Api) -> Iterator[str]:
    name = runner.create_namespace(sim_api, "watch", "projtest")
    yield name
    runner.delete_namespace(sim_api, name)


def _pending_pod(api: kr8s.Api, namespace: str, name: str) -> Pod:
    """A pod no node can take: the scheduler marks it Unschedulable (a change the watch must see)."""
    pod = Pod({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
               "spec": {"nodeSelector": {"watch.test/none": "none"},
                        "containers": [{"name": "c", "image": "registry.invalid/none:1"}]}}, api=api)
    pod.create()
    return pod


def _all_refused(pw: Watch[PodState], names: set[str]) -> dict[tuple[str, str], PodState]:
    return wait_for(pw.states, lambda st: {n for (_, n) in st} == names and all(s.unschedulable for s in st.values()),
                    what="the pods seen refused by the scheduler", timeout=60,
                    describe=lambda st: repr({n: s.phase for (_, n), s in st.items()}))


def test_a_watch_follows_created_changed_and_deleted_pods_with_few_requests(sim_api: kr8s.Api, namespace: str) -> None:
    with Watch(sim_api, namespace, None, pod_state) as pw:
        pods = [_pending_pod(sim_api, namespace, f"p{i}") for i in range(5)]
        _all_refused(pw, {f"p{i}" for i in range(5)})
        assert pw.watching
        pods[0].delete(grace_period=0)
        wait_for(pw.states, lambda st: (namespace, "p0") not in st, what="the deleted pod gone", timeout=30)
        # One list and one watch; a watch the server ended after its timeout may have been opened again.
        assert pw.requests <= 3, pw.requests


@pytest.mark.parametrize(("fault", "expect"), [
    (Fault("cut", WATCHES, times=3, cut=True), "resumed"),
    (Fault("drop", WATCHES, times=3, drop=True), "resumed"),
    (Fault("410", WATCHES, times=1, status=410, reason="Expired"), "listed again"),
    (Fault("403", WATCHES, times=10**6, status=403, reason="Forbidden"), "lists"),
], ids=lambda v: v.name if isinstance(v, Fault) else v)
def test_a_watch_survives_faults(sim_api: kr8s.Api, sim_cluster: SimCluster, namespace: str, tmp_path: Path,
                                 fault: Fault, expect: str) -> None:
    state = sim_cluster.state()
    assert state is not None
    with FaultProxy(state.server, state.state_dir / "pki", [fault]) as proxy:
        api = kr8s.api(kubeconfig=str(proxy.write_kubeconfig(tmp_path / "proxy.kubeconfig")))
        with Watch(api, namespace, None, pod_state) as pw:
            wait_for(lambda: pw.requests >= 2, bool, what="the watch opened", timeout=30)
            names = {f"q{i}" for i in range(3)}
            for name in sorted(names):
                _pending_pod(sim_api, namespace, name)
            _all_refused(pw, names)
            assert proxy.injected[fault.name] >= 1
            if expect == "lists":
                assert not pw.watching and "not allowed (HTTP 403)" in pw.last_problem
            else:
                wait_for(lambda: pw.watching, bool, what="the watch live again", timeout=30)
            if expect == "listed again":
                assert pw.relists >= 1
            if expect == "resumed":
                assert pw.requests >= 2 + proxy.injected[fault.name]


def test_a_listing_reads_every_page_as_plain_objects(sim_api: kr8s.Api, namespace: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """transport.list_raw and the watch's first list share one paged reader: pages of 2 here."""
    monkeypatch.setattr(transport, "LIST_PAGE", 2)
    for i in range(5):
        _pending_pod(sim_api, namespace, f"p{i}")
    listing = as_sync_func(transport.list_pages)(sim_api, "pods", namespace)
    assert sorted(p["metadata"]["name"] for p in listing.items) == [f"p{i}" for i in range(5)]
    assert listing.pages == 3 and listing.resource_version
    assert {(p["kind"], p["apiVersion"]) for p in listing.items} == {("Pod", "v1")}
    assert [p["metadata"]["name"] for p in transport.list_raw(sim_api, "pods", namespace, field_selector="metadata.name=p3")] == ["p3"]
    # Converted page by page (a large listing never holds every whole object at once).
    pages_read: list[int] = []
    real = sim_api.call_api

    def counting(*args: object, **kwargs: object) -> object:
        pages_read.append(len(converted))
        return real(*args, **kwargs)

    converted: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(sim_api, "call_api", counting)
        names = transport.list_raw(sim_api, "pods", namespace,
                                   convert=lambda p: converted.append(p["kind"]) or p["metadata"]["name"])
    assert sorted(names) == [f"p{i}" for i in range(5)] and converted == ["Pod"] * 5
    assert pages_read == [0, 2, 4]  # each page converted before the next was asked for
    with Watch(sim_api, namespace, None, pod_state) as pw:
        assert set(_all_refused(pw, {f"p{i}" for i in range(5)})) == {(namespace, f"p{i}") for i in range(5)}
        assert pw.requests >= 3  # the first list took its three pages

"""Metrics: every GPU node's telemetry reaches monitoring, covers every GPU, and names the pod that
uses a GPU (CNCF AI Conformance accelerator_metrics)."""

from collections.abc import Callable

import allure
import pytest

from fixtures.metrics import LoadRun, MonitorView, NodeScrape
from fixtures.workloads import physical_gpus
from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.metrics import (
    TENSOR_ACTIVE,
    Scrape,
    gpus_per_family,
    load_lines,
    missing_families,
    rose_under_load,
    served_required,
)
from gpu_conformance.plugin import Session
from gpu_conformance.scrape import Exporter


@pytest.mark.requirement("GPU-MET-001")
def test_exporter_serves_the_node(gpu_node: NodeFacts, exporter: Exporter, node_scrape: NodeScrape,
                                  requirement: Requirement, evidence: Callable[[str], None]) -> None:
    with allure.step("An exporter pod runs on the node and is Ready"):
        pod = exporter.pods.get(gpu_node.name)
        assert pod is not None, requirement.violation(
            gpu_node.name, f"an exporter pod on the node ({exporter.found_by})", "none runs there")
        assert pod.ready, requirement.violation(gpu_node.name, f"exporter pod {pod.namespace}/{pod.name} Ready", "not Ready")

    with allure.step("Its metrics endpoint answers through the Kubernetes API in the Prometheus text format"):
        evidence(f"{exporter.found_by}; pod {pod.namespace}/{pod.name}, port {exporter.port}{exporter.path}, "
                 f"read via {node_scrape.transport or '(nothing)'}")
        assert node_scrape.scrape is not None, requirement.violation(
            gpu_node.name, f"{exporter.path} on port {exporter.port} readable in the Prometheus text format", node_scrape.problem)


@pytest.mark.requirement("GPU-MET-002")
def test_exporter_serves_required_metrics_per_gpu(gpu_node: NodeFacts, exporter: Exporter, metrics_of_node: Scrape,
                                                  gc_session: Session, requirement: Requirement,
                                                  evidence: Callable[[str], None]) -> None:
    if exporter.kind == "gke-device-plugin":
        pytest.skip("GKE's device-plugin metrics are per container: idle GPUs have no series (GPU-MET-003 checks them under load)")

    with allure.step("Every required family is served"):
        extra = gc_session.profile.metrics.families
        missing = missing_families(metrics_of_node, exporter.kind, extra)
        assert not missing, requirement.violation(
            gpu_node.name, "every required metric family", f"missing {', '.join(missing)}; served: {sorted(metrics_of_node.names)[:40]}")

    with allure.step("Each with one series per physical GPU of the node"):
        expected = physical_gpus(gpu_node, gc_session.profile)
        counts = gpus_per_family(metrics_of_node, exporter.kind, served_required(metrics_of_node, exporter.kind, extra))
        evidence(f"{len(counts)} families, GPUs per family: {counts}; the node has {expected} GPU(s)")
        wrong = {name: n for name, n in counts.items() if n != expected}
        assert not wrong, requirement.violation(
            gpu_node.name, f"one series per GPU ({expected}) in every required family", f"GPUs per family: {wrong}")


@pytest.mark.requirement("GPU-MET-003")
def test_load_is_attributed_to_its_pod(gpu_node: NodeFacts, exporter: Exporter, load_run: LoadRun, idle_scrape: Scrape | None,
                                       requirement: Requirement, evidence: Callable[[str], None]) -> None:
    assert load_run.outcome is not None
    pod = f"{load_run.outcome.namespace}/{load_run.outcome.pod}"

    with allure.step("While the load pod ran, the exporter served a series labelled with it"):
        seen = load_lines(load_run.last, exporter.kind) if load_run.last is not None else []
        assert load_run.attribution, requirement.violation(
            gpu_node.name, f"a series labelled with pod {pod}",
            f"none in {load_run.scrapes} scrape(s) while it ran ({load_run.outcome.describe()}); the GPUs' series: "
            + (" | ".join(seen[:8]) or "; ".join(load_run.problems[-2:]) or "(none)"))

    with allure.step("Its value rose above the GPU's idle value"):
        verdict = rose_under_load(idle_scrape, exporter.kind, load_run.attribution)
        evidence(f"pod {pod}: " + "; ".join(verdict.lines) + " | " + " | ".join(a.sample.line() for a in load_run.attribution))
        assert verdict.rose, requirement.violation(
            gpu_node.name, "utilization or engine/tensor activity above idle under load", "; ".join(verdict.lines))


@pytest.mark.privileged
@pytest.mark.requirement("GPU-MET-005")
def test_tensor_activity_is_attributed(gpu_node: NodeFacts, exporter: Exporter, tensor_load_run: LoadRun,
                                       idle_scrape: Scrape | None, requirement: Requirement,
                                       evidence: Callable[[str], None]) -> None:
    assert tensor_load_run.outcome is not None
    pod = f"{tensor_load_run.outcome.namespace}/{tensor_load_run.outcome.pod}"

    with allure.step("While dcgmproftester ran, the exporter served the tensor-pipe series labelled with it"):
        assert tensor_load_run.attribution, requirement.violation(
            gpu_node.name, f"{TENSOR_ACTIVE} labelled with pod {pod}",
            f"none in {tensor_load_run.scrapes} scrape(s) while it ran ({tensor_load_run.outcome.describe()}); the GPUs' series: "
            + (" | ".join(load_lines(tensor_load_run.last, exporter.kind)[:8]) if tensor_load_run.last else "(none)"))

    with allure.step("Its value rose above the GPU's idle value"):
        verdict = rose_under_load(idle_scrape, exporter.kind, tensor_load_run.attribution)
        evidence(f"pod {pod}: " + "; ".join(verdict.lines))
        assert verdict.rose, requirement.violation(gpu_node.name, "tensor-pipe activity above idle", "; ".join(verdict.lines))


@pytest.mark.requirement("GPU-MET-004")
def test_prometheus_scrapes_the_exporter(gpu_nodes: tuple[NodeFacts, ...], exporter: Exporter, prometheus: MonitorView,
                                         requirement: Requirement,
                                         evidence: Callable[[str], None]) -> None:
    with allure.step("A ServiceMonitor (or PodMonitor) selects the exporter and names a port it has"):
        target = f"Service {'/'.join(exporter.service)}" if exporter.service else exporter.found_by
        evidence(f"{prometheus.looked_at} monitor(s); selecting {target}: {prometheus.selecting or 'none'}")
        assert prometheus.selecting, requirement.violation(
            None, f"a ServiceMonitor or PodMonitor selecting {target} on one of its ports",
            "; ".join(prometheus.near_misses) or f"none of the {prometheus.looked_at} monitor(s) selects it")

"""Notebook: an interactive GPU workload (Jupyter with TensorFlow) starts on a GPU node, is reachable
through its NodePort Service, and its framework sees the GPU. The Jupyter token never reaches a report."""

from collections.abc import Callable

import allure
import pytest

from fixtures.notebook import NotebookRun
from gpu_conformance.catalogue import Requirement
from gpu_conformance.cluster import NodeFacts
from gpu_conformance.notebook import HttpAnswer, gpus_seen


@pytest.mark.requirement("GPU-NB-001")
def test_notebook_becomes_ready(gpu_nodes: tuple[NodeFacts, ...], notebook_observed: NotebookRun, requirement: Requirement,
                                evidence: Callable[[str], None]) -> None:
    with allure.step("The notebook pod (one GPU, readiness probe on /api) became Ready on its GPU node"):
        nb = notebook_observed
        evidence(nb.describe())
        assert nb.ready, requirement.violation(
            nb.node, "the notebook pod Ready", f"{nb.describe()}; events: {' | '.join(nb.events[-5:]) or '(none)'}")


@pytest.mark.requirement("GPU-NB-002")
def test_notebook_reachable_through_its_service(gpu_nodes: tuple[NodeFacts, ...], ready_notebook: NotebookRun,
                                               notebook_http: HttpAnswer, requirement: Requirement,
                                               evidence: Callable[[str], None]) -> None:
    nb = ready_notebook
    with allure.step("The NodePort Service lists the Ready pod as an endpoint"):
        listed = [f"{e.pod} ready={e.ready}" for e in nb.endpoints]
        assert any(e.ready and e.pod == nb.pod for e in nb.endpoints), requirement.violation(
            nb.node, f"Service {nb.namespace}/{nb.service} listing pod {nb.pod} as a ready endpoint",
            f"endpoints: {listed or 'none'}")

    with allure.step("Jupyter answers on /api through the Kubernetes API"):
        http = notebook_http
        evidence(f"GET /api via {http.transport}: HTTP {http.status} {http.body[:120]}")
        assert http.status == 200 and '"version"' in http.body, requirement.violation(
            nb.node, "HTTP 200 with the Jupyter version from /api",
            f"HTTP {http.status} {http.body[:200]!r}; {'; '.join(http.problems) or 'no transport problem'}")


@pytest.mark.requirement("GPU-NB-003")
def test_notebook_framework_sees_a_gpu(gpu_nodes: tuple[NodeFacts, ...], started_notebook: NotebookRun,
                                       requirement: Requirement, evidence: Callable[[str], None]) -> None:
    with allure.step("The notebook's start-up line says how many GPUs TensorFlow sees"):
        nb = started_notebook
        seen = gpus_seen(nb.log)
        assert seen is not None, requirement.violation(
            nb.node, "the start-up line 'gpu-conformance: tensorflow sees N GPU(s)'",
            f"no such line; {nb.describe()}; log tail: {nb.log[-300:]!r}")
        framework, count = seen
        evidence(f"{framework} sees {count} GPU(s) in {nb.describe()}")
        assert count >= 1, requirement.violation(nb.node, f"{framework} to see at least 1 GPU", f"{count}; log tail: {nb.log[-300:]!r}")

"""The notebook workload: a Jupyter server on one GPU behind a NodePort Service, reached through the
Kubernetes API. Its token lives in a Secret and is redacted from everything the suite keeps."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kr8s

from gpu_conformance import redaction, scrape
from gpu_conformance.runner import TRANSIENT, create_object
from gpu_conformance.waiting import WaitTimeout, wait_for
from gpu_conformance.workloads import MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL

TOKEN_KEY = "token"
GPU_LINE = re.compile(r"gpu-conformance: (?P<framework>\w+) sees (?P<count>\d+) GPU\(s\)")


class SecretText(str):
    """A secret value whose repr never shows it (tracebacks with --showlocals, assertion introspection)."""

    def __repr__(self) -> str:
        return repr(redaction.REDACTED)


def new_token() -> SecretText:
    """A fresh Jupyter token, registered for redaction in this process."""
    token = SecretText(secrets.token_hex(24))
    redaction.register(token)
    return token


def token_secret(name: str, namespace: str, run_id: str, token: str) -> dict[str, Any]:
    """The Secret the notebook pod reads its Jupyter token from (so no manifest or report carries it)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY, RUN_LABEL: run_id}},
            "stringData": {TOKEN_KEY: token}}


def gpus_seen(log: str) -> tuple[str, int] | None:
    """(framework, GPU count) from the notebook's start-up line, or None when it never printed one."""
    found = GPU_LINE.search(log)
    return (found["framework"], int(found["count"])) if found else None


@dataclass(frozen=True)
class Endpoint:
    """One address of the Service's EndpointSlices."""

    pod: str | None
    ready: bool


def endpoints(api: kr8s.Api, namespace: str, service: str) -> list[Endpoint]:
    """Every endpoint the Service's EndpointSlices list."""
    slices = api.get("endpointslices.discovery.k8s.io", namespace=namespace,
                     label_selector=f"kubernetes.io/service-name={service}")
    return [Endpoint((e.get("targetRef") or {}).get("name"), bool((e.get("conditions") or {}).get("ready")))
            for s in slices for e in s.raw.get("endpoints", []) or []]


@dataclass(frozen=True)
class HttpAnswer:
    """What the Jupyter server answered (or why nothing did)."""

    status: int | None
    body: str
    transport: str | None
    problems: tuple[str, ...]
    forbidden: bool = False  # RBAC refused the suite both the Service proxy and a port-forward


def ask(api: kr8s.Api, namespace: str, service: str, port_name: str, pod: str, pod_port: int, path: str) -> HttpAnswer:
    """GET `path` through the Service proxy, else (any other answer than 200) a port-forward to the pod."""
    problems = []
    proxy_refused = False
    try:
        status, text = scrape.proxy_get(api, namespace, f"services/{service}:{port_name}/proxy{path}")
        if status == 200:
            return HttpAnswer(status, text, "service proxy", ())
        proxy_refused = status in (401, 403)
        problems.append(f"service proxy: HTTP {status} {scrape.short(text)}")
    except TRANSIENT as exc:
        problems.append(f"service proxy: {type(exc).__name__}: {exc}")
    try:
        fetched = scrape.fetch(api, scrape.ExporterPod("", namespace, pod, True), pod_port, path, proxy=False)
        return HttpAnswer(200, fetched.text, fetched.transport, tuple(problems))
    except scrape.ScrapeError as exc:
        problems.append(str(exc))
        forbidden = proxy_refused and isinstance(exc, scrape.ScrapeForbidden)
    return HttpAnswer(None, "", None, tuple(problems), forbidden)


def wait_ready(api: kr8s.Api, namespace: str, pod: str, timeout: float) -> tuple[bool, Mapping[str, Any]]:
    """Wait until the pod is Ready; (ready, last pod object seen)."""

    def look() -> Mapping[str, Any]:
        return next(iter(api.get("pods", pod, namespace=namespace))).raw

    def ready(raw: Mapping[str, Any]) -> bool:
        return scrape.is_ready(raw)

    try:
        raw = wait_for(look, ready, what=f"notebook pod {namespace}/{pod} to be Ready", timeout=timeout,
                       tolerate=(kr8s.NotFoundError, StopIteration, *TRANSIENT), max_interval=2.0,
                       describe=lambda raw: _describe(raw))
        return True, raw
    except WaitTimeout as exc:
        return False, exc.last or {}


def _describe(raw: Mapping[str, Any]) -> str:
    status = raw.get("status", {}) or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions", []) or []}
    return f"phase {status.get('phase')}, Ready={conds.get('Ready')}"


def create(api: kr8s.Api, manifests: Sequence[Mapping[str, Any]]) -> None:
    """Create the notebook's objects (Secret, Pod, Service)."""
    for manifest in manifests:
        create_object(api, manifest)

"""Render the workload manifests in `workloads/`: one function, pinned images, profile overrides."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gpu_conformance.errors import ConfigError

WORKLOAD_DIR = Path(__file__).resolve().parent.parent / "workloads"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gpu-conformance"
WORKLOAD_LABEL = "gpu-conformance.io/workload"
RUN_LABEL = "gpu-conformance.io/run-id"
# On pods that run for a set time (loads, holds): how long, as a Go duration ("66s").
RUNS_FOR_ANNOTATION = "gpu-conformance.io/runs-for"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists"}
_MAX_NAME = 253


def default_images() -> dict[str, str]:
    """The pinned default image of each workload."""
    return dict(_images(WORKLOAD_DIR / "images.yaml"))


@functools.cache
def _images(path: Path) -> dict[str, str]:
    data = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)  # noqa: S506 - libyaml's safe loader
    return {str(k): str(v) for k, v in data.items()}


@functools.cache
def _template(path: Path) -> string.Template:
    """A workload's manifest template (read once: a run renders thousands of pods from a handful of them)."""
    return string.Template(path.read_text())


def pod_name(workload: str, node: str, variant: str = "") -> str:
    """Per-node workload pods are named `<workload>[-<variant>]-<node>` (DNS-1123, at most 253 characters)."""
    base = f"{workload}-{variant}" if variant else workload
    name = re.sub(r"[^a-z0-9.-]", "-", f"{base}-{node}".lower())
    return name[:_MAX_NAME].rstrip("-.")


def pin_to_nodes(nodes: Sequence[str]) -> dict[str, Any]:
    """Node affinity on metadata.name: the scheduler still decides fit, taints and resources.

    A metadata.name field selector takes exactly one value, so each node is its own (ORed) term. No nodes
    is a term no node matches (a node label both present and absent): an empty list of terms is invalid.
    """
    terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [n]}]} for n in nodes] or [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": op} for op in ("Exists", "DoesNotExist")]}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def pinned_nodes(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """The nodes a pod spec may run on as pin_to_nodes (or nodeName) pins it; None where it is not pinned so."""
    if spec.get("nodeName"):
        return frozenset([str(spec["nodeName"])])
    terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    names = [e["values"][0] for t in terms for e in t.get("matchFields") or []
             if e.get("key") == "metadata.name" and e.get("operator") == "In" and len(e.get("values") or []) == 1]
    return frozenset(map(str, names)) if terms and len(names) == len(terms) else None


def render(
    workload: str,
    *,
    namespace: str,
    node: str | Sequence[str],
    run_id: str,
    images: Mapping[str, str] | None = None,
    gpus: int = 1,
    tolerations: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    variant: str = "",
) -> list[dict[str, Any]]:
    """Render workloads/<workload>.yaml for one node (or a pod that may land on any of several) into API objects."""
    path = WORKLOAD_DIR / f"{workload}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown workload {workload!r} (no {path})")
    image = {**default_images(), **(images or {})}.get(workload)
    if not image:
        raise ConfigError(f"no image configured for workload {workload!r}")
    labels = {MANAGED_BY_LABEL: MANAGED_BY, WORKLOAD_LABEL: workload, RUN_LABEL: run_id}
    values: dict[str, Any] = {
        "name": pod_name(workload, node if isinstance(node, str) else "any", variant),
        "namespace": namespace,
        "labels": labels,
        "affinity": pin_to_nodes([node] if isinstance(node, str) else node),
        "tolerations": tolerations if tolerations is not None else [GPU_TOLERATION],
        "image": image,
        "gpus": gpus,
        **(extra or {}),
    }
    # JSON is valid YAML: every value is substituted as a JSON scalar or flow collection.
    encoded = {k: v if isinstance(v, (int, float)) else json.dumps(v) for k, v in values.items()}
    try:
        rendered = _template(path).substitute(encoded)
    except KeyError as exc:
        raise ConfigError(f"workload {workload!r} needs a value for {exc.args[0]}") from None
    return [doc for doc in yaml.load_all(rendered, Loader=yaml.CSafeLoader) if doc]  # noqa: S506 - libyaml's safe loader


PROBE_CODE_CONFIGMAP = "nvml-probe-code"


def probe_code(namespace: str, run_id: str) -> dict[str, Any]:
    """The ConfigMap the nvml-probe workload mounts: gpu_conformance/probe.py and pynvml (nvidia-ml-py)."""
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        raise ConfigError("the nvml-probe workload needs the pynvml module (pip install nvidia-ml-py)")
    probe_py = Path(__file__).with_name("probe.py")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROBE_CODE_CONFIGMAP, "namespace": namespace,
                     "labels": {MANAGED_BY_LABEL: MANAGED_BY, WORKLOAD_LABEL: "nvml-probe", RUN_LABEL: run_id}},
        "data": {"init.py": "", "probe.py": probe_py.read_text(), "pynvml.py": Path(spec.origin).read_text()},
    }

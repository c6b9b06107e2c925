"""In-cluster mode: a kubeconfig from the pod's service account, and the report dir carried in the Job's log.

Inside a pod there is no kubeconfig, only the service-account token, the cluster CA and the namespace
under /var/run/secrets/kubernetes.io/serviceaccount (`$GPU_CONFORMANCE_SERVICEACCOUNT_DIR` overrides it)
and `KUBERNETES_SERVICE_HOST`/`_PORT`. `write_kubeconfig` turns them into a private kubeconfig so every
code path that takes a kubeconfig works unchanged. The Job's results leave the pod in its log: after the
run, the report dir as a base64 tar.gz between marker lines, which `decode` takes back.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import hashlib
import io
import ipaddress
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import kr8s
import yaml

from gpu_conformance.errors import ConfigError, ExitCode, GpuConformanceError

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICEACCOUNT_DIR_ENV = "GPU_CONFORMANCE_SERVICEACCOUNT_DIR"
BEGIN = "===== BEGIN gpu-conformance report archive"
END = "===== END gpu-conformance report archive ====="
# Base64 lines as wide as MIME's: far below any log line limit (containerd splits lines at 16 KiB).
LINE_WIDTH = 76
_BEGIN_FIELDS = re.compile(r"exit-code=(?P<code>\d+) bytes=(?P<size>\d+) sha256=(?P<sha>[0-9a-f]{64})")
# Labels a Job puts on its pods (the second is the pre-1.27 form).
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


class ArchiveError(GpuConformanceError):
    """The report archive is missing from the log, cut short or damaged: the results cannot be had."""

    exit_code = ExitCode.INFRASTRUCTURE


# -- the kubeconfig ---------------------------------------------------------------------------


def serviceaccount_dir() -> Path:
    """Where the pod's service-account files are: $GPU_CONFORMANCE_SERVICEACCOUNT_DIR, else the standard mount."""
    override = os.environ.get(SERVICEACCOUNT_DIR_ENV)
    return Path(override) if override else SERVICEACCOUNT_DIR


def _server() -> str:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("--in-cluster: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set (not running in a pod?)")
    try:
        ipaddress.IPv6Address(host)
        host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def write_kubeconfig(sa_dir: Path | None = None) -> Path:
    """Write a kubeconfig (mode 0600, in a private temp dir removed at exit) for the pod's service account.

    It names the token file (`tokenFile`, which client-go tools re-read when the kubelet rotates it) and,
    because kr8s 0.20 does not read `tokenFile`, also holds the token read now. Never printed.
    """
    sa = (sa_dir or serviceaccount_dir()).resolve()
    token_file, ca_file = sa / "token", sa / "ca.crt"
    server = _server()
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--in-cluster: cannot read the service-account token {token_file}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"--in-cluster: the service-account token {token_file} is empty")
    if not ca_file.is_file():
        raise ConfigError(f"--in-cluster: the cluster CA {ca_file} is missing")
    try:
        namespace = (sa / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
        "clusters": [{"name": "in-cluster", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "service-account", "user": {"tokenFile": str(token_file), "token": token}}],
        "contexts": [{"name": "in-cluster",
                      "context": {"cluster": "in-cluster", "user": "service-account", "namespace": namespace}}],
    }
    private = Path(tempfile.mkdtemp(prefix="gpu-conformance-incluster-"))  # mode 0700
    atexit.register(shutil.rmtree, private, True)
    path = private / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def run_kubeconfig(in_cluster: bool, kubeconfig: str | None) -> str | None:
    """The kubeconfig `gpu-conformance run` uses: with --in-cluster one written for the pod's service account,
    else `kubeconfig` unchanged."""
    if not in_cluster:
        return kubeconfig
    if kubeconfig:
        raise ConfigError("--in-cluster and --kubeconfig exclude each other")
    return str(write_kubeconfig())


# -- the report archive in the log ------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """The report dir as carried in a Job's log: the run's exit code and a tar.gz of the directory."""

    exit_code: int
    data: bytes


def pack(report_dir: Path) -> bytes:
    """The report dir as a tar.gz (members relative to it; an absent dir gives an empty archive)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if report_dir.is_dir():
            for path in sorted(report_dir.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(report_dir)), recursive=False)
    return buf.getvalue()


def encode(archive: Archive) -> list[str]:
    """The marker-framed lines that carry the archive: BEGIN (exit code, size, sha256), base64, END."""
    text = base64.b64encode(archive.data).decode("ascii")
    head = (f"{BEGIN}: exit-code={archive.exit_code} bytes={len(archive.data)} "
            f"sha256={hashlib.sha256(archive.data).hexdigest()} =====")
    return [head, *(text[i:i + LINE_WIDTH] for i in range(0, len(text), LINE_WIDTH)), END]


def write_archive(report_dir: Path, exit_code: int, out: TextIO) -> None:
    """Print the report dir and the run's exit code as an archive (the last lines of a Job's log)."""
    out.write("\n".join(encode(Archive(exit_code, pack(report_dir)))) + "\n")
    out.flush()


def decode(lines: Iterable[str]) -> Archive:
    """The last complete archive in the log lines; ArchiveError (exit 3) when it is missing, cut or damaged.

    Each line's last word counts, so prefixes such as `kubectl logs --timestamps` do no harm.
    """
    head: re.Match[str] | None = None
    body: list[str] = []
    found: Archive | None = None
    for line in lines:
        if BEGIN in line:
            head, body = _BEGIN_FIELDS.search(line), []
            if head is None:
                raise ArchiveError("report archive damaged: its BEGIN line lacks exit-code, bytes or sha256")
        elif END in line and head is not None:
            found = _check(head, body)
            head = None
        elif head is not None and line.split():
            body.append(line.split()[-1])
    if head is not None:
        raise ArchiveError(f"report archive truncated: BEGIN marker without END after {len(body)} line(s) "
                           "(the log was cut short, or the run is still writing it)")
    if found is None:
        raise ArchiveError("no report archive in the log (the run has not finished, or the log lost its end)")
    return found


def _check(head: re.Match[str], body: Sequence[str]) -> Archive:
    try:
        data = base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError("report archive damaged: its lines are not valid base64") from None
    if len(data) != int(head["size"]) or hashlib.sha256(data).hexdigest() != head["sha"]:
        raise ArchiveError(f"report archive damaged: {len(data)} of {head['size']} bytes, or a sha256 mismatch "
                           "(lines lost from the log)")
    return Archive(int(head["code"]), data)


def unpack(archive: Archive, out_dir: Path) -> list[Path]:
    """Extract the archive into `out_dir` (created); returns the files written. Refuses paths outside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.data), mode="r:gz") as tar:
            members = tar.getmembers()
            tar.extractall(out_dir, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"report archive damaged: {exc}") from None
    return [out_dir / m.name for m in members if m.isfile()]


# -- fetching it from the Job ---------------------------------------------------------------


def job_pod_log(api: kr8s.Api, namespace: str, job: str) -> tuple[str, str, list[str]]:
    """(pod name, phase, log lines) of the newest pod of a Job, read through the API."""
    pods: list[Any] = []  # kr8s Pods
    for label in JOB_NAME_LABELS:
        pods = list(api.get("pods", namespace=namespace, label_selector=f"{label}={job}"))
        if pods:
            break
    if not pods:
        raise ArchiveError(f"no pod of Job {namespace}/{job} (check the names: kubectl -n {namespace} get jobs)")
    pod = max(pods, key=lambda p: str(p.raw["metadata"].get("creationTimestamp", "")))
    phase = str((pod.raw.get("status") or {}).get("phase", "Unknown"))
    return str(pod.name), phase, list(pod.logs(timeout=300))


def summary_line(report_dir: Path) -> str:
    """A one-line account of the unpacked summary.json (or why there is none)."""
    import json

    path = report_dir / "summary.json"
    try:
        totals = json.loads(path.read_text())["totals"]
        return ", ".join(f"{totals.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped"))
    except (OSError, ValueError, KeyError, TypeError):
        return "no summary.json (the run did not complete)"

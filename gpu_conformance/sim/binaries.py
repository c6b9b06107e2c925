"""Locate, build and cache the control-plane binaries of the simulated cluster.

Resolution order per component: an environment variable naming the binary, the
binary on PATH, the per-version cache, and finally a build from the Go module
proxy (nothing is downloaded from release sites).
"""

from __future__ import annotations

import os
from functools import partial
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpu_conformance.progress import say
from gpu_conformance.errors import SimError

_say = partial(say, topic="sim")

KUBERNETES_VERSION = "1.36.3"
# Kubernetes 1.36.3 itself depends on etcd server v3.6.8, so both build in one module.
ETCD_VERSION = "3.6.8"
KWOK_VERSION = "0.8.0"

KUBE_COMPONENTS = ("kube-apiserver", "kube-scheduler", "kube-controller-manager")
COMPONENTS = (*KUBE_COMPONENTS, "etcd", "kwok")
# Built on demand only (the benchmark's kubectl baseline), never for the simulated cluster itself.
TOOLS = ("kubectl",)

_PROXY = os.environ.get("GOPROXY", "https://proxy.golang.org").split(",")[0]


@dataclass(frozen=True)
class Binaries:
    """Paths of every binary the simulated cluster runs."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def env_var(component: str) -> str:
    """The environment variable that overrides a component's binary, e.g. GPU_CONFORMANCE_KUBE_APISERVER."""
    return "GPU_CONFORMANCE_" + component.upper().replace("-", "_")


def cache_root() -> Path:
    """Per-user cache for built binaries (override with GPU_CONFORMANCE_CACHE)."""
    explicit = os.environ.get("GPU_CONFORMANCE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpu-conformance"


def bin_dir() -> Path:
    """Where binaries of the pinned versions are cached."""
    return cache_root() / f"bin-k8s-v{KUBERNETES_VERSION}-etcd-v{ETCD_VERSION}-kwok-v{KWOK_VERSION}"


def _find_existing(component: str) -> Path | None:
    explicit = os.environ.get(env_var(component))
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SimError(f"{env_var(component)}={explicit} is not an executable file")
        return path
    on_path = shutil.which(component)
    if on_path:
        return Path(on_path)
    cached = bin_dir() / component
    return cached if cached.is_file() else None


def missing() -> list[str]:
    """Components that would have to be built."""
    return [c for c in COMPONENTS if _find_existing(c) is None]




def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    started = time.monotonic()
    _say(f"{what} ...")
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise SimError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    _say(f"{what}: done in {time.monotonic() - started:.0f}s")


def staging_modules(go_mod: str) -> list[str]:
    """The k8s.io staging modules a Kubernetes release requires at v0.0.0 (replaced locally upstream)."""
    mods = set()
    for line in go_mod.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("k8s.io/") and parts[1] == "v0.0.0":
            mods.add(parts[0])
    return sorted(mods)


def wrapper_go_mod(kube_go_mod: str, kube_version: str = KUBERNETES_VERSION) -> str:
    """A wrapper module that requires k8s.io/kubernetes and pins each staging module to its published version."""
    minor_patch = kube_version.split(".", 1)[1]
    header = [ln for ln in kube_go_mod.splitlines() if ln.startswith(("go ", "godebug "))]
    lines = ["module gpuconformance.local/simbuild", "", *header, "", f"require k8s.io/kubernetes v{kube_version}", "", "replace ("]
    lines += [f"\t{m} => {m} v0.{minor_patch}" for m in staging_modules(kube_go_mod)]
    lines.append(")")
    return "\n".join(lines) + "\n"


def _fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https proxy URL
            return resp.read().decode()
    except OSError as exc:
        raise SimError(f"cannot fetch {url}: {exc}") from exc


def build(components: list[str] | None = None, log: Callable[[str], None] = _say) -> Path:
    """Build the missing components into the cache; returns the cache directory."""
    go = shutil.which("go")
    if go is None:
        raise SimError("building the simulated cluster needs Go (https://go.dev/dl); `go` is not on PATH")
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    todo = components if components is not None else [c for c in COMPONENTS if not (out / c).is_file()]
    if not todo:
        return out
    work = cache_root() / f"build-k8s-v{KUBERNETES_VERSION}"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    started = time.monotonic()
    log(f"building {', '.join(todo)} (Kubernetes v{KUBERNETES_VERSION}, etcd v{ETCD_VERSION}, kwok v{KWOK_VERSION}); a cold build takes several minutes")
    need_module = any(c != "kwok" for c in todo)
    if need_module:
        go_mod = work / "go.mod"
        if not go_mod.is_file():
            kube_mod = _fetch(f"{_PROXY}/k8s.io/kubernetes/@v/v{KUBERNETES_VERSION}.mod")
            go_mod.write_text(wrapper_go_mod(kube_mod))
        _run([go, "get", f"k8s.io/kubernetes@v{KUBERNETES_VERSION}", f"go.etcd.io/etcd/server/v3@v{ETCD_VERSION}"], work, env, "resolving modules")
    minor = KUBERNETES_VERSION.split(".")[1]
    version_flags = " ".join(
        [
            f"-X k8s.io/component-base/version.gitVersion=v{KUBERNETES_VERSION}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            f"-X k8s.io/client-go/pkg/version.gitVersion=v{KUBERNETES_VERSION}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    for comp in todo:
        tmp = out / f".{comp}.partial"
        if comp in (*KUBE_COMPONENTS, *TOOLS):
            cmd = [go, "build", "-trimpath", "-ldflags", f"-s -w {version_flags}", "-o", str(tmp), f"k8s.io/kubernetes/cmd/{comp}"]
            _run(cmd, work, env, f"building {comp}")
        elif comp == "etcd":
            _run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "go.etcd.io/etcd/server/v3"], work, env, "building etcd")
        elif comp == "kwok":
            gobin = out / ".kwok-install"
            gobin.mkdir(exist_ok=True)
            _run([go, "install", f"sigs.k8s.io/kwok/cmd/kwok@v{KWOK_VERSION}"], work, {**env, "GOBIN": str(gobin), "GOFLAGS": ""}, "building kwok")
            (gobin / "kwok").rename(tmp)
        else:
            raise SimError(f"unknown component {comp}")
        tmp.rename(out / comp)
    log(f"built {len(todo)} binaries in {time.monotonic() - started:.0f}s into {out}")
    return out


def ensure_tool(name: str) -> Path:
    """A tool binary of the pinned Kubernetes version (kubectl): found, cached, or built once."""
    if name not in TOOLS:
        raise SimError(f"unknown tool {name}")
    explicit = os.environ.get(env_var(name))
    if explicit:
        return Path(explicit)
    cached = bin_dir() / name
    if not cached.is_file():
        build([name])
    return cached


def ensure(allow_build: bool = True) -> Binaries:
    """Resolve every binary, building the missing ones when allowed."""
    absent = missing()
    if absent:
        if not allow_build:
            raise SimError(f"binaries missing: {', '.join(absent)}; run `gpu-conformance sim build`")
        build([c for c in absent])
    paths = {}
    for comp in COMPONENTS:
        found = _find_existing(comp)
        if found is None:
            raise SimError(f"{comp} could not be found or built")
        paths[comp] = found
    return Binaries(paths)

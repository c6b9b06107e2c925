"""CUDA toolkit / NVIDIA driver compatibility, decided from the data in `cuda_compat.yaml`.

`check("535.104.05", "12.4")` says whether a driver runs a toolkit: natively (driver >= the toolkit's
minimum), under CUDA minor-version compatibility (below it, but at or above its major family's floor),
or not at all. Versions compare numerically per component (450.66 < 450.80.02).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field

from gpu_conformance.errors import ConfigError
from gpu_conformance.yamlload import load_model

COMPAT_PATH = Path(__file__).parent / "cuda_compat.yaml"
Mode = Literal["native", "minor-version", "incompatible"]
_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?")
_BRANCH_OR_VERSION = r"^[0-9]+(?:\.[0-9]+){0,2}$"


class CompatError(ValueError):
    """A driver or CUDA version that is malformed or not in the compatibility table."""


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str
    url: str = Field(pattern=r"^https://")
    checked: str


class _Release(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    toolkit: str = Field(pattern=r"^[0-9]+\.[0-9]+(?:\.[0-9]+)?$")
    label: str
    linux_driver: str = Field(pattern=_BRANCH_OR_VERSION)
    branch_only: bool = False  # NVIDIA names only the driver branch (R610), not an exact minimum


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: _Source
    minor_version_floors: dict[int, str]
    releases: list[_Release] = Field(min_length=1)


@dataclass(frozen=True)
class Release:
    """One toolkit release and the minimum Linux x86_64 driver it needs."""

    toolkit: Version
    label: str
    minimum_driver: str
    branch_only: bool


@dataclass(frozen=True)
class CompatTable:
    """The compatibility data, with its source."""

    source_url: str
    releases: tuple[Release, ...]
    floors: tuple[tuple[int, str], ...]  # (major, minimum driver for minor-version compatibility)

    def release_for(self, cuda: Version) -> Release:
        """The newest release of the same major.minor not newer than `cuda`."""
        same = [r for r in self.releases if r.toolkit.release[:2] == cuda.release[:2] and r.toolkit <= cuda]
        if not same:
            first, last = self.releases[0].toolkit, self.releases[-1].toolkit
            raise CompatError(f"CUDA {cuda} is not a toolkit release in the compatibility table ({first} to {last}, "
                              f"from {self.source_url})")
        return max(same, key=lambda r: r.toolkit)

    def floor(self, major: int) -> str | None:
        """The family's minor-version-compatibility floor, or None (before CUDA 11)."""
        return dict(self.floors).get(major)


@dataclass(frozen=True)
class CompatResult:
    """Whether `driver` runs CUDA `cuda`, and how."""

    driver: str
    cuda: str
    compatible: bool
    mode: Mode
    minimum_driver: str  # the toolkit's minimum for native support


@cache
def load(path: Path = COMPAT_PATH) -> CompatTable:
    """Load and validate the compatibility table (ConfigError names the bad key and line)."""
    data = load_model(path, _Table, "CUDA compatibility table")
    releases = tuple(Release(Version(r.toolkit), r.label, r.linux_driver, r.branch_only) for r in data.releases)
    versions = [r.toolkit for r in releases]
    if versions != sorted(versions) or len(set(versions)) != len(versions):
        raise ConfigError(f"CUDA compatibility table {path}: releases must be listed once each, oldest first")
    for major, floor in data.minor_version_floors.items():
        if not re.fullmatch(_BRANCH_OR_VERSION, floor):
            raise ConfigError(f"CUDA compatibility table {path}: minor_version_floors.{major}: {floor!r} is not a version")
    return CompatTable(data.source.url, releases, tuple(sorted(data.minor_version_floors.items())))


def parse_version(text: str, what: str) -> Version:
    """`535.104.05` -> Version; CompatError for anything but dot-separated numbers (major.minor[.patch])."""
    value = text.strip()
    if not _VERSION.fullmatch(value):
        example = "535.104.05" if what == "driver" else "12.4 or 12.4.1"
        raise CompatError(f"malformed {what} version {text!r}: expected numbers separated by dots, like {example}")
    return Version(value)


def check(driver: str, cuda: str, table: CompatTable | None = None) -> CompatResult:
    """Decide whether `driver` runs CUDA toolkit `cuda`: native, minor-version or incompatible."""
    driver_v = parse_version(driver, "driver")
    cuda_v = parse_version(cuda, "CUDA")
    table = table or load()
    release = table.release_for(cuda_v)
    minimum = release.minimum_driver
    if driver_v >= Version(minimum):
        mode: Mode = "native"
    else:
        floor = table.floor(cuda_v.major)
        mode = "minor-version" if floor is not None and driver_v >= Version(floor) else "incompatible"
    return CompatResult(driver.strip(), cuda.strip(), mode != "incompatible", mode, minimum)

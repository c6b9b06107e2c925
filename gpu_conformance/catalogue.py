"""The requirement catalogue: requirements as data, loaded into frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gpu_conformance.errors import ConfigError
from gpu_conformance.yamlload import load_model

CATALOGUE_PATH = Path(__file__).parent / "requirements.yaml"


class Requirement(BaseModel):
    """One requirement: stable id, statement, level and remediation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^GPU-[A-Z]+-\d{3}$")
    title: str
    area: str
    level: Literal["MUST", "SHOULD"]
    statement: str
    remediation: str
    ai_conformance: str | None = None

    def violation(self, node: str | None, expected: object, observed: object, detail: str = "") -> str:
        """The failure message: requirement id, node, expected, observed, remediation."""
        where = f" node {node}" if node else ""
        extra = f" {detail.strip()}" if detail else ""
        return f"{self.id}{where}: expected {expected}, observed {observed}.{extra} Remediation: {self.remediation}"


class _Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requirements: list[Requirement]


@dataclass(frozen=True)
class Catalogue:
    by_id: dict[str, Requirement]

    def __getitem__(self, req_id: str) -> Requirement:
        return self.by_id[req_id]

    def __contains__(self, req_id: object) -> bool:
        return req_id in self.by_id


@cache
def load(path: Path = CATALOGUE_PATH) -> Catalogue:
    """Load and validate the catalogue; ids must be unique."""
    reqs = load_model(path, _Catalogue, "requirement catalogue").requirements
    by_id: dict[str, Requirement] = {}
    for req in reqs:
        if req.id in by_id:
            raise ConfigError(f"requirement catalogue {path}: duplicate id {req.id}")
        by_id[req.id] = req
    return Catalogue(by_id)

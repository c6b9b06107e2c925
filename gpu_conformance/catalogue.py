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
# Run gates, smallest first: each includes the checks of the ones before it.
GATES = ("smoke", "standard", "full", "disruptive")


class Requirement(BaseModel):
    """One requirement: stable id, statement, level and remediation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^GPU-[A-Z]+-\d{3}$")
    title: str
    area: str
    level: Literal["MUST", "SHOULD"]
    gate: Literal["smoke", "standard", "full", "disruptive"] = "standard"
    statement: str
    remediation: str
    ai_conformance: str | None = None

    def violation(self, node: str | None, expected: object, observed: object, detail: str = "") -> str:
        """The failure message: requirement id, node, expected, observed, remediation.

        The parts are also kept (see `recent_violations`) so reports can show them as fields.
        """
        where = f" node {node}" if node else ""
        extra = f" {detail.strip()}" if detail else ""
        text = f"{self.id}{where}: expected {expected}, observed {observed}.{extra} Remediation: {self.remediation}"
        _recent.append(Violation(self.id, node, str(expected), str(observed), detail.strip(), self.remediation, text))
        del _recent[:-_KEEP]
        return text


@dataclass(frozen=True)
class Violation:
    """The parts of one failure message."""

    requirement: str
    node: str | None
    expected: str
    observed: str
    detail: str
    remediation: str
    text: str


_recent: list[Violation] = []
_KEEP = 32


def recent_violations() -> list[Violation]:
    """The failure messages built in this process since `forget_violations`, oldest first."""
    return list(_recent)


def forget_violations() -> None:
    _recent.clear()


def violation_in(message: str, requirement: str) -> Violation | None:
    """The latest recorded violation of `requirement` that `message` reports (as pytest shows it)."""
    for v in reversed(_recent):
        # pytest's assertion rewriting prefixes continuation lines with "~"; compare the first line.
        if v.requirement == requirement and v.text.split("\n", 1)[0] in message:
            return v
    return None


class _Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ai_conformance: dict[str, str]
    requirements: list[Requirement]


@dataclass(frozen=True)
class Catalogue:
    by_id: dict[str, Requirement]
    # CNCF AI Conformance requirement id -> what it asks.
    ai_conformance: dict[str, str]

    def __getitem__(self, req_id: str) -> Requirement:
        return self.by_id[req_id]

    def __contains__(self, req_id: object) -> bool:
        return req_id in self.by_id


@cache
def load(path: Path = CATALOGUE_PATH) -> Catalogue:
    """Load and validate the catalogue; ids must be unique."""
    doc = load_model(path, _Catalogue, "requirement catalogue")
    by_id: dict[str, Requirement] = {}
    for req in doc.requirements:
        if req.id in by_id:
            raise ConfigError(f"requirement catalogue {path}: duplicate id {req.id}")
        if req.ai_conformance is not None and req.ai_conformance not in doc.ai_conformance:
            raise ConfigError(f"requirement catalogue {path}: {req.id} maps to unknown AI Conformance id {req.ai_conformance!r}")
        by_id[req.id] = req
    return Catalogue(by_id, doc.ai_conformance)

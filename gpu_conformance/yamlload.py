"""YAML loading with line numbers, and pydantic errors rendered as one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gpu_conformance.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return _LinedDict(mapping, lines)


class _LinedDict(dict):  # type: ignore[type-arg]
    """A dict that knows the source line of each key."""

    def __init__(self, data: dict[str, Any], lines: dict[str, int]) -> None:
        super().__init__(data)
        self.lines = lines


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, _LinedDict) and isinstance(part, str):
            line = node.lines.get(part, line)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def read_yaml(path: Path, what: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """Parse a YAML file; ConfigError names the file and line, never the file's contents."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - always a SafeLoader (sub)class
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} {path}{where}: not valid YAML") from None


def load_model(path: Path, model: type[M], what: str) -> M:
    """Load a YAML file into a pydantic model; raise ConfigError naming the bad key and line."""
    data = read_yaml(path, what, _LineLoader)
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(data, loc)
        where = f" line {line}" if line else ""
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{what} {path}{where}: {key}: {err['msg']}{more}") from None

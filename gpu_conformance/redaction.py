"""Secrets never reach a report or log: bearer tokens, private keys, Jupyter tokens, kubeconfig credentials.

Two layers: values this process knows are secret (registered when read: the kubeconfig's credentials,
the notebook's token) are replaced wherever they appear, and text shaped like a secret is masked
whatever its value.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

REDACTED = "<redacted>"

_PATTERNS = (
    # PEM blocks: private keys (and any certificate pasted with them).
    re.compile(r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY|CERTIFICATE)-----.*?-----END [A-Z0-9 ]*(?:PRIVATE KEY|CERTIFICATE)-----",
               re.DOTALL),
    # JSON Web Tokens (service-account tokens and most OIDC tokens).
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
)
# key=value / key: value pairs whose value is a credential (Jupyter's `?token=`, kubeconfig fields, headers).
_KEYED = re.compile(
    r"(?P<key>\b(?:token|client-key-data|client-certificate-data|password|access-token|id-token|refresh-token)"
    r"\"?\s*[=:]\s*\"?|(?-i:\b(?:Bearer|Basic))\s+)(?P<value>[A-Za-z0-9_\-.~+/=]{6,})",
    re.IGNORECASE,
)
# Every pattern above matches only text containing one of these (lower-cased).
_TRIGGERS = ("-----begin", "eyj", "token", "client-key-data", "client-certificate-data", "password", "bearer", "basic")
_known: set[str] = set()
# Shorter values would mask ordinary words.
_MIN_KNOWN = 8


def register(*values: str | None) -> None:
    """Remember secret values of this process; `redact` replaces each wherever it appears."""
    for value in values:
        if value and len(value) >= _MIN_KNOWN:
            _known.add(str(value))
            # Kubeconfig data fields are base64: their decoded form is just as secret.
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            _known.update(line for line in decoded.splitlines() if len(line) >= 40 and "-----" not in line)


def register_kubeconfig(path: Path | str) -> None:
    """Register the credentials a kubeconfig holds (tokens, passwords, client keys and certificates)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return
    for user in (data or {}).get("users") or []:
        fields = (user or {}).get("user") or {}
        if isinstance(fields, Mapping):
            register(*(str(v) for k, v in fields.items()
                       if k in ("token", "password", "client-key-data", "client-certificate-data") and v))
            for key in ("client-key", "tokenFile"):  # credentials kept in files: their contents
                _register_file(Path(path).parent, fields.get(key))
            provider = fields.get("auth-provider") or {}
            register(*(str(v) for v in ((provider.get("config") or {}) if isinstance(provider, Mapping) else {}).values()
                       if isinstance(v, str) and len(v) >= 20))


def _register_file(base: Path, name: object) -> None:
    if not isinstance(name, str) or not name:
        return
    try:
        text = (base / name).read_text()[:65536]
    except (OSError, UnicodeDecodeError):
        return
    register(*(line.strip() for line in text.splitlines() if len(line.strip()) >= 40 and "-----" not in line))


def redact(text: str, known: Iterable[str] = ()) -> str:
    """`text` with every registered or given secret value and anything shaped like a credential masked."""
    for value in sorted({*_known, *(k for k in known if k)}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    lowered = text.lower()
    if not any(t in lowered for t in _TRIGGERS):
        return text  # nothing any pattern below could match (the common case, and much the cheaper test)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return _KEYED.sub(lambda m: m["key"] + REDACTED, text)


def redact_any(value: Any) -> Any:
    """`redact` applied to every string inside nested lists and mappings (attachments, JSON reports)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_any(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_any(v) for v in value]
    return value


def scrub_dir(root: Path) -> list[Path]:
    """Redact every text file under `root` in place (the last pass over a report dir: it also reaches what
    the report plugins wrote themselves, such as captured output and exception texts); the files changed.
    A file is decoded only where redaction could change it: a run at 1,000 nodes leaves 200,000 files."""
    known = [value.encode() for value in _known]
    triggers = [t.encode() for t in _TRIGGERS]
    changed = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            try:
                data = path.read_bytes()
            except OSError:
                continue  # gone, or not a file
            # ASCII lower-cases the same as bytes and as text; anything else takes the whole path.
            if data.isascii() and not any(k in data for k in known) and not any(t in data.lower() for t in triggers):
                continue
            try:
                text = data.decode()
            except UnicodeDecodeError:
                continue  # not text: nothing a reader could see as a secret
            clean = redact(text)
            if clean != text:
                path.write_bytes(clean.encode())
                changed.append(path)
    return sorted(changed)

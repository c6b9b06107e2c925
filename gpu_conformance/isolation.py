"""What an isolation probe pod saw: the GPUs `nvidia-smi -L` listed before the completion marker."""

from __future__ import annotations

import re
from dataclasses import dataclass

LISTED_MARKER = "gpu-conformance: listed"
_GPU_LINE = re.compile(r"^GPU \d+: .*\(UUID: (GPU-[0-9a-fA-F-]+)\)\s*$")


class ListingIncomplete(ValueError):
    """The probe's log lacks the completion marker: it did not get to list GPUs (an error, not a verdict)."""


@dataclass(frozen=True)
class Listing:
    """GPUs visible to one container."""

    uuids: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.uuids)


def parse_listing(log: str) -> Listing:
    """Parse an isolation probe's log (`nvidia-smi -L 2>&1 || true; echo marker`)."""
    lines = log.splitlines()
    if LISTED_MARKER not in (ln.strip() for ln in lines):
        tail = " | ".join(lines[-3:]) or "(empty log)"
        raise ListingIncomplete(f"the probe did not finish listing GPUs (no {LISTED_MARKER!r} line); log tail: {tail}")
    return Listing(tuple(m.group(1) for ln in lines if (m := _GPU_LINE.match(ln.strip()))))

"""What an isolation probe pod saw: the GPUs `nvidia-smi -L` listed before the completion marker."""

from __future__ import annotations

from dataclasses import dataclass

from gpu_conformance.nvsmi import NvidiaSmiParseError, parse_list

LISTED_MARKER = "gpu-conformance: listed"


class ListingIncomplete(ValueError):
    """The probe's log cannot be read as a listing: it did not finish, or printed GPU lines nvsmi cannot
    parse (an error, not a verdict)."""


@dataclass(frozen=True)
class Listing:
    """GPUs visible to one container."""

    uuids: tuple[str | None, ...]

    @property
    def count(self) -> int:
        return len(self.uuids)


def parse_listing(log: str) -> Listing:
    """Parse an isolation probe's log (`nvidia-smi -L 2>&1 || true; echo marker`).

    No `GPU <n>:` line before the marker means the container saw no GPU ("No devices were found",
    nvidia-smi not installed, no driver): that is a listing of zero.
    """
    lines = log.splitlines()
    stripped = [ln.strip() for ln in lines]
    if LISTED_MARKER not in stripped:
        tail = " | ".join(lines[-3:]) or "(empty log)"
        raise ListingIncomplete(f"the probe did not finish listing GPUs (no {LISTED_MARKER!r} line); log tail: {tail}")
    before = lines[: stripped.index(LISTED_MARKER)]
    if not any(ln.strip().startswith("GPU ") for ln in before):
        return Listing(())
    try:
        return Listing(tuple(g.uuid for g in parse_list("\n".join(before)).gpus))
    except NvidiaSmiParseError as exc:
        raise ListingIncomplete(f"the probe listed GPUs in a form nvidia-smi -L does not use: {exc}") from None

"""The NVML probe: `python -m gpu_conformance.probe` prints the node's driver and GPU facts as JSON.

It runs inside the `nvml-probe` workload pod, so its running half needs only the standard library
and pynvml (package nvidia-ml-py). Every NVML call that the GPU or driver does not support yields
null for its field; any other NVML error on a field is null too, with the error named in the GPU's
`errors`. Where NVML cannot be loaded it prints one line to stderr and exits 3.

`parse_probe(text)` reads that JSON back (from the pod's log) into frozen dataclasses.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from types import ModuleType
from typing import Any, TypeVar

SCHEMA = "gpu-conformance/nvml-probe/v1"
EXIT_NVML_UNAVAILABLE = 3
_MIB = 1024 * 1024

T = TypeVar("T")


class ProbeParseError(ValueError):
    """Probe output that is not complete, valid probe JSON; the message names the bad key."""


@dataclass(frozen=True)
class EnabledState:
    """A current/pending pair (ECC mode, MIG mode); None where not supported."""

    current: bool | None
    pending: bool | None


@dataclass(frozen=True)
class RetiredPages:
    """Page retirement (pre-Ampere GPUs): pending flag and retired page counts by cause."""

    pending: bool | None
    single_bit_ecc: int | None
    double_bit_ecc: int | None


@dataclass(frozen=True)
class RemappedRows:
    """Row remapping (Ampere and newer): remapped row counts, pending remap, remapping failure."""

    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


@dataclass(frozen=True)
class MigDeviceFacts:
    """One MIG device of a GPU in MIG mode."""

    index: int
    uuid: str | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as NVML sees it; None where not supported (see `errors` for other failures)."""

    index: int
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    persistence_mode: bool | None
    ecc_mode: EnabledState | None
    ecc_volatile_uncorrected: int | None
    retired_pages: RetiredPages | None
    remapped_rows: RemappedRows | None
    mig_mode: EnabledState | None
    mig_devices: tuple[MigDeviceFacts, ...]
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    errors: Mapping[str, str] = field(default_factory=dict)  # field -> NVML error other than "not supported"


@dataclass(frozen=True)
class ProbeFacts:
    """What the probe printed: driver, CUDA driver version and every GPU."""

    schema: str
    driver_version: str
    cuda_driver_version: str | None  # "13.0"
    cuda_driver_version_raw: int | None  # 13000
    nvml_version: str | None
    gpus: tuple[GpuFacts, ...]


# --- collecting (runs in the probe pod) ----------------------------------------------------------


class _Reader:
    """Calls NVML, turning "not supported" into None and recording other NVML errors per field."""

    # NOT_SUPPORTED: the GPU lacks the feature; FUNCTION_NOT_FOUND: the driver's NVML predates the call.
    _UNSUPPORTED = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        self.unsupported = {getattr(nvml, name, object()) for name in self._UNSUPPORTED}
        self.errors: dict[str, str] = {}

    def get(self, key: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except AttributeError:  # this pynvml has no such function
            return None
        except self.nvml.NVMLError as exc:
            if getattr(exc, "value", None) not in self.unsupported:
                self.errors[key] = str(exc)
            return None


def _text(value: str | bytes | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _state(pair: Sequence[int] | None, enabled: int) -> EnabledState | None:
    return None if pair is None else EnabledState(pair[0] == enabled, pair[1] == enabled)


def _gpu(nvml: ModuleType, index: int) -> GpuFacts:
    r = _Reader(nvml)
    handle = r.get("handle", lambda: nvml.nvmlDeviceGetHandleByIndex(index))
    if handle is None:  # listed all the same, every fact null, so the suite can name the GPU
        unknown: dict[str, Any] = {f.name: None for f in fields(GpuFacts)}
        return GpuFacts(**{**unknown, "index": index, "mig_devices": (), "errors": r.errors or {"handle": "no handle"}})
    enabled = nvml.NVML_FEATURE_ENABLED
    memory = r.get("memory", lambda: _memory(nvml, handle))
    pci = r.get("pci_bus_id", lambda: nvml.nvmlDeviceGetPciInfo(handle))
    persistence = r.get("persistence_mode", lambda: nvml.nvmlDeviceGetPersistenceMode(handle))
    mig_mode = _state(r.get("mig_mode", lambda: nvml.nvmlDeviceGetMigMode(handle)), nvml.NVML_DEVICE_MIG_ENABLE)
    power = r.get("power_draw_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    limit = r.get("power_limit_w", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return GpuFacts(
        index=index,
        name=_text(r.get("name", lambda: nvml.nvmlDeviceGetName(handle))),
        uuid=_text(r.get("uuid", lambda: nvml.nvmlDeviceGetUUID(handle))),
        pci_bus_id=_text(pci.busId) if pci is not None else None,
        memory_total_mib=memory[0] if memory else None,
        memory_used_mib=memory[1] if memory else None,
        persistence_mode=None if persistence is None else persistence == enabled,
        ecc_mode=_state(r.get("ecc_mode", lambda: nvml.nvmlDeviceGetEccMode(handle)), enabled),
        ecc_volatile_uncorrected=r.get("ecc_volatile_uncorrected", lambda: int(nvml.nvmlDeviceGetTotalEccErrors(
            handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC))),
        retired_pages=_retired_pages(nvml, handle, r),
        remapped_rows=_remapped_rows(nvml, handle, r),
        mig_mode=mig_mode,
        mig_devices=_mig_devices(nvml, handle, r) if mig_mode and mig_mode.current else (),
        temperature_c=r.get("temperature_c", lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
        power_draw_w=None if power is None else round(power / 1000, 3),
        power_limit_w=None if limit is None else round(limit / 1000, 3),
        errors=r.errors,
    )


def _memory(nvml: ModuleType, handle: object) -> tuple[int, int]:
    """(total, used) MiB; the v2 call counts reserved memory apart from used, as nvidia-smi does."""
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except (AttributeError, TypeError, nvml.NVMLError):
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return int(info.total) // _MIB, int(info.used) // _MIB


def _retired_pages(nvml: ModuleType, handle: object, r: _Reader) -> RetiredPages | None:
    pending = r.get("retired_pages", lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    sbe = r.get("retired_pages", lambda: len(nvml.nvmlDeviceGetRetiredPages(
        handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)))
    dbe = r.get("retired_pages", lambda: len(nvml.nvmlDeviceGetRetiredPages(
        handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)))
    if pending is None and sbe is None and dbe is None:
        return None
    return RetiredPages(None if pending is None else bool(pending), sbe, dbe)


def _remapped_rows(nvml: ModuleType, handle: object, r: _Reader) -> RemappedRows | None:
    rows = r.get("remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(handle))
    if rows is None:
        return None
    corr, unc, pending, failure = rows
    return RemappedRows(int(corr), int(unc), bool(pending), bool(failure))


def _mig_devices(nvml: ModuleType, handle: object, r: _Reader) -> tuple[MigDeviceFacts, ...]:
    count = r.get("mig_devices", lambda: nvml.nvmlDeviceGetMaxMigDeviceCount(handle)) or 0
    devices = []
    for i in range(count):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != getattr(nvml, "NVML_ERROR_NOT_FOUND", None):  # NOT_FOUND: an empty slot
                r.errors["mig_devices"] = str(exc)
            continue
        memory = r.get("mig_devices", lambda: _memory(nvml, mig))  # noqa: B023 - called at once
        uuid = _text(r.get("mig_devices", lambda: nvml.nvmlDeviceGetUUID(mig)))  # noqa: B023
        devices.append(MigDeviceFacts(i, uuid, memory[0] if memory else None))
    return tuple(devices)


def collect(nvml: ModuleType) -> ProbeFacts:
    """Read every fact from an initialised NVML (the pynvml module, or a stand-in with its names)."""
    top = _Reader(nvml)
    raw = top.get("cuda_driver_version", nvml.nvmlSystemGetCudaDriverVersion)
    count = nvml.nvmlDeviceGetCount()
    return ProbeFacts(
        schema=SCHEMA,
        driver_version=_text(nvml.nvmlSystemGetDriverVersion()) or "",
        cuda_driver_version=None if raw is None else f"{raw // 1000}.{raw % 1000 // 10}",
        cuda_driver_version_raw=raw,
        nvml_version=_text(top.get("nvml_version", nvml.nvmlSystemGetNVMLVersion)),
        gpus=tuple(_gpu(nvml, i) for i in range(count)),
    )


def to_json(facts: ProbeFacts) -> str:
    """The probe's output format (what `parse_probe` reads)."""
    return json.dumps(asdict(facts), indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the probe JSON; exit 3 with one line on stderr where NVML is not available."""
    try:
        import pynvml
    except ImportError as exc:
        return _unavailable(f"cannot import pynvml ({exc})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return _unavailable(str(exc))
    try:
        facts = collect(pynvml)
    except pynvml.NVMLError as exc:
        return _unavailable(f"NVML call failed: {exc}")
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    print(to_json(facts))
    return 0


def _unavailable(reason: str) -> int:
    print(f"gpu-conformance probe: NVML not available: {reason}", file=sys.stderr)
    return EXIT_NVML_UNAVAILABLE


# --- reading it back (runs in the suite) ---------------------------------------------------------


def parse_probe(text: str) -> ProbeFacts:
    """The probe's JSON (possibly after other log lines) -> ProbeFacts; ProbeParseError otherwise."""
    from pydantic import TypeAdapter, ValidationError  # the suite's dependency, not the probe pod's

    document = _json_document(text)
    try:
        facts = TypeAdapter(ProbeFacts).validate_json(document, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProbeParseError(f"probe JSON: {where}: {err['msg']}{more}") from None
    if facts.schema != SCHEMA:
        raise ProbeParseError(f"probe JSON: schema is {facts.schema!r}, expected {SCHEMA!r}")
    if not facts.gpus:
        raise ProbeParseError("probe JSON lists no GPUs: NVML sees no GPU in the probe pod")
    indices = [g.index for g in facts.gpus]
    if len(set(indices)) != len(indices):
        raise ProbeParseError(f"probe JSON lists a GPU index twice: {indices}")
    return facts


def _json_document(text: str) -> str:
    """The probe's JSON object: from the first line that opens an object to where that object closes."""
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("{"):
            break
        offset += len(line)
    else:
        raise ProbeParseError("no probe JSON object in the output" + (" (it is empty)" if not text.strip() else ""))
    rest = text[offset:].lstrip()
    try:
        _, end = json.JSONDecoder().raw_decode(rest)
    except json.JSONDecodeError as exc:
        raise ProbeParseError(f"probe output is not complete JSON (truncated?): {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise ProbeParseError("probe output nests too deeply to be probe JSON") from None
    return rest[:end]


if __name__ == "__main__":
    raise SystemExit(main())

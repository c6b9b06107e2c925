"""nvidia-smi output parsed into typed facts: the default table, `-L`, `-q -x` XML and `--query-gpu` CSV.

Every parser is a pure function from text to a frozen `NvidiaSmiFacts`. Anything it cannot read in
full (malformed, truncated, an error message instead of output, no GPUs) raises `NvidiaSmiParseError`
naming what was missing; no parser returns an empty GPU list.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Format = Literal["table", "list", "xml", "csv"]


class NvidiaSmiParseError(ValueError):
    """nvidia-smi output that could not be read in full; the message says what was missing."""


@dataclass(frozen=True)
class MigDevice:
    """One MIG device of a GPU, as `nvidia-smi -L` lists it."""

    index: int
    profile: str
    uuid: str


@dataclass(frozen=True)
class GpuInfo:
    """One GPU; a field is None where the format does not show it."""

    index: int
    name: str
    uuid: str | None = None
    memory_total_mib: int | None = None
    mig_mode: str | None = None  # "Enabled" / "Disabled"; None where not shown or N/A
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class NvidiaSmiFacts:
    """What one nvidia-smi output says about the driver and its GPUs (never zero GPUs)."""

    format: Format
    driver_version: str | None  # None only where the format does not show it (-L, CSV without the column)
    cuda_version: str | None  # the highest CUDA the driver supports; None where not shown
    gpus: tuple[GpuInfo, ...]


# --- shared pieces -------------------------------------------------------------------------------

_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GPU_UUID = re.compile(f"GPU-{_UUID}")
# R470+ MIG UUIDs are MIG-<uuid>; R450/R460 used MIG-GPU-<gpu uuid>/<gi>/<ci>.
_MIG_UUID = re.compile(rf"MIG-(?:{_UUID}|GPU-{_UUID}/\d+/\d+)")
_NOT_SHOWN = {"", "N/A", "[N/A]", "Not Supported", "[Not Supported]"}
_MIG_MODES = {"Enabled", "Disabled"}

# Messages nvidia-smi prints instead of output; the line holding one becomes the parse error's reason.
_FAILURES = (
    ("No devices were found", "nvidia-smi found no GPUs"),
    ("NVIDIA-SMI has failed", "nvidia-smi failed"),
    ("couldn't communicate with the NVIDIA driver", "nvidia-smi failed"),
    ("Failed to initialize NVML", "nvidia-smi failed"),
    ("Unable to determine the device handle", "nvidia-smi failed"),
)


def _failure(text: str) -> str | None:
    """The reason nvidia-smi gave for printing no output, if the text holds one of its error messages."""
    for line in text.splitlines():
        for needle, what in _FAILURES:
            if needle in line:
                return f"{what}: {line.strip()[:200]!r}"
        if "nvidia-smi" in line and ("not found" in line or "No such file or directory" in line):
            return f"nvidia-smi is not installed: {line.strip()[:200]!r}"
    return None


def _no_gpus(text: str, what: str) -> NvidiaSmiParseError:
    reason = _failure(text)
    return NvidiaSmiParseError(reason if reason else what)


def _optional(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value in _NOT_SHOWN else value


def _mig_mode(value: str | None, where: str) -> str | None:
    mode = _optional(value)
    if mode is not None and mode not in _MIG_MODES:
        raise NvidiaSmiParseError(f"unexpected MIG mode {mode!r} in {where}")
    return mode


def _mib(value: str | None, where: str) -> int | None:
    """`81559 MiB`, `81559` or N/A -> MiB."""
    text = _optional(value)
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)(?:\s*MiB)?", text)
    if not match:
        raise NvidiaSmiParseError(f"memory total {text!r} in {where} is not a number of MiB")
    return int(match.group(1))


def _version(value: str | None, what: str, where: str) -> str:
    text = (value or "").strip()
    if not text:
        raise NvidiaSmiParseError(f"no {what} in {where}")
    if not _VERSION.fullmatch(text):
        raise NvidiaSmiParseError(f"{what} {text!r} in {where} is not a version like 580.159.04")
    return text


def _unique_indices(gpus: Sequence[GpuInfo], where: str) -> tuple[GpuInfo, ...]:
    twice = sorted(i for i, n in Counter(g.index for g in gpus).items() if n > 1)
    if twice:
        raise NvidiaSmiParseError(f"GPU index {twice[0]} appears twice in {where}")
    return tuple(gpus)


# --- the default table ---------------------------------------------------------------------------

_TABLE_HEADER = re.compile(
    r"\|\s*NVIDIA-SMI\s+(?P<smi>\S+)\s+Driver Version:\s*(?P<driver>\S+)(?:\s+CUDA Version:\s*(?P<cuda>\S+))?\s*\|"
)
_GPU_ROW = re.compile(
    r"\|\s*(?P<index>\d+)\s+(?P<name>\S.*?)\s+(?:On|Off|N/A|WDDM|TCC|MCDM)\s*\|"
    r"\s*(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s+\S+\s*\|[^|]*\|"
)
_BLOCK_SEPARATOR = re.compile(r"[+|]-+(?:\+-+)+[+|]")
_ROW = re.compile(r"\|.*\|")
_BORDER = re.compile(r"\+-+\+")
_DOUBLE_RULE = re.compile(r"\|=+(?:\+=+)*\|")
_MEMORY = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")


def parse_table(text: str) -> NvidiaSmiFacts:
    """The default `nvidia-smi` table, in the 450-era (79 columns) or 580-era (91 columns) layout."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    head = next((i for i, ln in enumerate(lines) if "NVIDIA-SMI" in ln and ln.startswith("|")), None)
    if head is None:
        if any("Driver Version" in ln for ln in lines):
            raise NvidiaSmiParseError("no 'NVIDIA-SMI' header line in nvidia-smi table")
        raise _no_gpus(text, "not an nvidia-smi table: no 'NVIDIA-SMI ... Driver Version' header line")
    if "Driver Version" not in lines[head]:
        raise NvidiaSmiParseError("no 'Driver Version' in nvidia-smi table")
    header = _TABLE_HEADER.fullmatch(lines[head])
    if not header:
        raise NvidiaSmiParseError(f"malformed nvidia-smi table header line {lines[head].strip()!r}")
    driver = _version(header["driver"], "driver version", "the nvidia-smi table header")
    cuda_text = _optional(header["cuda"])
    cuda = _version(cuda_text, "CUDA version", "the nvidia-smi table header") if cuda_text else None

    columns = next((i for i in range(head + 1, len(lines)) if re.match(r"\|\s*GPU\s+Name\b", lines[i])), None)
    if columns is None:
        raise _no_gpus(text, "no GPU column header ('GPU  Name') in nvidia-smi table")
    rule = next((i for i in range(columns + 1, len(lines)) if _DOUBLE_RULE.fullmatch(lines[i])), None)
    if rule is None:
        raise NvidiaSmiParseError("no '|====|' rule under the GPU column header in nvidia-smi table (truncated?)")
    rows_per_gpu = rule - columns
    shows_mig = any("MIG M." in lines[i] for i in range(columns, rule))

    gpus: list[GpuInfo] = []
    i = rule + 1
    while i < len(lines) and lines[i].startswith("|"):
        block = lines[i : i + rows_per_gpu]
        end = i + rows_per_gpu
        if len(block) < rows_per_gpu or not all(_ROW.fullmatch(r) for r in block) or end >= len(lines) \
                or not _BLOCK_SEPARATOR.fullmatch(lines[end]):
            raise NvidiaSmiParseError(f"GPU block {len(gpus)} of the nvidia-smi table is incomplete (truncated?)")
        gpus.append(_table_gpu(block, shows_mig))
        i = end + 1
    if not gpus:
        raise _no_gpus(text, "nvidia-smi table has a GPU header but no GPU rows")
    _require_processes_closed(lines, i)
    return NvidiaSmiFacts("table", driver, cuda, _unique_indices(gpus, "the nvidia-smi table"))


def _table_gpu(block: list[str], shows_mig: bool) -> GpuInfo:
    row = _GPU_ROW.fullmatch(block[0])
    if not row:
        raise NvidiaSmiParseError(f"malformed GPU row in nvidia-smi table: {block[0].strip()!r}")
    index = int(row["index"])
    memory = _MEMORY.search(block[1]) if len(block) > 1 else None
    mig = None
    if shows_mig and len(block) > 2:
        mig = _mig_mode(block[2].strip("|").split("|")[-1], f"the nvidia-smi table row of GPU {index}")
    return GpuInfo(index, row["name"], None, int(memory.group(2)) if memory else None, mig)


def _require_processes_closed(lines: list[str], start: int) -> None:
    """The table ends with a closed 'Processes:' box; anything less was cut off."""
    procs = next((i for i in range(start, len(lines)) if re.match(r"\|\s*Processes:", lines[i])), None)
    if procs is None:
        raise NvidiaSmiParseError("nvidia-smi table is truncated: no 'Processes:' section after the GPUs")
    rule = next((i for i in range(procs + 1, len(lines)) if _DOUBLE_RULE.fullmatch(lines[i])), None)
    if rule is None or not any(_BORDER.fullmatch(ln) for ln in lines[rule + 1 :]):
        raise NvidiaSmiParseError("nvidia-smi table is truncated: the 'Processes:' section is not closed")


# --- nvidia-smi -L -------------------------------------------------------------------------------

_LIST_GPU = re.compile(r"GPU (?P<index>\d+): (?P<name>\S.*?) \(UUID: (?P<uuid>\S+)\)")
_LIST_MIG = re.compile(r"\s+MIG (?P<profile>\S+)\s+Device\s+(?P<index>\d+): \(UUID: (?P<uuid>\S+)\)")


def parse_list(text: str) -> NvidiaSmiFacts:
    """`nvidia-smi -L`: one line per GPU, MIG device lines attached to the GPU above them."""
    gpus: list[GpuInfo] = []
    migs: list[list[MigDevice]] = []
    for line in (ln.rstrip() for ln in text.splitlines()):
        if re.match(r"GPU \d+: ", line):
            match = _LIST_GPU.fullmatch(line)
            if not match or not _GPU_UUID.fullmatch(match["uuid"]):
                raise NvidiaSmiParseError(f"malformed GPU line in nvidia-smi -L output: {line!r}")
            gpus.append(GpuInfo(int(match["index"]), match["name"], match["uuid"]))
            migs.append([])
        elif re.match(r"\s+MIG\s", line):
            match = _LIST_MIG.fullmatch(line)
            if not match or not _MIG_UUID.fullmatch(match["uuid"]):
                raise NvidiaSmiParseError(f"malformed MIG device line in nvidia-smi -L output: {line!r}")
            if not gpus:
                raise NvidiaSmiParseError(f"MIG device line before any GPU line in nvidia-smi -L output: {line!r}")
            migs[-1].append(MigDevice(int(match["index"]), match["profile"], match["uuid"]))
    if not gpus:
        raise _no_gpus(text, "no 'GPU <n>: <name> (UUID: ...)' line in nvidia-smi -L output")
    merged = [GpuInfo(g.index, g.name, g.uuid, mig_devices=tuple(m)) for g, m in zip(gpus, migs, strict=True)]
    return NvidiaSmiFacts("list", None, None, _unique_indices(merged, "the nvidia-smi -L output"))


# --- nvidia-smi -q -x ----------------------------------------------------------------------------


def parse_xml(text: str) -> NvidiaSmiFacts:
    """`nvidia-smi -q -x`; text before `<?xml` (a container banner, say) is ignored."""
    start = text.find("<?xml")
    if start < 0:
        start = text.find("<nvidia_smi_log")
    if start < 0:
        raise _no_gpus(text, "no '<?xml' or '<nvidia_smi_log>' in nvidia-smi -q -x output")
    end = text.find("</nvidia_smi_log>", start)
    if end < 0:
        raise NvidiaSmiParseError("nvidia-smi -q -x output is truncated: no closing </nvidia_smi_log>")
    document = text[start : end + len("</nvidia_smi_log>")]
    try:
        root = ET.fromstring(document)
    except (ET.ParseError, ValueError) as exc:
        raise NvidiaSmiParseError(f"nvidia-smi -q -x output is not well-formed XML: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise NvidiaSmiParseError(f"nvidia-smi -q -x output has root <{root.tag}>, expected <nvidia_smi_log>")
    where = "the nvidia-smi -q -x output"
    driver = _version(root.findtext("driver_version"), "driver version", where)
    cuda_text = _optional(root.findtext("cuda_version"))
    cuda = _version(cuda_text, "CUDA version", where) if cuda_text else None
    gpus = []
    for index, gpu in enumerate(root.findall("gpu")):
        name = _optional(gpu.findtext("product_name"))
        if name is None:
            raise NvidiaSmiParseError(f"no <product_name> for GPU {index} in {where}")
        uuid = _optional(gpu.findtext("uuid"))
        if uuid is not None and not _GPU_UUID.fullmatch(uuid):
            raise NvidiaSmiParseError(f"malformed <uuid> {uuid!r} for GPU {index} in {where}")
        memory = _mib(gpu.findtext("fb_memory_usage/total"), f"GPU {index} of {where}")
        mig = _mig_mode(gpu.findtext("mig_mode/current_mig"), f"GPU {index} of {where}")
        gpus.append(GpuInfo(index, name, uuid, memory, mig))
    attached = (root.findtext("attached_gpus") or "").strip()
    if not gpus:
        raise NvidiaSmiParseError(f"no <gpu> element in {where} (attached_gpus {attached or 'missing'})")
    if re.fullmatch(r"[0-9]+", attached) and int(attached) != len(gpus):
        raise NvidiaSmiParseError(f"{where} says attached_gpus {attached} but lists {len(gpus)} <gpu> elements")
    return NvidiaSmiFacts("xml", driver, cuda, tuple(gpus))


# --- nvidia-smi --query-gpu=... --format=csv -----------------------------------------------------

_CSV_FIELD = re.compile(r"(?P<field>[a-z][a-z0-9_.]*)(?: \[(?P<unit>[^\]]+)\])?")
_CSV_KNOWN = {"index", "name", "uuid", "driver_version", "memory.total", "mig.mode.current", "pci.bus_id"}


def _csv_header(line: str) -> list[str] | None:
    """The field names of a `--query-gpu` CSV header line, or None if the line is not one."""
    cells = [c.strip() for c in line.split(",")]
    fields = []
    for cell in cells:
        match = _CSV_FIELD.fullmatch(cell)
        if not match:
            return None
        fields.append(match["field"])
    return fields if set(fields) & _CSV_KNOWN else None


def parse_csv(text: str) -> NvidiaSmiFacts:
    """`nvidia-smi --query-gpu=... --format=csv` with its header line; columns in any order, units or not."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if _csv_header(ln) is not None), None)
    if start is None:
        raise _no_gpus(text, "no --query-gpu CSV header line (name, uuid, ...) in nvidia-smi output")
    fields = _csv_header(lines[start]) or []
    if "name" not in fields:
        raise NvidiaSmiParseError("the nvidia-smi CSV has no 'name' column (query name,uuid,memory.total,...)")
    try:
        rows = list(csv.reader(lines[start + 1 :], skipinitialspace=True))
    except csv.Error as exc:
        raise NvidiaSmiParseError(f"the nvidia-smi CSV is malformed: {exc}") from None
    if not rows:
        raise _no_gpus(text, "nvidia-smi CSV has a header but no GPU rows")
    drivers: set[str] = set()
    gpus = []
    for n, row in enumerate(rows):
        where = f"row {n + 1} of the nvidia-smi CSV"
        if len(row) != len(fields):
            raise NvidiaSmiParseError(f"{where} has {len(row)} values for {len(fields)} columns (truncated?)")
        cell = dict(zip(fields, (v.strip() for v in row), strict=True))
        empty = [f for f, v in cell.items() if not v]  # nvidia-smi prints [N/A], never nothing
        if empty:
            raise NvidiaSmiParseError(f"no value for {empty[0]} in {where} (truncated?)")
        index_text = cell.get("index", str(n))
        if not re.fullmatch(r"[0-9]+", index_text):
            raise NvidiaSmiParseError(f"index {index_text!r} in {where} is not a number")
        uuid = _optional(cell.get("uuid"))
        if uuid is not None and not _GPU_UUID.fullmatch(uuid):
            raise NvidiaSmiParseError(f"malformed uuid {uuid!r} in {where}")
        if "driver_version" in cell:
            drivers.add(_version(cell["driver_version"], "driver version", where))
        gpus.append(GpuInfo(int(index_text), cell["name"], uuid, _mib(cell.get("memory.total"), where),
                            _mig_mode(cell.get("mig.mode.current"), where)))
    if len(drivers) > 1:
        raise NvidiaSmiParseError(f"the nvidia-smi CSV shows more than one driver version: {sorted(drivers)}")
    return NvidiaSmiFacts("csv", drivers.pop() if drivers else None, None, _unique_indices(gpus, "the nvidia-smi CSV"))


# --- auto-detection ------------------------------------------------------------------------------


def detect(text: str) -> Format | None:
    """Which nvidia-smi format the text is in, or None."""
    if "<nvidia_smi_log" in text or "<?xml" in text:
        return "xml"
    if re.search(r"^\|.*(?:NVIDIA-SMI|Driver Version)", text, re.MULTILINE):
        return "table"
    if re.search(r"^GPU \d+: ", text, re.MULTILINE):
        return "list"
    if any(_csv_header(ln) is not None for ln in text.splitlines()):
        return "csv"
    return None


PARSERS: dict[Format, Callable[[str], NvidiaSmiFacts]] = {
    "table": parse_table, "list": parse_list, "xml": parse_xml, "csv": parse_csv,
}


def parse(text: str) -> NvidiaSmiFacts:
    """Parse any supported nvidia-smi output, detecting its format."""
    fmt = detect(text)
    if fmt is None:
        reason = _failure(text)
        if reason:
            raise NvidiaSmiParseError(reason)
        if not text.strip():
            raise NvidiaSmiParseError("empty nvidia-smi output")
        if "NVSMI LOG" in text:
            raise NvidiaSmiParseError("nvidia-smi -q text output is not supported: use nvidia-smi -q -x")
        raise NvidiaSmiParseError(
            "unrecognised nvidia-smi output: expected the default table, -L, -q -x XML or --query-gpu CSV with a header"
        )
    return PARSERS[fmt](text)

"""`gpu-conformance compat`, `parse nvidia-smi` and `probe`: JSON on stdout, documented exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_conformance import probe

DATA = Path(__file__).parent / "data"


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpu_conformance", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("driver", "cuda", "code", "mode", "minimum"),
    [
        ("535.104.05", "12.4", 0, "minor-version", "550.54.14"),
        ("580.159.04", "13.0", 0, "native", "580.65.06"),
        ("575.57.08", "13.0", 1, "incompatible", "580.65.06"),
    ],
)
def test_compat_prints_json_and_exits_by_verdict(driver: str, cuda: str, code: int, mode: str, minimum: str) -> None:
    proc = _cli("compat", "--driver", driver, "--cuda", cuda)
    assert proc.returncode == code, proc.stderr
    assert json.loads(proc.stdout) == {"driver": driver, "cuda": cuda, "compatible": code == 0, "mode": mode,
                                       "minimum_driver": minimum}
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--driver", "5x5", "--cuda", "12.4"), "gpu-conformance: error: malformed driver version '5x5'"),
        (("--driver", "535.104.05", "--cuda", "twelve"), "gpu-conformance: error: malformed CUDA version 'twelve'"),
        (("--driver", "535.104.05", "--cuda", "12.7"), "gpu-conformance: error: CUDA 12.7 is not a toolkit release"),
    ],
)
def test_compat_bad_versions_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    proc = _cli("compat", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in _one_error_line(proc)


def test_compat_missing_option_is_a_usage_error() -> None:
    proc = _cli("compat", "--driver", "535.104.05")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert "the following arguments are required: --cuda" in proc.stderr


@pytest.mark.parametrize(
    ("path", "driver", "gpus"),
    [
        ("h100/nvidia-smi.txt", "580.159.04", 1),
        ("h100/nvidia-smi-L.txt", None, 1),
        ("h100/nvidia-smi-q.xml", "580.159.04", 1),
        ("h100/nvidia-smi-query.csv", "580.159.04", 1),
        ("nvsmi/table-450-2xv100.txt", "450.80.02", 2),
        ("nvsmi/table-580-8xh100.txt", "580.159.04", 8),
        ("nvsmi/L-580-h100-mig.txt", None, 3),
    ],
)
def test_parse_nvidia_smi_any_format(path: str, driver: str | None, gpus: int) -> None:
    proc = _cli("parse", "nvidia-smi", str(DATA / path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["driver_version"] == driver and "cuda_version" in doc
    assert [g["index"] for g in doc["gpus"]] == list(range(gpus))
    assert {"index", "name", "uuid", "memory_total_mib"} <= set(doc["gpus"][0])


def test_parse_nvidia_smi_shows_uuid_and_memory_or_null() -> None:
    table = json.loads(_cli("parse", "nvidia-smi", str(DATA / "h100/nvidia-smi.txt")).stdout)["gpus"][0]
    listing = json.loads(_cli("parse", "nvidia-smi", str(DATA / "h100/nvidia-smi-L.txt")).stdout)["gpus"][0]
    assert (table["uuid"], table["memory_total_mib"]) == (None, 81559)
    assert (listing["uuid"], listing["memory_total_mib"]) == ("GPU-58bbefa4-51a0-e616-9d2b-707cb173eb38", None)


def test_parse_nvidia_smi_from_stdin() -> None:
    proc = _cli("parse", "nvidia-smi", "-", stdin=(DATA / "h100/nvidia-smi.txt").read_text())
    assert proc.returncode == 0 and json.loads(proc.stdout)["cuda_version"] == "13.0"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nvsmi/no-devices.txt", "nvidia-smi found no GPUs: 'No devices were found'"),
        ("nvsmi/driver-not-loaded.txt", "nvidia-smi failed"),
        ("h100/nvidia-smi-q.txt", "use nvidia-smi -q -x"),
        ("h100/README.md", "unrecognised nvidia-smi output"),
        ("no-such-file.txt", "cannot read"),
        ("nvsmi", "cannot read"),  # a directory
    ],
)
def test_parse_nvidia_smi_errors_exit_2_with_one_line(path: str, message: str) -> None:
    proc = _cli("parse", "nvidia-smi", str(DATA / path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    line = _one_error_line(proc)
    assert line.startswith("gpu-conformance: error: ") and message in line


def test_parse_nvidia_smi_truncated_table_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt"
    text = (DATA / "h100/nvidia-smi.txt").read_text()
    path.write_text(text[: text.index("81559MiB")])  # cut inside the GPU's memory cell
    proc = _cli("parse", "nvidia-smi", str(path))
    assert proc.returncode == 2 and "incomplete (truncated?)" in _one_error_line(proc)


def test_probe_command() -> None:
    proc = _cli("probe")
    if proc.returncode == 0:  # a machine with an NVIDIA driver: the probe's JSON
        assert probe.parse_probe(proc.stdout).gpus
        return
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert _one_error_line(proc).startswith("gpu-conformance probe: NVML not available: ")


def test_help_lists_the_tool_commands() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0
    for command in ("compat", "parse", "probe"):
        assert command in proc.stdout

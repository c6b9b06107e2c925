"""nvidia-smi parsing: real H100 captures, constructed 450-era and multi-GPU samples, failures, fuzzing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_conformance import nvsmi
from gpu_conformance.nvsmi import GpuInfo, MigDevice, NvidiaSmiParseError

DATA = Path(__file__).parent / "data"
H100 = DATA / "h100"
SAMPLES = DATA / "nvsmi"
H100_UUID = "GPU-58bbefa4-51a0-e616-9d2b-707cb173eb38"
H100_NAME = "NVIDIA H100 80GB HBM3"

# What NVIDIA's CUDA images print before the container's command runs (it lands in the pod log).
BANNER = """
==========
== CUDA ==
==========

CUDA Version 12.9.1

Container image Copyright (c) 2016-2023, NVIDIA CORPORATION & AFFILIATES. All rights reserved.

"""

REAL = {  # the real captures and the format each is in
    "nvidia-smi.txt": "table",
    "nvidia-smi-L.txt": "list",
    "nvidia-smi-q.xml": "xml",
    "nvidia-smi-query.csv": "csv",
    "probe-host-nvidia-smi.txt": "table",
    "probe-host-nvidia-smi-L.txt": "list",
}
CONSTRUCTED = sorted(p.name for p in SAMPLES.iterdir() if p.name.startswith(("table-", "L-", "q-x-", "query-")))
FAILURES = {
    "no-devices.txt": "nvidia-smi found no GPUs: 'No devices were found'",
    "driver-not-loaded.txt": "nvidia-smi failed: \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
    "nvml-mismatch.txt": "nvidia-smi failed: 'Failed to initialize NVML: Driver/library version mismatch'",
}


def real(name: str) -> str:
    return (H100 / name).read_text()


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# --- the real H100 captures ----------------------------------------------------------------------


def test_real_580_table() -> None:
    text = real("nvidia-smi.txt")
    assert {len(ln.rstrip()) for ln in text.splitlines()[1:] if ln} == {91}  # the 580-era width
    facts = nvsmi.parse(text)
    assert facts == nvsmi.NvidiaSmiFacts("table", "580.159.04", "13.0", (GpuInfo(0, H100_NAME, None, 81559, "Disabled"),))


def test_real_list() -> None:
    assert nvsmi.parse(real("nvidia-smi-L.txt")) == nvsmi.NvidiaSmiFacts("list", None, None, (GpuInfo(0, H100_NAME, H100_UUID),))


def test_real_xml() -> None:
    facts = nvsmi.parse(real("nvidia-smi-q.xml"))
    assert facts == nvsmi.NvidiaSmiFacts("xml", "580.159.04", "13.0", (GpuInfo(0, H100_NAME, H100_UUID, 81559, "Disabled"),))


def test_real_query_csv() -> None:
    facts = nvsmi.parse(real("nvidia-smi-query.csv"))
    assert facts == nvsmi.NvidiaSmiFacts("csv", "580.159.04", None, (GpuInfo(0, H100_NAME, H100_UUID, 81559, "Disabled"),))


def test_every_format_of_one_machine_agrees() -> None:
    names = ("nvidia-smi.txt", "nvidia-smi-L.txt", "nvidia-smi-q.xml", "nvidia-smi-query.csv")
    results = [nvsmi.parse(real(name)) for name in names]
    assert {g.name for r in results for g in r.gpus} == {H100_NAME}
    assert {g.uuid for r in results for g in r.gpus} - {None} == {H100_UUID}
    assert {g.memory_total_mib for r in results for g in r.gpus} - {None} == {81559}
    assert {r.driver_version for r in results} - {None} == {"580.159.04"}


@pytest.mark.parametrize("name", ["nvidia-smi.txt", "nvidia-smi-L.txt", "nvidia-smi-q.xml", "nvidia-smi-query.csv"])
def test_text_before_the_output_is_ignored(name: str) -> None:
    # A pod log starts with the CUDA image's banner; `-q -x` may print text before `<?xml`.
    text = real(name)
    assert nvsmi.parse(BANNER + text) == nvsmi.parse(text)


@pytest.mark.parametrize("name", sorted(REAL))
def test_windows_line_endings(name: str) -> None:
    text = real(name)
    assert nvsmi.parse(text.replace("\n", "\r\n")) == nvsmi.parse(text)


@pytest.mark.parametrize(("name", "fmt"), sorted(REAL.items()))
def test_format_specific_parsers_agree_with_detection(name: str, fmt: str) -> None:
    text = real(name)
    assert nvsmi.detect(text) == fmt
    assert nvsmi.PARSERS[fmt](text) == nvsmi.parse(text)
    for other, parser in nvsmi.PARSERS.items():
        if other != fmt:
            with pytest.raises(NvidiaSmiParseError):
                parser(text)


# --- constructed samples -------------------------------------------------------------------------


def test_450_era_table_two_v100s() -> None:
    text = sample("table-450-2xv100.txt")
    assert {len(ln) for ln in text.splitlines()[1:] if ln} == {79}  # the 450-era width
    facts = nvsmi.parse(text)
    assert (facts.format, facts.driver_version, facts.cuda_version) == ("table", "450.80.02", "11.0")
    assert facts.gpus == tuple(GpuInfo(i, "Tesla V100-SXM2...", None, 16160, None) for i in (0, 1))


def test_450_era_table_with_mig_devices_section() -> None:
    facts = nvsmi.parse(sample("table-450-a100-mig.txt"))
    # The MIG devices box below the GPUs is not mistaken for more GPUs.
    assert facts.gpus == (GpuInfo(0, "A100-SXM4-40GB", None, 40537, "Enabled"),
                          GpuInfo(1, "A100-SXM4-40GB", None, 40537, "Disabled"))


def test_580_era_table_eight_gpus_with_processes() -> None:
    facts = nvsmi.parse(sample("table-580-8xh100.txt"))
    assert [g.index for g in facts.gpus] == list(range(8))
    assert {g.name for g in facts.gpus} == {H100_NAME} and {g.memory_total_mib for g in facts.gpus} == {81559}
    assert facts.driver_version == "580.159.04" and facts.cuda_version == "13.0"


def test_list_with_mig_devices_attached_to_their_gpu() -> None:
    facts = nvsmi.parse(sample("L-580-h100-mig.txt"))
    assert [(g.index, len(g.mig_devices)) for g in facts.gpus] == [(0, 4), (1, 0), (2, 1)]
    assert facts.gpus[0].mig_devices[2] == MigDevice(2, "1g.10gb", "MIG-3c4d5e6f-7a8b-5c9d-0e1f-2a3b4c5d6e7f")
    assert facts.gpus[2].mig_devices == (MigDevice(0, "7g.80gb", "MIG-5e6f7a8b-9c0d-5e1f-2a3b-4c5d6e7f8091"),)


def test_list_with_r450_mig_uuids() -> None:
    facts = nvsmi.parse(sample("L-450-a100-mig.txt"))
    assert facts.gpus[0].name == "A100-SXM4-40GB"
    assert [m.uuid for m in facts.gpus[0].mig_devices] == [
        f"MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/{gi}/0" for gi in (1, 2, 3)
    ]
    assert facts.gpus[1].mig_devices == ()


def test_xml_two_gpus() -> None:
    facts = nvsmi.parse(sample("q-x-2xh100.xml"))
    assert [(g.index, g.uuid) for g in facts.gpus] == [(0, H100_UUID), (1, "GPU-7d2c91e0-3b4f-4a18-b6e2-0f9c5d1a8e37")]


def test_csv_columns_in_any_order_without_units() -> None:
    facts = nvsmi.parse(sample("query-4gpu-nounits.csv"))
    assert facts.driver_version == "580.159.04" and facts.cuda_version is None
    assert [(g.index, g.memory_total_mib, g.mig_mode) for g in facts.gpus] == [
        (0, 81559, "Enabled"), (1, 81559, "Disabled"), (2, 81559, "Disabled"), (3, 81559, "Disabled")]


def test_csv_without_uuid_or_driver_columns() -> None:
    facts = nvsmi.parse(sample("query-t4-name-memory.csv"))
    assert facts == nvsmi.NvidiaSmiFacts("csv", None, None, (GpuInfo(0, "Tesla T4", None, 15360, None),))


def test_cuda_version_not_available_in_the_header() -> None:
    text = real("nvidia-smi.txt").replace("CUDA Version: 13.0", "CUDA Version: N/A ")
    assert nvsmi.parse(text).cuda_version is None


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "message"), sorted(FAILURES.items()))
def test_nvidia_smi_error_messages_are_named(name: str, message: str) -> None:
    with pytest.raises(NvidiaSmiParseError) as err:
        nvsmi.parse(sample(name))
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty nvidia-smi output"),
        ("hello\nworld\n", "unrecognised nvidia-smi output"),
        ("| NVIDIA-SMI 580.159.04             Driv", "no 'Driver Version' in nvidia-smi table"),
        ("bash: nvidia-smi: command not found", "nvidia-smi is not installed"),
        ("name, uuid\n", "nvidia-smi CSV has a header but no GPU rows"),
        ("NVIDIA H100 80GB HBM3, GPU-58bbefa4-51a0-e616-9d2b-707cb173eb38\n", "unrecognised nvidia-smi output"),
        (f"uuid, memory.total [MiB]\n{H100_UUID}, 81559 MiB\n", "the nvidia-smi CSV has no 'name' column"),
        ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-58bbefa4-51a0", "malformed GPU line in nvidia-smi -L output"),
        ("  MIG 1g.10gb     Device  0: (UUID: MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d)\nGPU 0: X (UUID: " + H100_UUID + ")",
         "MIG device line before any GPU line"),
        ("<?xml version=\"1.0\" ?>\n<nvidia_smi_log>\n<driver_version>580.159.04</driver_version>\n",
         "nvidia-smi -q -x output is truncated: no closing </nvidia_smi_log>"),
        ("<nvidia_smi_log><driver_version>580.159.04</driver_version><attached_gpus>0</attached_gpus></nvidia_smi_log>",
         "no <gpu> element in the nvidia-smi -q -x output (attached_gpus 0)"),
        ("<nvidia_smi_log><attached_gpus>1</attached_gpus></nvidia_smi_log>", "no driver version in the nvidia-smi -q -x output"),
        ("index, name\n\u00b2, X\n", "index '\u00b2' in row 1 of the nvidia-smi CSV is not a number"),
        ("<nvidia_smi_log><driver_version>5</nvidia_smi_log>", "nvidia-smi -q -x output is not well-formed XML"),
    ],
)
def test_malformed_input_names_what_is_missing(text: str, message: str) -> None:
    with pytest.raises(NvidiaSmiParseError) as err:
        nvsmi.parse(text)
    assert str(err.value).startswith(message), str(err.value)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(NvidiaSmiParseError, ValueError)


def test_q_text_output_points_at_xml() -> None:
    with pytest.raises(NvidiaSmiParseError, match=r"use nvidia-smi -q -x"):
        nvsmi.parse(real("nvidia-smi-q.txt"))


def test_table_with_gpu_header_but_no_gpu_rows() -> None:
    lines = real("nvidia-smi.txt").splitlines()
    assert lines[7].startswith("|====") and lines[11].startswith("+----")
    with pytest.raises(NvidiaSmiParseError, match="GPU header but no GPU rows"):
        nvsmi.parse("\n".join(lines[:8] + lines[12:]))  # the one GPU block removed


def test_table_with_malformed_gpu_row() -> None:
    text = real("nvidia-smi.txt").replace("00000000:00:06.0 Off", "0000000000000000 Off")
    with pytest.raises(NvidiaSmiParseError, match="malformed GPU row"):
        nvsmi.parse(text)


def test_xml_gpu_count_must_match_attached_gpus() -> None:
    text = real("nvidia-smi-q.xml").replace("<attached_gpus>1</attached_gpus>", "<attached_gpus>2</attached_gpus>")
    with pytest.raises(NvidiaSmiParseError, match="attached_gpus 2 but lists 1"):
        nvsmi.parse(text)


def test_csv_row_with_missing_values() -> None:
    text = real("nvidia-smi-query.csv") + "NVIDIA H100 80GB HBM3, GPU-58bbefa4\n"
    with pytest.raises(NvidiaSmiParseError, match=r"row 2 of the nvidia-smi CSV has 2 values for 9 columns"):
        nvsmi.parse(text)


def test_csv_without_header_is_refused() -> None:
    body = real("nvidia-smi-query.csv").splitlines()[1]
    with pytest.raises(NvidiaSmiParseError, match="no --query-gpu CSV header"):
        nvsmi.parse_csv(body)


def test_duplicate_gpu_index() -> None:
    text = f"GPU 0: A (UUID: {H100_UUID})\nGPU 0: B (UUID: {H100_UUID[:-1]}9)\n"
    with pytest.raises(NvidiaSmiParseError, match="GPU index 0 appears twice"):
        nvsmi.parse(text)


# --- robustness: truncations and random input ----------------------------------------------------

ALL_SAMPLES = {**{n: real(n) for n in REAL}, **{n: sample(n) for n in CONSTRUCTED}}


def _outcome(parser: Callable[[str], nvsmi.NvidiaSmiFacts], text: str) -> nvsmi.NvidiaSmiFacts | None:
    """A parse result with at least one GPU, or None for NvidiaSmiParseError; any other exception fails the test."""
    try:
        facts = parser(text)
    except NvidiaSmiParseError as exc:
        assert str(exc), "a parse error must say what was missing"
        return None
    assert facts.gpus, "a parse result must never have zero GPUs"
    return facts


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_truncation_of_a_real_capture_is_refused_or_complete(name: str) -> None:
    # A prefix of a real capture either fails to parse or parses to exactly what the whole does:
    # truncation never yields a silently different answer.
    text = real(name)
    full = nvsmi.parse(text)
    own = nvsmi.PARSERS[REAL[name]]  # type: ignore[index]
    for end in range(len(text)):
        for parser in (nvsmi.parse, own):
            got = _outcome(parser, text[:end])
            assert got is None or got == full, (name, end, got)


@pytest.mark.parametrize("name", CONSTRUCTED)
def test_every_truncation_of_a_constructed_sample_is_refused_or_a_result(name: str) -> None:
    text = sample(name)
    for end in range(len(text)):
        _outcome(nvsmi.parse, text[:end])


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_random_text_is_refused_or_parsed(text: str) -> None:
    for parser in (nvsmi.parse, *nvsmi.PARSERS.values()):
        _outcome(parser, text)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(ALL_SAMPLES)), st.data())
def test_randomly_damaged_samples_are_refused_or_parsed(name: str, data: st.DataObject) -> None:
    # Replace, insert or delete a few characters anywhere in a real or constructed sample.
    text = ALL_SAMPLES[name]
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        junk = data.draw(st.text(alphabet="|+-=:,. \n0123456789<>/aAzZ", max_size=4))
        cut = data.draw(st.integers(0, 4))
        text = text[:at] + junk + text[at + cut :]
    for parser in (nvsmi.parse, *nvsmi.PARSERS.values()):
        _outcome(parser, text)

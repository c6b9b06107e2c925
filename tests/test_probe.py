"""The NVML probe: its JSON from a real H100, reading it back, unsupported fields, no NVML, fuzzing."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_conformance import nvsmi, probe
from gpu_conformance.probe import EnabledState, ProbeFacts, ProbeParseError, RemappedRows

H100 = Path(__file__).parent / "data" / "h100"
REAL = (H100 / "probe.json").read_text()  # `python3 -m gpu_conformance.probe` on a real H100, driver 580.159.04


# --- the real capture ----------------------------------------------------------------------------


def test_real_h100_probe() -> None:
    facts = probe.parse_probe(REAL)
    assert (facts.driver_version, facts.cuda_driver_version, facts.cuda_driver_version_raw) == ("580.159.04", "13.0", 13000)
    (gpu,) = facts.gpus
    assert (gpu.index, gpu.name, gpu.memory_total_mib) == (0, "NVIDIA H100 80GB HBM3", 81559)
    assert gpu.persistence_mode is True and gpu.ecc_mode == EnabledState(True, True)
    assert gpu.ecc_volatile_uncorrected == 0
    assert gpu.retired_pages is None  # Hopper retires no pages: NVML says "not supported"
    assert gpu.remapped_rows == RemappedRows(0, 0, False, False)
    assert gpu.mig_mode == EnabledState(False, False) and gpu.mig_devices == ()
    assert gpu.power_limit_w == 700.0 and gpu.temperature_c is not None and gpu.errors == {}


def test_real_probe_agrees_with_nvidia_smi_on_the_same_host() -> None:
    facts = probe.parse_probe(REAL)
    listing = nvsmi.parse((H100 / "probe-host-nvidia-smi-L.txt").read_text())
    table = nvsmi.parse((H100 / "probe-host-nvidia-smi.txt").read_text())
    assert facts.gpus[0].uuid == listing.gpus[0].uuid
    assert facts.gpus[0].memory_total_mib == table.gpus[0].memory_total_mib
    assert (facts.driver_version, facts.cuda_driver_version) == (table.driver_version, table.cuda_version)


def test_reading_back_round_trips() -> None:
    facts = probe.parse_probe(REAL)
    assert json.loads(probe.to_json(facts)) == json.loads(REAL)
    assert probe.parse_probe(probe.to_json(facts)) == facts


def test_log_lines_around_the_json_are_ignored() -> None:
    noisy = "WARNING: something on stderr\n" + REAL + "\nbye\n"
    assert probe.parse_probe(noisy) == probe.parse_probe(REAL)


# --- malformed probe output ----------------------------------------------------------------------


def _edited(edit: Callable[[dict[str, Any]], None]) -> str:
    data = json.loads(REAL)
    edit(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no probe JSON object in the output (it is empty)"),
        ("gpu-conformance probe: NVML not available: x\n", "no probe JSON object in the output"),
        ("[1, 2]\n", "no probe JSON object"),
        ('{"schema": "gpu-conformance/nvml-probe/v1", "gpus": [', "probe output is not complete JSON (truncated?)"),
        (_edited(lambda d: d.update(schema="other/v9")), "probe JSON: schema is 'other/v9'"),
        (_edited(lambda d: d.pop("driver_version")), "probe JSON: driver_version: Field required"),
        (_edited(lambda d: d["gpus"][0].update(memory_total_mib="81559")),
         "probe JSON: gpus.0.memory_total_mib: Input should be a valid integer"),
        (_edited(lambda d: d["gpus"][0].update(persistence_mode=1)),
         "probe JSON: gpus.0.persistence_mode: Input should be a valid boolean"),
        (_edited(lambda d: d["gpus"][0]["remapped_rows"].pop("failure")),
         "probe JSON: gpus.0.remapped_rows.failure: Field required"),
        (_edited(lambda d: d.update(gpus=[])), "probe JSON lists no GPUs"),
        (_edited(lambda d: d.update(gpus=d["gpus"] * 2)), "probe JSON lists a GPU index twice"),
        ("[" * 100000, "no probe JSON object"),
        ("{" + '"a":' * 1 + "[" * 100000, "probe output"),
    ],
)
def test_malformed_probe_output_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ProbeParseError) as err:
        probe.parse_probe(text)
    assert str(err.value).startswith(message), str(err.value)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(ProbeParseError, ValueError)


def test_every_truncation_of_the_real_probe_json_is_refused() -> None:
    full = probe.parse_probe(REAL)
    for end in range(len(REAL)):
        try:
            got = probe.parse_probe(REAL[:end])
        except ProbeParseError:
            continue
        assert got == full, end  # only the whole object (less trailing whitespace) parses


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text() | _JSON.map(json.dumps))
def test_random_input_is_refused_or_parsed(text: str) -> None:
    try:
        facts = probe.parse_probe(text)
    except ProbeParseError as exc:
        assert str(exc)
        return
    assert facts.gpus


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["schema", "driver_version", "gpus", "errors", "index", "ecc_mode", "remapped_rows", "power_draw_w"]),
       _JSON)
def test_any_value_in_any_field_is_refused_or_parsed(key: str, value: object) -> None:
    def put(d: dict[str, Any]) -> None:
        (d if key in d else d["gpus"][0])[key] = value

    try:
        facts = probe.parse_probe(_edited(put))
    except ProbeParseError:
        return
    assert facts.gpus


# --- collecting from NVML (a stand-in module with pynvml's names) --------------------------------


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _raise(code: int) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise _err(code)
    return call


def fake_nvml(gpus: int = 1, /, **overrides: Callable[..., Any]) -> types.ModuleType:
    """A stand-in for pynvml describing healthy H100s; `overrides` replace single NVML calls."""
    mod = types.ModuleType("fake_pynvml")
    for name in dir(pynvml):
        if name.startswith(("NVML_", "NVMLError")) or name == "nvmlMemory_v2":
            setattr(mod, name, getattr(pynvml, name))
    mib = 1024 * 1024
    calls: dict[str, Callable[..., Any]] = {
        "nvmlSystemGetDriverVersion": lambda: "580.159.04",
        "nvmlSystemGetCudaDriverVersion": lambda: 12040,
        "nvmlSystemGetNVMLVersion": lambda: "12.580.159.04",
        "nvmlDeviceGetCount": lambda: gpus,
        "nvmlDeviceGetHandleByIndex": lambda i: ("gpu", i),
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",  # old pynvml returns bytes
        "nvmlDeviceGetUUID": lambda h: f"GPU-00000000-0000-0000-0000-00000000000{h[1]}",
        "nvmlDeviceGetPciInfo": lambda h: types.SimpleNamespace(busId=f"00000000:{h[1]:02X}:00.0"),
        "nvmlDeviceGetMemoryInfo": lambda h, version=None: types.SimpleNamespace(total=81559 * mib, used=3 * mib),
        "nvmlDeviceGetPersistenceMode": lambda h: pynvml.NVML_FEATURE_ENABLED,
        "nvmlDeviceGetEccMode": lambda h: [1, 0],
        "nvmlDeviceGetTotalEccErrors": lambda h, kind, counter: 2,
        "nvmlDeviceGetRetiredPagesPendingStatus": _raise(pynvml.NVML_ERROR_NOT_SUPPORTED),
        "nvmlDeviceGetRetiredPages": _raise(pynvml.NVML_ERROR_NOT_SUPPORTED),
        "nvmlDeviceGetRemappedRows": lambda h: (1, 0, 1, 0),
        "nvmlDeviceGetMigMode": lambda h: [0, 1],
        "nvmlDeviceGetTemperature": lambda h, sensor: 41,
        "nvmlDeviceGetPowerUsage": lambda h: 134567,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700000,
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
    }
    calls.update(overrides)
    for name, fn in calls.items():
        setattr(mod, name, fn)
    return mod


def test_collect_reads_every_fact() -> None:
    facts = probe.collect(fake_nvml(2))
    assert (facts.cuda_driver_version, facts.cuda_driver_version_raw) == ("12.4", 12040)
    gpu = facts.gpus[1]
    assert (gpu.index, gpu.name, gpu.pci_bus_id) == (1, "NVIDIA H100 80GB HBM3", "00000000:01:00.0")
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.persistence_mode) == (81559, 3, True)
    assert gpu.ecc_mode == EnabledState(True, False) and gpu.ecc_volatile_uncorrected == 2
    assert gpu.remapped_rows == RemappedRows(1, 0, True, False)
    assert gpu.mig_mode == EnabledState(False, True)  # MIG enable pending a reset
    assert (gpu.temperature_c, gpu.power_draw_w, gpu.power_limit_w) == (41, 134.567, 700.0)
    assert gpu.retired_pages is None and gpu.errors == {}
    assert probe.parse_probe(probe.to_json(facts)) == facts


def test_every_unsupported_call_yields_null_not_a_crash() -> None:
    unsupported = _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)
    names = ["nvmlSystemGetCudaDriverVersion", "nvmlSystemGetNVMLVersion", "nvmlDeviceGetName", "nvmlDeviceGetUUID",
             "nvmlDeviceGetPciInfo", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPersistenceMode", "nvmlDeviceGetEccMode",
             "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows", "nvmlDeviceGetMigMode", "nvmlDeviceGetTemperature",
             "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit"]
    facts = probe.collect(fake_nvml(**{n: unsupported for n in names}))
    gpu = facts.gpus[0]
    assert facts.cuda_driver_version is None and facts.nvml_version is None
    nulls = {k: v for k, v in vars(gpu).items() if k not in ("index", "mig_devices", "errors")}
    assert set(nulls.values()) == {None}, nulls
    assert gpu.errors == {}  # "not supported" is a fact, not an error
    assert probe.parse_probe(probe.to_json(facts)) == facts


def test_calls_missing_from_the_driver_or_pynvml_yield_null() -> None:
    nvml = fake_nvml(nvmlDeviceGetRemappedRows=_raise(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND))
    del nvml.nvmlDeviceGetTemperature  # an older pynvml without the call
    gpu = probe.collect(nvml).gpus[0]
    assert gpu.remapped_rows is None and gpu.temperature_c is None and gpu.errors == {}


def test_other_nvml_errors_are_null_and_named() -> None:
    lost = _raise(pynvml.NVML_ERROR_GPU_IS_LOST)
    gpu = probe.collect(fake_nvml(nvmlDeviceGetTemperature=lost, nvmlDeviceGetEccMode=lost)).gpus[0]
    assert gpu.temperature_c is None and gpu.ecc_mode is None
    assert gpu.errors == {"temperature_c": "GPU is lost", "ecc_mode": "GPU is lost"}
    assert gpu.name == "NVIDIA H100 80GB HBM3"


def test_a_gpu_without_a_handle_is_still_listed() -> None:
    def handle(i: int) -> Any:
        if i == 1:
            raise _err(pynvml.NVML_ERROR_GPU_IS_LOST)
        return ("gpu", i)

    facts = probe.collect(fake_nvml(2, nvmlDeviceGetHandleByIndex=handle))
    assert facts.gpus[0].name is not None
    assert (facts.gpus[1].index, facts.gpus[1].name, facts.gpus[1].errors) == (1, None, {"handle": "GPU is lost"})
    assert probe.parse_probe(probe.to_json(facts)) == facts


def test_retired_pages_where_supported() -> None:
    pages = {pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: [1, 2],
             pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: [3]}
    gpu = probe.collect(fake_nvml(nvmlDeviceGetRetiredPagesPendingStatus=lambda h: 1,
                                  nvmlDeviceGetRetiredPages=lambda h, cause: pages[cause])).gpus[0]
    assert gpu.retired_pages == probe.RetiredPages(True, 2, 1)


def test_mig_devices_are_listed_when_mig_is_on() -> None:
    def mig_handle(h: Any, i: int) -> Any:
        if i == 1:
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)  # an empty slot
        return ("mig", i)

    nvml = fake_nvml(nvmlDeviceGetMigMode=lambda h: [1, 1], nvmlDeviceGetMaxMigDeviceCount=lambda h: 3,
                     nvmlDeviceGetMigDeviceHandleByIndex=mig_handle)
    gpu = probe.collect(nvml).gpus[0]
    assert [(m.index, m.memory_total_mib) for m in gpu.mig_devices] == [(0, 81559), (2, 81559)]
    assert gpu.errors == {}  # an empty slot is no error


def test_a_mig_device_that_fails_is_named() -> None:
    nvml = fake_nvml(nvmlDeviceGetMigMode=lambda h: [1, 1], nvmlDeviceGetMaxMigDeviceCount=lambda h: 1,
                     nvmlDeviceGetMigDeviceHandleByIndex=_raise(pynvml.NVML_ERROR_GPU_IS_LOST))
    gpu = probe.collect(nvml).gpus[0]
    assert gpu.mig_devices == () and gpu.errors == {"mig_devices": "GPU is lost"}


def test_main_prints_json_that_parse_probe_reads(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(4))
    assert probe.main() == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert [g.index for g in probe.parse_probe(out.out).gpus] == [0, 1, 2, 3]


def test_main_nvml_call_failure_is_one_line_exit_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(nvmlDeviceGetCount=_raise(pynvml.NVML_ERROR_UNKNOWN)))
    assert probe.main() == 3
    assert capsys.readouterr().err == "gpu-conformance probe: NVML not available: NVML call failed: Unknown Error\n"


def _nvml_loads() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_loads(), reason="this machine has NVML: the probe would succeed")
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import runpy; runpy.run_module('gpu_conformance.probe', run_name='__main__')", "NVML Shared Library Not Found"),
        ("import runpy, sys; sys.modules['pynvml'] = None; runpy.run_module('gpu_conformance.probe', run_name='__main__')",
         "cannot import pynvml"),
    ],
)
def test_without_nvml_the_probe_prints_one_line_and_exits_3(code: str, reason: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpu-conformance probe: NVML not available: {reason}"), proc.stderr


def test_probe_facts_are_frozen() -> None:
    facts = probe.parse_probe(REAL)
    with pytest.raises(AttributeError):
        facts.driver_version = "1"  # type: ignore[misc]
    assert isinstance(facts, ProbeFacts) and isinstance(facts.gpus, tuple)

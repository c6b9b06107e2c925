"""CUDA / driver compatibility: NVIDIA's table as data, the three modes, numeric comparison, bad versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from gpu_conformance import compat
from gpu_conformance.compat import CompatError, CompatResult
from gpu_conformance.errors import ConfigError

# (CUDA toolkit, minimum Linux x86_64 driver) as NVIDIA's release notes list them.
RELEASE_NOTES = [
    ("10.0.130", "410.48"), ("10.1", "418.39"), ("10.1.243", "418.39"), ("10.2", "440.33"), ("10.2.89", "440.33"),
    ("11.0", "450.51.05"), ("11.0.2", "450.51.05"), ("11.0.3", "450.51.06"), ("11.1", "455.23"), ("11.1.1", "455.32"),
    ("11.2", "460.27.03"), ("11.2.2", "460.32.03"), ("11.4.4", "470.82.01"), ("11.8", "520.61.05"),
    ("12.0", "525.60.13"), ("12.0.1", "525.85.12"), ("12.2.2", "535.104.05"), ("12.3.2", "545.23.08"),
    ("12.4", "550.54.14"), ("12.4.1", "550.54.15"), ("12.6.3", "560.35.05"), ("12.8", "570.26"), ("12.8.1", "570.124.06"),
    ("12.9", "575.51.03"), ("12.9.1", "575.57.08"), ("13.0", "580.65.06"), ("13.0.2", "580.95.05"), ("13.1", "590.44.01"),
    ("13.2.2", "595.71.05"),
]
ORDER = {"incompatible": 0, "minor-version": 1, "native": 2}


@pytest.mark.parametrize(("cuda", "minimum"), RELEASE_NOTES)
def test_minimum_driver_per_toolkit_release(cuda: str, minimum: str) -> None:
    assert compat.check(minimum, cuda) == CompatResult(minimum, cuda, True, "native", minimum)


@pytest.mark.parametrize(
    ("driver", "cuda", "mode"),
    [
        ("535.104.05", "12.4", "minor-version"),  # the 12.x floor is 525.60.13
        ("580.159.04", "13.0", "native"),
        ("575.57.08", "13.0", "incompatible"),  # a 12.x driver cannot run 13.x
        ("580.65.06", "13.2", "minor-version"),
        ("525.60.13", "12.9.1", "minor-version"),
        ("525.60.12", "12.9.1", "incompatible"),
        ("520.61.05", "12.0", "incompatible"),
        ("450.80.02", "11.8", "minor-version"),  # the 11.x floor (Tesla Recommended Driver)
        ("450.66", "11.1", "incompatible"),  # 450.66 is older than 450.80.02
        ("450.66", "11.0", "native"),  # but newer than 11.0 GA's 450.51.05
        ("450.51.05", "11.0.3", "incompatible"),  # below Update 1's minimum and the 11.x floor
        ("418.39", "10.2", "incompatible"),  # no minor-version compatibility before CUDA 11
        ("410.48", "10.0.130", "native"),
        ("590.48.01", "12.4", "native"),  # newer drivers run older toolkits
    ],
)
def test_modes(driver: str, cuda: str, mode: str) -> None:
    result = compat.check(driver, cuda)
    assert (result.mode, result.compatible) == (mode, mode != "incompatible")


def test_versions_compare_per_component_not_as_text() -> None:
    assert "535.104.05" < "535.54.03"  # as text: wrong
    assert compat.check("535.104.05", "12.2").mode == "native"  # 12.2 GA needs 535.54.03
    assert compat.check("535.54.03", "12.2.2").mode == "minor-version"  # 12.2 Update 2 needs 535.104.05


def test_updates_map_to_their_own_row() -> None:
    assert compat.check("550.54.14", "12.4").mode == "native"
    assert compat.check("550.54.14", "12.4.1").mode == "minor-version"
    assert compat.check("550.54.14", "12.4.1").minimum_driver == "550.54.15"


def test_branch_only_releases() -> None:
    # NVIDIA lists only the driver branch for 13.3 (R610) and 13.4 (R615).
    assert compat.check("615.28.01", "13.4").mode == "native"
    assert compat.check("610.43.02", "13.4").mode == "minor-version"
    assert compat.load().release_for(Version("13.3")).branch_only


def test_whitespace_around_versions_is_tolerated() -> None:
    assert compat.check(" 580.159.04\n", " 13.0 ") == CompatResult("580.159.04", "13.0", True, "native", "580.65.06")


@pytest.mark.parametrize(
    ("driver", "cuda", "message"),
    [
        ("abc", "12.4", "malformed driver version 'abc': expected numbers separated by dots, like 535.104.05"),
        ("535", "12.4", "malformed driver version '535'"),
        ("", "12.4", "malformed driver version ''"),
        ("535.104.05.1", "12.4", "malformed driver version '535.104.05.1'"),
        ("v535.104.05", "12.4", "malformed driver version"),
        ("\u0665\u0663\u0665.104.05", "12.4", "malformed driver version"),  # Arabic-Indic digits are not version digits
        ("535.104.05", "12", "malformed CUDA version '12': expected numbers separated by dots, like 12.4 or 12.4.1"),
        ("535.104.05", "12.4-rc1", "malformed CUDA version"),
        ("535.104.05", "12.7", "CUDA 12.7 is not a toolkit release in the compatibility table (10.0 to 13.4"),
        ("535.104.05", "9.2", "CUDA 9.2 is not a toolkit release"),
        ("535.104.05", "14.0", "CUDA 14.0 is not a toolkit release"),
    ],
)
def test_malformed_or_unknown_versions(driver: str, cuda: str, message: str) -> None:
    with pytest.raises(CompatError) as err:
        compat.check(driver, cuda)
    assert str(err.value).startswith(message), str(err.value)
    assert isinstance(err.value, ValueError)


def test_the_table_names_its_source_and_covers_10_to_13() -> None:
    table = compat.load()
    assert table.source_url.startswith("https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/")
    assert {r.toolkit.major for r in table.releases} == {10, 11, 12, 13}
    assert dict(table.floors) == {11: "450.80.02", 12: "525.60.13", 13: "580"}
    minimums = [Version(r.minimum_driver) for r in table.releases]
    assert minimums == sorted(minimums), "a newer toolkit never needs an older driver"


def test_a_broken_table_file_is_a_config_error(tmp_path: Path) -> None:
    good = compat.COMPAT_PATH.read_text()
    unordered = tmp_path / "unordered.yaml"
    unordered.write_text(good + '  - {toolkit: "12.1", label: "again", linux_driver: "530.30.02"}\n')
    with pytest.raises(ConfigError, match="listed once each, oldest first"):
        compat.load(unordered)
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text(good.replace('linux_driver: "570.26"', 'linux_driver: "570.x"'))
    with pytest.raises(ConfigError, match=r"line \d+: releases\.\d+\.linux_driver"):
        compat.load(bad_key)


_NUMBERS = st.integers(0, 999)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(_NUMBERS, min_size=2, max_size=3), st.lists(_NUMBERS, min_size=2, max_size=3), st.sampled_from(RELEASE_NOTES))
def test_a_newer_driver_is_never_less_compatible(a: list[int], b: list[int], release: tuple[str, str]) -> None:
    low, high = sorted([".".join(map(str, a)), ".".join(map(str, b))], key=Version)
    cuda = release[0]
    assert ORDER[compat.check(low, cuda).mode] <= ORDER[compat.check(high, cuda).mode]


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=12) | st.text("0123456789.\u00b2\u0661 ", max_size=12),
       st.text(max_size=12) | st.text("0123456789.\u00b2\u0661 ", max_size=12))
def test_random_versions_give_a_result_or_compat_error(driver: str, cuda: str) -> None:
    try:
        result = compat.check(driver, cuda)
    except CompatError as exc:
        assert str(exc)
        return
    assert result.mode in ORDER

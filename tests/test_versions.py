"""Driver facts from labels and nvidia-smi, the driver gate, drift, stale labels and GPU memory health."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_conformance import compat, nvsmi, probe, versions
from gpu_conformance.profile import NodeGroup, Profile
from gpu_conformance.sim.control_plane import node_manifest
from gpu_conformance.sim.scenario import NodeSpec

H100 = Path(__file__).parent / "data" / "h100"


def test_labels_current_names_win_over_deprecated_ones() -> None:
    labels = {"nvidia.com/cuda.driver-version.full": "580.159.04", "nvidia.com/cuda.runtime-version.full": "13.0",
              "nvidia.com/cuda.driver.major": "570", "nvidia.com/cuda.driver.minor": "1"}
    assert versions.from_labels(labels) == versions.DriverFacts("580.159.04", "13.0", "GPU Feature Discovery labels")


def test_labels_from_parts_old_gfd() -> None:
    labels = {"nvidia.com/cuda.driver.major": "470", "nvidia.com/cuda.driver.minor": "256", "nvidia.com/cuda.driver.rev": "02",
              "nvidia.com/cuda.runtime.major": "11", "nvidia.com/cuda.runtime.minor": "4"}
    found = versions.from_labels(labels)
    assert found is not None and (found.driver, found.cuda) == ("470.256.02", "11.4")
    # A driver without a revision component (580.65) is still a driver.
    found = versions.from_labels({"nvidia.com/cuda.driver-version.major": "580", "nvidia.com/cuda.driver-version.minor": "65"})
    assert found is not None and (found.driver, found.cuda) == ("580.65", None)


@pytest.mark.parametrize("labels", [{}, {"nvidia.com/cuda.driver.major": "580"}, {"nvidia.com/gpu.present": "true"}])
def test_no_driver_labels_means_unknown(labels: dict[str, str]) -> None:
    assert versions.from_labels(labels) is None


def test_the_simulator_labels_nodes_as_gfd_does_and_can_make_them_stale() -> None:
    spec = NodeSpec(name="n", gpus=8, driver="580.159.04", cuda="13.0")
    labels = node_manifest("n", spec, "s")["metadata"]["labels"]
    assert versions.from_labels(labels) == versions.DriverFacts("580.159.04", "13.0", "GPU Feature Discovery labels")
    old = {k: v for k, v in labels.items() if "-version" not in k}  # only the deprecated names
    assert versions.from_labels(old) == versions.from_labels(labels)
    stale = node_manifest("n", spec.model_copy(update={"labelled_driver": "570.172.08", "labelled_cuda": "12.8"}), "s")
    labelled = versions.from_labels(stale["metadata"]["labels"])
    assert labelled is not None
    in_pod = versions.from_nvidia_smi(nvsmi.parse((H100 / "nvidia-smi.txt").read_text()))
    assert in_pod == versions.DriverFacts("580.159.04", "13.0", "nvidia-smi in a GPU pod")
    assert versions.label_mismatches(labelled, in_pod) == [
        "driver 570.172.08 in the labels but 580.159.04 in the pod", "CUDA 12.8 in the labels but 13.0 in the pod"]
    assert versions.label_mismatches(versions.DriverFacts("580.159.4", "13", "l"), in_pod) == []
    # Same driver, higher CUDA in the pod: forward compatibility (cuda-compat in the image), not stale labels.
    assert versions.label_mismatches(versions.DriverFacts("580.159.04", "12.8", "l"), in_pod) == []
    # Same driver, lower CUDA in the pod: the labels claim more than the node has.
    assert versions.label_mismatches(versions.DriverFacts("580.159.04", "13.1", "l"), in_pod) == [
        "CUDA 13.1 in the labels but 13.0 in the pod"]


def test_nvidia_smi_list_shows_no_driver() -> None:
    assert versions.from_nvidia_smi(nvsmi.parse((H100 / "nvidia-smi-L.txt").read_text())) is None


@pytest.mark.parametrize(
    ("driver", "minimum", "cudas", "passed", "modes"),
    [
        ("580.159.04", "550.54.15", ["12.4", "12.8", "13.0"], True, ["native", "native", "native"]),
        ("550.127.05", "550.54.15", ["12.4", "12.8"], True, ["native", "minor-version"]),
        ("535.216.01", None, ["12.4"], True, ["minor-version"]),
        ("470.256.02", "450.80.02", ["12.4"], False, ["incompatible"]),
        ("550.127.05", None, ["13.0"], False, ["incompatible"]),  # 13.x needs the 580 branch even for minor-version
        ("535.104.05", "550.54.15", [], False, []),  # below the minimum, no CUDA listed
        ("550.54.15", "550.54.15", [], True, []),
    ],
)
def test_gate(driver: str, minimum: str | None, cudas: list[str], passed: bool, modes: list[str]) -> None:
    result = versions.gate(driver, minimum, cudas)
    assert result.passed is passed
    assert [r.mode for r in result.cuda] == modes
    text = result.describe()
    for cuda, r in zip(cudas, result.cuda, strict=True):
        assert f"CUDA {cuda}: {r.mode} (native needs >= {r.minimum_driver}" in text
    if minimum is not None:
        assert ("below" in text) is result.below_minimum


def test_gate_names_what_driver_would_be_needed() -> None:
    text = versions.gate("470.256.02", None, ["12.4", "10.2"]).describe()
    assert text == ("CUDA 12.4: incompatible (native needs >= 550.54.14, minor-version compatibility >= 525.60.13); "
                    "CUDA 10.2: native (native needs >= 440.33, no minor-version compatibility)")


def test_gate_refuses_malformed_versions() -> None:
    with pytest.raises(compat.CompatError, match="malformed driver version"):
        versions.gate("latest", None, ["12.4"])
    with pytest.raises(compat.CompatError, match="not a toolkit release"):
        versions.gate("580.159.04", None, ["99.1"])


@pytest.mark.parametrize(
    ("drivers", "usual"),
    [
        ({"a": "580.159.04", "b": "580.159.04", "c": "570.172.08"}, "580.159.04"),
        ({"a": "580.65.06", "b": "580.65.6"}, "580.65.06"),  # numerically the same version
        ({"a": "580.159.04", "b": "570.172.08"}, None),  # a tie: no majority
        ({"a": "580.159.04", "b": "570.172.08", "c": "550.127.05"}, None),
        ({}, None),
    ],
)
def test_majority(drivers: dict[str, str], usual: str | None) -> None:
    assert versions.majority(drivers) == usual


@given(st.lists(st.sampled_from(["580.159.04", "570.172.08", "550.127.05"]), min_size=1, max_size=12))
def test_the_majority_runs_on_more_than_half(values: list[str]) -> None:
    drivers = {f"n{i}": v for i, v in enumerate(values)}
    usual = versions.majority(drivers)
    counts = {v: values.count(v) for v in values}
    if usual is None:
        assert max(counts.values()) * 2 <= len(values)
    else:
        assert counts[usual] * 2 > len(values)


def test_group_split_and_node_groups() -> None:
    group = versions.GroupDrivers("profile group 'h100'", {"b": "580.159.04", "c": "570.172.08", "a": "580.159.04"})
    assert group.split() == "570.172.08 on c; 580.159.04 on a, b"
    assert group.usual() == "580.159.04"
    big = versions.GroupDrivers("g", {f"n{i:02}": "580.159.04" for i in range(12)} | {"odd": "570.172.08"})
    assert big.split() == ("570.172.08 on odd; 580.159.04 on 12 nodes (n00, n01, n02, n03, n04, n05, n06, n07, n08, "
                           "n09, ...)")
    profile = Profile(groups=[NodeGroup(name="h100", match_labels={"pool": "h100"})])
    assert versions.node_group(profile, {"pool": "h100", "nvidia.com/gpu.product": "X"}) == "profile group 'h100'"
    assert versions.node_group(profile, {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}) == "the NVIDIA-A100-SXM4-80GB nodes"
    assert versions.node_group(profile, {}) is None


def _real_probe() -> probe.ProbeFacts:
    return probe.parse_probe((H100 / "probe-from-configmap.json").read_text())


def test_the_real_h100_has_no_memory_problems() -> None:
    facts = _real_probe()
    assert facts.driver_version == "580.159.04" and facts.gpus
    assert versions.memory_problems(facts) == []
    assert versions.memory_problems(probe.parse_probe((H100 / "probe.json").read_text())) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"ecc_volatile_uncorrected": 3}, "3 volatile uncorrected ECC error(s)"),
        ({"remapped_rows": probe.RemappedRows(0, 1, False, True)}, "row remapping failed (1 uncorrectable row(s) remapped)"),
        ({"remapped_rows": probe.RemappedRows(0, 0, True, False)}, "row remapping pending"),
        ({"retired_pages": probe.RetiredPages(True, 0, 2)}, "page retirement pending"),
    ],
)
def test_each_memory_problem_is_reported(change: dict[str, object], problem: str) -> None:
    facts = _real_probe()
    bad = dataclasses.replace(facts, gpus=(dataclasses.replace(facts.gpus[0], **change),))
    problems = versions.memory_problems(bad)
    assert len(problems) == 1 and problem in problems[0] and facts.gpus[0].uuid in problems[0]


def test_unsupported_fields_are_not_problems() -> None:
    facts = _real_probe()
    blank = dataclasses.replace(facts.gpus[0], ecc_volatile_uncorrected=None, retired_pages=None, remapped_rows=None)
    assert versions.memory_problems(dataclasses.replace(facts, gpus=(blank,))) == []

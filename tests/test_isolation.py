"""Isolation probe logs: a listing of the visible GPUs, zero when nothing was visible, an error when unreadable."""

import pytest

from gpu_conformance.isolation import ListingIncomplete, parse_listing

MARK = "gpu-conformance: listed"
GPU = "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-58bbefa4-51a0-e616-9d2b-707cb173eb3{i})"


def test_listed_gpus_are_counted() -> None:
    seen = parse_listing("\n".join([GPU.format(i=0), GPU.format(i=1), MARK]))
    assert seen.count == 2 and seen.uuids[1] == "GPU-58bbefa4-51a0-e616-9d2b-707cb173eb31"


@pytest.mark.parametrize("printed", ["No devices were found", "sh: 1: nvidia-smi: not found",
                                     "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."])
def test_no_gpu_line_is_a_listing_of_zero(printed: str) -> None:
    assert parse_listing(f"{printed}\n{MARK}").count == 0


def test_a_probe_that_did_not_finish_is_undecided() -> None:
    with pytest.raises(ListingIncomplete, match="did not finish listing"):
        parse_listing(GPU.format(i=0))


def test_gpu_lines_that_do_not_parse_are_undecided_not_zero() -> None:
    with pytest.raises(ListingIncomplete, match="does not use"):
        parse_listing(f"GPU 0: garbled\n{MARK}")

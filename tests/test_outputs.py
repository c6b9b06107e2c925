"""Simulated nvidia-smi output follows the real 580-era layout captured on an H100."""

from pathlib import Path

from gpu_conformance import probe
from gpu_conformance.sim import outputs
from gpu_conformance.sim.scenario import NodeSpec

CAPTURE = (Path(__file__).parent / "data" / "h100" / "nvidia-smi.txt").read_text().splitlines()[1:]  # drop the date


def test_single_h100_table_matches_the_capture_layout() -> None:
    table = outputs.nvidia_smi_table("n", NodeSpec(name="n", gpus=1, driver="580.159.04", cuda="13.0")).splitlines()
    assert len(table) == len(CAPTURE)
    for ours, real in zip(table, CAPTURE, strict=True):
        assert len(ours) == len(real.rstrip()), (ours, real)
    # Everything except per-GPU readings (bus id, temperature, power) is identical.
    same = [i for i, (a, b) in enumerate(zip(table, CAPTURE, strict=True)) if a == b.rstrip()]
    assert len(same) == len(CAPTURE) - 2
    assert table[1] == CAPTURE[1].rstrip()  # driver and CUDA version line


def test_table_has_one_block_per_gpu_with_the_scenario_driver() -> None:
    spec = NodeSpec(name="n", gpus=8, product="NVIDIA-A100-SXM4-80GB", driver="550.127.05", cuda="12.4")
    table = outputs.nvidia_smi_table("n", spec)
    assert "Driver Version: 550.127.05" in table and "CUDA Version: 12.4" in table
    rows = [ln for ln in table.splitlines() if "NVIDIA A100-SXM4-80GB" in ln or "NVIDIA A100 SXM4 80GB" in ln]
    assert len(rows) == 8


def test_gpu_uuids_are_stable_and_distinct() -> None:
    listing = outputs.nvidia_smi_list("node-a", NodeSpec(name="node-a", gpus=4)).splitlines()
    uuids = [ln.split("UUID: ")[1].rstrip(")") for ln in listing]
    assert len(set(uuids)) == 4
    assert uuids[0] == outputs.gpu_uuid("node-a", 0) != outputs.gpu_uuid("node-b", 0)


def test_simulated_outputs_parse_with_the_suite_parsers_and_match_the_scenario() -> None:
    from gpu_conformance import nvsmi, probe
    from gpu_conformance.sim import scenario

    for name in scenario.bundled():
        for node, spec in scenario.load(scenario.resolve(name)).expanded():
            if spec.gpus == 0:
                continue
            smi = outputs.behaviour("nvidia-smi", node, spec)
            if smi.exit_code == 0:
                facts = nvsmi.parse(smi.output or "")
                assert (facts.driver_version, facts.cuda_version) == (spec.driver, spec.cuda), node
                assert len(facts.gpus) == outputs.visible_gpus(spec, 1), node
            seen = probe.parse_probe(outputs.probe_json(node, spec, requested=spec.gpus))
            assert [g.uuid for g in seen.gpus] == [outputs.gpu_uuid(node, i) for i in range(spec.gpus)], node
            assert seen.driver_version == spec.driver and seen.cuda_driver_version == spec.cuda


def test_probe_output_carries_the_scenarios_memory_errors_on_the_named_gpus() -> None:
    from gpu_conformance import versions
    from gpu_conformance.sim.scenario import MemoryErrors

    spec = NodeSpec(name="n", gpus=8, memory_errors=MemoryErrors(gpus=[3], volatile_uncorrected=2, row_remap_failure=True))
    facts = probe.parse_probe(outputs.behaviour("nvml-probe", "n", spec).output or "")
    assert len(facts.gpus) == 8  # the suite's probe pod holds every allocatable GPU
    problems = versions.memory_problems(facts)
    assert [p.split(":")[0].split(" (")[0] for p in problems] == ["GPU 3", "GPU 3"]
    healthy = probe.parse_probe(outputs.behaviour("nvml-probe", "n", NodeSpec(name="n", gpus=8)).output or "")
    assert versions.memory_problems(healthy) == []

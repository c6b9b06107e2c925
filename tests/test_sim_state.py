"""Simulated-cluster state handling that must never hurt the user's files or trust a half start."""

import json
from pathlib import Path

import pytest

from gpu_conformance.errors import SimError
from gpu_conformance.sim.control_plane import MARKER, SimCluster


def test_down_refuses_to_delete_a_directory_it_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(SimError, match="was not created by `gpu-conformance sim up`"):
        SimCluster(precious).down()
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_half_started_cluster_is_not_up(tmp_path: Path) -> None:
    state_dir = tmp_path / "sim"
    state_dir.mkdir()
    (state_dir / MARKER).write_text("")
    # `sim up` was killed after starting etcd only: the state names one process and is not complete.
    (state_dir / "state.json").write_text(json.dumps({
        "ports": {"etcd": 1}, "pids": {"etcd": 1}, "binaries": {"etcd": "/sbin/init"},
        "scenario_digest": "x", "scenario_names": ["healthy"], "kubernetes_version": "1.36.3", "complete": False,
    }))
    sim = SimCluster(state_dir)
    assert not sim.is_up()
    assert sim.status()["up"] is False


def test_down_removes_a_directory_it_created(tmp_path: Path) -> None:
    state_dir = tmp_path / "sim"
    state_dir.mkdir()
    (state_dir / MARKER).write_text("")
    SimCluster(state_dir).down(quiet=True)
    assert not state_dir.exists()


def test_an_empty_directory_may_be_used(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    SimCluster(empty).down(quiet=True)
    assert not empty.exists()

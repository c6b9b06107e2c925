"""gpu_conformance.sim.matrix.run_child, which `sim bench` and the detection matrix run the suite with: a
SIGTERM to the parent (a cancelled CI job) reaches the child once, and the child's own cleanup runs
before the parent ends; the child's exit code, output and peak RSS come back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from gpu_conformance.sim.matrix import run_child
from gpu_conformance.waiting import wait_for

# A stand-in for `gpu-conformance run`: says it is ready, and on SIGTERM writes a mark (its cleanup) and exits 3.
CHILD = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    def stop(*_):
        Path(sys.argv[1]).write_text("cleaned up")
        sys.exit(3)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    time.sleep(120)
""")

# The parent as the CLI runs it: SIGTERM unwinds like Ctrl-C.
PARENT = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from gpu_conformance.cli import _terminate_as_interrupt
    from gpu_conformance.sim.matrix import run_child
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    log, child, mark = sys.argv[1:4]
    try:
        run_child([sys.executable, child, mark], Path(log), timeout=300, own_session=True)
    except KeyboardInterrupt:
        print("parent interrupted", flush=True)
        sys.exit(3)
""")


def test_a_terminated_parent_lets_its_child_clean_up(tmp_path: Path) -> None:
    child, log, mark = tmp_path / "child.py", tmp_path / "suite.log", tmp_path / "mark"
    child.write_text(CHILD)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(log), str(child), str(mark)],
                              stdout=subprocess.PIPE, text=True)
    wait_for(lambda: log.read_text() if log.is_file() else "", lambda text: "ready" in text,
             what="the child to start", timeout=60)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == 3 and "parent interrupted" in out
    assert mark.read_text() == "cleaned up"


def test_the_childs_code_output_and_memory_come_back(tmp_path: Path) -> None:
    script = "import sys; data = bytearray(64 * 2**20); print('out'); print('err', file=sys.stderr); sys.exit(1)"
    run = run_child([sys.executable, "-c", script], tmp_path / "log", timeout=60)
    assert run.code == 1
    assert "out" in run.output and "err" in run.output
    assert run.peak_rss_mib >= 64


def test_a_child_past_its_timeout_is_terminated(tmp_path: Path) -> None:
    child, mark = tmp_path / "child.py", tmp_path / "mark"
    child.write_text(CHILD)
    run = run_child([sys.executable, str(child), str(mark)], tmp_path / "log", timeout=3)
    assert run.code == 3 and mark.read_text() == "cleaned up"
    assert not any(str(child) in _cmdline(pid) for pid in _pids())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

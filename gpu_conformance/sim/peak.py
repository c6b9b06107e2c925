"""Run a Python module as `python -m` would and write this process's peak RSS (MiB) to a file at exit.

`python -m gpu_conformance.sim.peak OUT MODULE [ARGS...]`. The benchmark measures its children so: the
resource usage a parent reads after `wait4` is no good here, because Linux's exec keeps the high-water
mark of the memory it replaces, and a child started by vfork (as Python starts them) replaces its
parent's: a 16 MiB child of a 430 MiB parent reports 432 MiB. The kernel's VmHWM of the process's own
memory, read at exit, is the child's alone.
"""

from __future__ import annotations

import atexit
import re
import runpy
import sys
from pathlib import Path


def own_peak_mib() -> float | None:
    """The high-water mark of this process's resident memory (VmHWM), in MiB; None without /proc."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def _write(out: Path) -> None:
    peak = own_peak_mib()
    if peak is not None:
        out.write_text(f"{peak:.1f}\n")


def read(out: Path) -> float | None:
    """The peak a run wrote (None where it wrote none: killed, or no /proc)."""
    try:
        return float(out.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m gpu_conformance.sim.peak OUT MODULE [ARGS...]")
    out, module = Path(sys.argv[1]), sys.argv[2]
    out.unlink(missing_ok=True)
    atexit.register(_write, out)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

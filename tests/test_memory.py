"""gpu_conformance.runner.release_free_memory: pages the allocator holds free go back to the system."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter: 60 MB of malloc'd buffers (bytes over pymalloc's 512), every 50th kept so the
# heap cannot shrink from its top; the RSS (kB) after freeing the rest, then after the release.
CHILD = textwrap.dedent("""
    import re
    from gpu_conformance.runner import release_free_memory
    def rss():
        return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    chunks = [bytes(1000) + bytes([i % 251]) for i in range(60_000)]
    kept = chunks[::50]
    del chunks
    before = rss()
    release_free_memory()
    print(before, rss(), len(kept))
""")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    before, after, kept = map(int, out.split())
    assert kept == 1200
    assert before - after > 40_000, (before, after)  # of the ~59 MB freed, most was still resident before

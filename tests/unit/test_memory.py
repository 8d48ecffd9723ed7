"""Freed arrays go back to the system: after a large block was freed, glibc would otherwise serve every
smaller array from a heap that never shrinks below a live one (``engine.memory``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20

PROBE = """
import sys, threading
import numpy as np
from engine.tick_engine import Engine
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
if sys.argv[1] == 'engine':
    Engine(['sma_20'], 60_000_000_000, capacity=2, depth=10)  # what every run builds
def work():  # on a thread of its own, as the engine's: glibc gives it an arena of its own
    big = np.ones(16 * 2**20 // 8)
    del big  # freeing a 16 MiB block: glibc now serves anything smaller from the arena
    before = rss()
    arrays = [np.ones(512 * 1024 // 8 * (i % 5 + 1)) for i in range(100)]  # 150 MiB of transients
    kept = np.ones(300_000 // 8)  # one array that stays, allocated after them
    del arrays
    print(rss() - before, len(kept))
thread = threading.Thread(target=work)
thread.start()
thread.join()
"""


def retained(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[0])


def test_an_engine_process_gives_freed_arrays_back() -> None:
    assert retained("plain") > 100 * MIB  # the allocator's own behaviour, which the engine corrects
    assert retained("engine") < 8 * MIB

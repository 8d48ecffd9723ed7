"""Memory goes back to the system (``engine.memory``): freed arrays (after a large block was freed, glibc
would otherwise serve every smaller array from a heap that never shrinks below a live one), and LLVM's
code pages once the kernels are loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.memory import compiler_mappings

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


RELEASE = """
import json, sys
import numpy as np
from engine.memory import compiler_mappings, release_compiler_pages
from engine.history import BarHistory
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
def resident():
    return {(start, perms): (res, private) for start, _, perms, res, private in compiler_mappings()}
if sys.argv[1] == 'engine':
    from engine.tick_engine import Engine
    from engine.ticks import make_ticks
    engine = Engine(['sma_3'], 60, capacity=2, depth=8)
    engine.add_symbol('A')
    ticks = make_ticks(2)
    ticks['ts'] = [0, 60]
    ticks['price'] = [1.0, 2.0]
    ticks['size'] = 1.0
    engine.ingest(ticks)  # the first batch: the engine gives LLVM's pages back itself
    print(json.dumps({'after': list(resident().values()), 'bars': engine.stats.bars}))
    raise SystemExit
BarHistory(1, 1).append(0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)  # a kernel loaded: numba's target and LLVM set up
before, rss_before = resident(), rss()
released = release_compiler_pages()
after, rss_after = resident(), rss()
h = BarHistory(2, 3)
h.append(1, 5, 1.0, 2.0, 0.5, 1.5, 7.0)  # loaded kernels still run
import numba
@numba.njit(cache=False)
def triangle(n):  # and a fresh compile still works, LLVM's pages read back from the file
    total = 0
    for i in range(n + 1):
        total += i
    return total
print(json.dumps({'before': list(before.values()), 'after': list(after.values()), 'released': released,
                  'dropped': rss_before - rss_after, 'count': h.count.tolist(), 'triangle': triangle(100)}))
"""


def run_release(mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", RELEASE, mode], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_llvm_code_pages_are_given_back_and_compiling_still_works() -> None:
    r = run_release("direct")
    loaded = sum(res for res, _ in r["before"])
    assert loaded > 20 * MIB  # LLVM's code stays resident after loading a kernel: what is given back
    assert r["released"] > 20 * MIB and r["dropped"] > 20 * MIB
    for (res_before, private), (res_after, _) in zip(r["before"], r["after"], strict=True):
        if private:  # relocated data (a private copy): kept as it was, its contents are not the file's
            assert res_after == res_before
    assert sum(res for res, private in r["after"] if not private) < 2 * MIB
    assert r["count"] == [0, 1] and r["triangle"] == 5050


def test_an_engine_gives_llvm_pages_back_after_its_first_batch() -> None:
    r = run_release("engine")
    assert r["bars"] == 1
    assert sum(res for res, private in r["after"] if not private) < 2 * MIB


def test_releasing_without_llvm_loaded_does_nothing_and_loads_nothing() -> None:
    code = ("import sys\nfrom engine.memory import release_compiler_pages\n"
            "print(release_compiler_pages(), 'llvmlite' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]


def test_compiler_mappings_reads_each_mapping_of_llvm(tmp_path: Path) -> None:
    smaps = tmp_path / "smaps"
    smaps.write_text(
        "7f0000000000-7f0000003000 r--p 00000000 08:01 42   /venv/llvmlite/binding/libllvmlite.so\n"
        "Size:                 12 kB\nRss:                   8 kB\nAnonymous:             0 kB\n"
        "7f0000003000-7f0000004000 r--p 00003000 08:01 42   /venv/llvmlite/binding/libllvmlite.so\n"
        "Rss:                   4 kB\nAnonymous:             4 kB\n"
        "7f0000004000-7f0000005000 rw-p 00004000 08:01 42   /venv/llvmlite/binding/libllvmlite.so\n"
        "Rss:                   4 kB\nAnonymous:             4 kB\nVmFlags: rd wr mr mw me ac\n"
        "7f0000005000-7f0000006000 r-xp 00000000 08:01 43   /usr/lib/libc.so.6\n"
        "Rss:                   4 kB\nAnonymous:             0 kB\n"
        "7f0000006000-7f0000007000 rw-p 00000000 00:00 0\nRss:                   4 kB\nAnonymous:  4 kB\n",
        encoding="ascii")
    assert compiler_mappings(str(smaps)) == [
        (0x7F0000000000, 0x7F0000003000, "r--p", 8192, 0),
        (0x7F0000003000, 0x7F0000004000, "r--p", 4096, 4096),
        (0x7F0000004000, 0x7F0000005000, "rw-p", 4096, 4096),
    ]
    assert compiler_mappings(str(tmp_path / "missing")) == []

"""Memory given back to the system: freed arrays (the allocator's mmap threshold pinned at its default)
and LLVM's code once the engine's kernels are loaded.

glibc serves a large allocation (a numpy array of 128 KiB or more) with its own ``mmap`` and unmaps it
when it is freed, but each time such a block is freed it raises that threshold to the block's size (up
to 32 MiB). After the history at start (many transient arrays of a few MiB: the sim's bars, the ticks
that rebuild them), every later array below that size comes from the heap, and a heap only shrinks
from its top: the console at 1,000 symbols kept ~70 MiB of freed arrays resident for good (measured
with ``malloc_trim``, which gave them back). Pinning the threshold (``mallopt(M_MMAP_THRESHOLD)``, which
also turns the raising off) keeps large arrays in their own mappings, so freeing one returns it.

Only glibc has this behaviour and this call; elsewhere (macOS, musl) nothing is done.

LLVM (llvmlite's shared library, 179 MB on disk) is code numba runs to compile a kernel or to load one
from its cache, and nothing else: a loaded kernel is machine code called directly. Loading the engine's
kernels leaves ~70 MB of it resident (measured at 1,000 symbols: 35 MB when the library is loaded and
runs its static initialisers, 27 MB when numba compiles its runtime's reference counting from IR at the
first load, ~1 MB per kernel), a third of the engine's RSS, for good. :func:`release_compiler_pages`
(called by the engine after its first batch) drops them from the process: ``madvise(MADV_DONTNEED)`` on
the library's read-only file mappings that hold no private page (Linux's madvise(2): such pages are read
again from the file on the next access), so a later compile runs as before, its pages faulted back in
from the page cache. Writable mappings, and read-only ones with a private copy in them (relocated data),
are never touched: dropping those would lose their contents.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024
"""glibc's own default: arrays from this size get their own mapping."""

MADV_DONTNEED = 4  # from Linux's asm-generic/mman-common.h
COMPILER_LIBRARIES = ("libllvmlite", "libLLVM")
"""Names the shared libraries of LLVM start with: llvmlite's own (wheels link LLVM into it statically) and
LLVM's when a distribution links it dynamically."""

_done = False


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (once per process); whether it was done (False off glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        mallopt = libc.mallopt if libc is not None else None
    except AttributeError:  # not glibc (musl has no mallopt)
        return False
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _done


def compiler_mappings(smaps: str = "/proc/self/smaps") -> list[tuple[int, int, str, int, int]]:
    """(start, end, permissions, resident bytes, private anonymous bytes) of every mapping of LLVM's
    shared library in ``smaps``; empty where it cannot be read."""
    out: list[tuple[int, int, str, int, int]] = []
    current: list[int | str] | None = None
    try:
        with open(smaps, encoding="ascii", errors="replace") as fh:
            for line in fh:
                head = line.split(maxsplit=5)
                if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                    path = head[5].strip() if len(head) > 5 else ""
                    current = None
                    if os.path.basename(path).startswith(COMPILER_LIBRARIES):
                        start, end = (int(x, 16) for x in head[0].split("-"))
                        current = [start, end, head[1], 0, 0]
                        out.append(current)  # type: ignore[arg-type]  # filled in below, then frozen
                elif current is not None and head[0] in ("Rss:", "Anonymous:"):
                    current[3 if head[0] == "Rss:" else 4] = int(head[1]) * 1024
    except OSError:
        return []
    return [(int(a), int(b), str(p), int(r), int(n)) for a, b, p, r, n in out]


def release_compiler_pages() -> int:
    """Drop LLVM's resident code pages from this process (see the module docstring): the bytes released;
    0 off Linux, or when numba's LLVM is not loaded (never loads it)."""
    if not sys.platform.startswith("linux") or "llvmlite.binding" not in sys.modules:
        return 0
    libc = _libc()
    if libc is None or not hasattr(libc, "madvise"):
        return 0
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    released = 0
    for start, end, perms, resident, private in compiler_mappings():
        if "w" in perms or private or not resident:
            continue  # writable or holding private copies: their contents are not the file's
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            released += resident
    return released

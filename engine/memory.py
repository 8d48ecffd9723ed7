"""Freed memory goes back to the system: the allocator's mmap threshold is pinned at its default.

glibc serves a large allocation (a numpy array of 128 KiB or more) with its own ``mmap`` and unmaps it
when it is freed, but each time such a block is freed it raises that threshold to the block's size (up
to 32 MiB). After the history at start (many transient arrays of a few MiB: the sim's bars, the ticks
that rebuild them), every later array below that size comes from the heap, and a heap only shrinks
from its top: the console at 1,000 symbols kept ~70 MiB of freed arrays resident for good (measured
with ``malloc_trim``, which gave them back). Pinning the threshold (``mallopt(M_MMAP_THRESHOLD)``, which
also turns the raising off) keeps large arrays in their own mappings, so freeing one returns it.

Only glibc has this behaviour and this call; elsewhere (macOS, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024
"""glibc's own default: arrays from this size get their own mapping."""

_done = False


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (once per process); whether it was done (False off glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _done

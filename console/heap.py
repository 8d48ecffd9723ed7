"""Heap pages freed during start-up given back to the system, while the console settles.

Start-up allocates and frees a great deal on both the event loop and the runtime's thread (imports, the
history at start, the first frames' catch-up); glibc keeps the freed pages of its arenas resident until
``malloc_trim`` returns them (a heap otherwise shrinks only from its top). At 1,000 symbols that is
~8 MB of the console's RSS. Large arrays are unmapped when freed anyway (``engine.memory``); this is
the rest. The app runs the trim in a thread (ctypes lets go of the GIL), off the event loop. Only glibc
has the call; elsewhere nothing is done.
"""

from __future__ import annotations

import sys

FIRST, LAST = 8, 1024
"""Frames at which the console trims: 8, 16, 32, … 1024 (eight trims in all, the last after about two
minutes at ``ui.fps`` 10). Start-up frees in waves (the history at start, the catch-up frames behind it,
which take longer the busier the machine), so no one frame count catches them all; after the last
the steady state allocates what it frees."""


def due(frame: int) -> bool:
    """Whether the console trims after frame ``frame`` (counted from 1)."""
    return FIRST <= frame <= LAST and frame & (frame - 1) == 0


def give_back() -> bool:
    """Return the arenas' free pages to the system; whether any were (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: the console's import, before its first frame, stays light
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))

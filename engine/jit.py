"""The one place numba is configured, so every kernel is compiled and cached the same way.

numba's on-disk cache is keyed by the stat of the file that defines a function, not by the files of
the functions it calls. The indicator dispatcher calls kernels from many modules, so a change to any
of them would leave a stale dispatcher in the cache. Keying the cache directory by a hash of every
kernel source removes that hazard and also keeps the cache out of read-only install directories.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numba
import platformdirs

F = TypeVar("F", bound=Callable[..., Any])


def _source_digest() -> str:
    """A hash of where the engine is and of every module that defines kernels (those importing ``njit``),
    or that kernels are generated from or read constants of (every module of ``engine.indicators``)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(numba.__version__.encode())
    # numba's cache index is keyed by each source file's path, so two checkouts of the same source must
    # not share a directory: the second would find the "compiled" marker and then compile at run time.
    h.update(str(root).encode())
    for path in sorted(root.rglob("*.py")):
        text = path.read_bytes()
        if b"engine.jit import njit" in text or path.parent.name == "indicators":
            h.update(str(path.relative_to(root)).encode())
            h.update(text)
    return h.hexdigest()[:16]


def cache_dir() -> str:
    base = os.environ.get("TICKDECK_NUMBA_CACHE") or platformdirs.user_cache_dir("tickdeck")
    return str(Path(base) / f"numba-{_source_digest()}")


numba.config.CACHE_DIR = cache_dir()  # type: ignore[attr-defined]  # set at runtime by numba.config

# fastmath is off on purpose: TA-Lib parity needs IEEE semantics (NaN checks, no reassociation).
_njit = numba.njit(cache=True, nogil=True)


def njit(fn: F) -> F:
    """Compile ``fn`` with the house settings; typed as ``fn`` itself so callers keep its signature."""
    return cast(F, _njit(fn))


# Without numba's reference counting: for functions that allocate nothing (the indicator step functions
# and their helpers, ``engine.indicators.kernels``). With it, every call that passes an array counts the
# array's references up and down with atomic instructions that the compiler cannot remove across a
# call: measured here, an EMA update took 110 ns a call with them and 4 ns without (MACD, three EMAs:
# 264 ns and 4 ns). ``_nrt`` is numba's own option for this (its code generator without the runtime's
# reference counts); a function compiled with it that allocated would fail to compile, not misbehave.
_njit_no_refcounts = numba.njit(cache=True, nogil=True, _nrt=False)  # type: ignore[call-overload]


def njit_no_refcounts(fn: F) -> F:
    """:func:`njit` for a function that allocates no array (see ``_njit_no_refcounts``)."""
    return cast(F, _njit_no_refcounts(fn))

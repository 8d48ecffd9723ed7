"""The one place numba is configured, so every kernel is compiled and cached the same way.

numba's on-disk cache is keyed by the stat of the file that defines a function, not by the files of
the functions it calls. The indicator dispatcher calls kernels from many modules, so a change to any
of them would leave a stale dispatcher in the cache. Keying the cache directory by a hash of every
kernel source removes that hazard and also keeps the cache out of read-only install directories.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba
import platformdirs

_KERNEL_DIRS = ("indicators", "indicators/kernels", "signals", ".")


def _source_digest() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(numba.__version__.encode())
    for sub in _KERNEL_DIRS:
        for path in sorted((root / sub).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _cache_dir() -> str:
    base = os.environ.get("TICKDECK_NUMBA_CACHE") or platformdirs.user_cache_dir("tickdeck")
    return str(Path(base) / f"numba-{_source_digest()}")


numba.config.CACHE_DIR = _cache_dir()

# fastmath is off on purpose: TA-Lib parity needs IEEE semantics (NaN checks, no reassociation).
njit = numba.njit(cache=True, nogil=True)

"""Writing a file all or nothing: readers (and a crash) see the old file or the new one, never half.

Shared by every command that writes a result (indicators, backtest CSVs) and by the console's state
file, which the same rule protects.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def write_atomically(target: Path, write: Callable[[TextIO], None]) -> None:
    """Call ``write`` on a temporary file next to ``target``, fsync it, then rename it into place.

    The new file keeps the old one's permissions (or the umask's for a new file). On any error the
    temporary file is removed and ``target`` is untouched; OSError propagates for the caller to word.
    """
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

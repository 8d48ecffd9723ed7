"""Writing a file all or nothing: readers (and a crash) see the old file or the new one, never half.

Shared by every command that writes a result (indicators, backtest CSVs) and by the console's state
file, which the same rule protects.

The process's umask (the mode a new file gets) is read once, when this module is imported: the only
portable way to read it, ``os.umask(0)`` then ``os.umask(old)``, *sets* it for the whole process for a
moment, and a file another thread creates in that moment (a recording, a sink's log) would get mode
0666. Linux reports it in ``/proc/self/status`` (``Umask:``), which is read instead where it exists.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def _read_umask() -> int:
    """The process's umask, without changing it where the platform allows (Linux 4.7+)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)  # elsewhere: once, at import, before this module's writers exist
    os.umask(umask)
    return umask


UMASK = _read_umask()
"""The umask at import: a program that changes its umask later must not rely on this module for it."""


def write_atomically(target: Path, write: Callable[[TextIO], None]) -> None:
    """Call ``write`` on a temporary file next to ``target``, fsync it, rename it into place, then fsync
    the directory so that the rename itself survives a power cut.

    The new file keeps the old one's permissions (or the umask's for a new file). On any error the
    temporary file is removed and ``target`` is untouched; OSError propagates for the caller to word.
    """
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~UMASK
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
    fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename, a new file) to disk. Where a directory cannot be opened
    (Windows), or its file system refuses to sync one, there is nothing more a program can do: skipped."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dfd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)

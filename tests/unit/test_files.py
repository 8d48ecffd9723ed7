"""``engine.files.write_atomically``: the umask is never flipped while threads run, and the rename is
made durable by an fsync of the directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import files
from engine.files import UMASK, write_atomically


def _text(fh: Any) -> None:
    fh.write("x")


def test_the_umask_is_read_once_at_import_and_never_set_again(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.umask(0))"],  # inherits ours
                           capture_output=True, text=True, check=True)
    real = int(child.stdout)
    assert real == UMASK

    def forbidden(mask: int) -> int:
        raise AssertionError(f"os.umask({mask:o}) called while other threads may create files")

    monkeypatch.setattr(os, "umask", forbidden)
    target = tmp_path / "new.txt"
    write_atomically(target, _text)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~real
    target.chmod(0o600)
    write_atomically(target, _text)  # an existing file keeps its own mode
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


_SIDE_BY_SIDE = """
import os, stat, sys, threading
from pathlib import Path
os.umask(0o022)  # before engine.files reads it: a umask that masks group and other write
from engine.files import write_atomically

root = Path(sys.argv[1])
expected = 0o644
stop = threading.Event()
bad = []

def create():
    k = 0
    while not stop.is_set() and k < 200_000:
        path = root / "other" / f"{k}.txt"
        with open(path, "w"):
            pass
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != expected:
            bad.append((path.name, mode))
        path.unlink()
        k += 1

def text(fh):
    fh.write("x")

(root / "other").mkdir()
(root / "mine").mkdir()
creator = threading.Thread(target=create)
creator.start()
try:
    for k in range(3000):
        write_atomically(root / "mine" / f"{k % 10}.txt", text)
        (root / "mine" / f"{k % 10}.txt").unlink()
finally:
    stop.set()
    creator.join(60)
assert not creator.is_alive()
print(len(bad), bad[0] if bad else "")
"""


def test_files_other_threads_create_meanwhile_get_the_umask_mode(tmp_path: Path) -> None:
    """A writer and a thread creating files run side by side: every file gets the umask's mode. With the
    umask flipped to 0 for each read, files created in that moment came out group- and world-writable.
    Run in a child with umask 022 set before the import, whatever the umask of the machine running it."""
    child = subprocess.run([sys.executable, "-c", _SIDE_BY_SIDE, str(tmp_path)], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr
    assert child.stdout.split(maxsplit=1)[0] == "0", f"files got another mode than 644: {child.stdout}"


def test_the_directory_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(info.st_mode) else "fsync-file", info.st_ino))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        events.append(("replace", Path(dst).name))

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    target = tmp_path / "state.json"
    write_atomically(target, _text)
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir"]
    assert events[-1][1] == tmp_path.stat().st_ino
    assert target.read_text() == "x"


def test_a_failed_write_leaves_no_temporary_file_and_no_target(tmp_path: Path) -> None:
    def broken(fh: Any) -> None:
        fh.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(tmp_path / "out.csv", broken)
    assert list(tmp_path.iterdir()) == []

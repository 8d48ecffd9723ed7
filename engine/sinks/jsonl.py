"""JSON lines sinks: one signal per line (``Signal.to_dict()``), to a file or to standard output.

Both write from their own thread, so ``deliver`` never blocks the event loop (a slow disk, an ``fsync``,
a reader of stdout that stops reading). Each line is written as soon as the writer takes it, with one
``os.write`` of the whole encoded line to a file descriptor opened with ``O_APPEND``: there is no buffer in
this process to flush, and a crash (even SIGKILL) leaves whole lines only, unless the kernel itself stops
mid-write (power loss, a full disk). For that case:

- on ``start()`` a file whose last byte is not a newline (a run that stopped mid-write) is cut back to
  its last complete line, with a warning naming the file, the bytes removed and how they began, so the
  next record starts on a fresh line and every line of the file parses;
- a write that fails part-way is cut back the same way before the next line is written.

``fsync = true`` makes every line durable before ``drain`` returns: the writer calls ``fsync`` after each
run of lines it took from its queue (one per line when signals come one at a time, fewer in a burst).

Rotation is by size, as ``logging.handlers.RotatingFileHandler`` does it: before a line would take the
file past ``max_bytes`` (and the file is not empty), ``path.{n-1}`` becomes ``path.{n}`` ... ``path``
becomes ``path.1`` (the oldest, ``path.{backups}``, is overwritten), and a new ``path`` is started; with
``backups = 0`` the old file is removed. A line is never split across files.

The queue between ``deliver`` and the writer holds at most ``max_queue`` lines; beyond that a line is
dropped, counted (``dropped``) and logged once, so a reader that stopped reading cannot exhaust memory.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import errno
import json
import logging
import os
import select
import threading
import time
from pathlib import Path
from typing import Any

from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter, Sink
from engine.sinks.defaults import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES

log = logging.getLogger("tickdeck.sinks")

_SCAN = 64 * 1024  # bytes read at a time when looking back for the last newline
_POLL_S = 0.005  # how often drain and close look at the writer


def encode(signal: Signal) -> bytes:
    """One signal as one JSON line (UTF-8, newline-terminated, strict JSON: no NaN)."""
    text = json.dumps(signal.to_dict(), separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` with one ``os.write`` (continuing after a short write, waiting on a non-blocking fd)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


class LineSink(Sink):
    """A sink that writes one encoded line per signal from its own writer thread (see the module
    docstring). Subclasses open, write and release their target; this class queues and counts."""

    max_queue = 100_000

    def __init__(self, name: str, filter: SignalFilter = ANY) -> None:
        super().__init__(name, filter)
        self._cond = threading.Condition()
        self._pending: collections.deque[bytes] = collections.deque()
        self._in_flight = 0  # lines the writer has taken and not finished
        self._closing = False
        self._thread: threading.Thread | None = None
        self._logged: set[str] = set()
        self.written = 0
        self.dropped = 0
        self.errors = 0

    # --- the target, implemented by subclasses (``write_line`` and ``after_batch`` on the writer) ----
    @abc.abstractmethod
    def open(self) -> None:
        """Open the target; raise ``OSError`` when it cannot be written."""

    @abc.abstractmethod
    def write_line(self, line: bytes) -> bool:
        """Write one whole line: True when written, False when dropped on purpose (counted as
        ``dropped`` by the subclass); raise ``OSError`` when it could not be written."""

    def after_batch(self) -> None:
        """Called after each run of lines taken from the queue (e.g. ``fsync``)."""

    def release(self) -> None:
        """Close the target, once the writer has stopped."""

    # --- the sink ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"sink {self.name} is already started")
        self.open()
        self._thread = threading.Thread(target=self._serve, name=f"tickdeck-sink-{self.name}", daemon=True)
        self._thread.start()

    def enqueue(self, signal: Signal) -> None:
        line = encode(signal)
        with self._cond:
            if self._thread is None or self._closing:
                self.dropped += 1
                self.log_once("closed", logging.WARNING, "sink %s is not running; a signal was dropped "
                              "(counted in its stats)", self.name)
                return
            if len(self._pending) >= self.max_queue:
                self.dropped += 1
                self.log_once("full", logging.ERROR, "sink %s is %d lines behind; dropping signals until "
                              "it catches up (counted in its stats)", self.name, self.max_queue)
                return
            self._pending.append(line)
            self._cond.notify_all()

    def _idle(self) -> bool:
        return not self._pending and not self._in_flight

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every queued line is written (or ``timeout``); True when nothing is left."""
        with self._cond:
            return self._cond.wait_for(self._idle, timeout)

    async def drain(self, timeout: float) -> bool:
        # polled, not waited for in a thread: a drain is cancelled at once, and holds no thread
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._idle():
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(_POLL_S, left))

    async def close(self, timeout: float = 2.0) -> None:
        thread = self._thread
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        if thread.is_alive():  # stuck in a write (a reader that never reads): leave it the target
            with self._cond:
                left = len(self._pending) + self._in_flight
            log.error("sink %s: the writer did not finish within %.1f s; %d lines may be lost",
                      self.name, timeout, left)
            return
        self.release()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._pending) + self._in_flight
        return {**super().stats(), "written": self.written, "pending": pending, "dropped": self.dropped,
                "errors": self.errors}

    def log_once(self, key: str, level: int, message: str, *args: object) -> None:
        """Log ``message`` the first time ``key`` comes up: a failing target must not flood the log."""
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, message, *args)

    # --- the writer thread ---------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._in_flight = len(batch)
            written = 0
            for line in batch:
                try:
                    written += self.write_line(line)
                except OSError as exc:
                    self._failed(exc)
                except Exception:  # a bug: count it, say it once, keep the writer alive
                    self.errors += 1
                    if "bug" not in self._logged:
                        self._logged.add("bug")
                        log.exception("sink %s: cannot write a signal (logged once)", self.name)
            if written:
                try:
                    self.after_batch()
                except OSError as exc:
                    self._failed(exc)
            with self._cond:
                self.written += written
                self._in_flight = 0
                self._cond.notify_all()

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        self.log_once(f"errno-{exc.errno}", logging.ERROR, "sink %s: cannot write a signal: %s "
                      "(logged once; counted in its stats)", self.name, exc)


class JsonlSink(LineSink):
    """Signals appended to a file as JSON lines, rotated by size (see the module docstring)."""

    type = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False,
                 max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 name: str | None = None, filter: SignalFilter = ANY) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be at least 0, got {backups}")
        self.path = Path(path)
        super().__init__(name or f"jsonl:{self.path}", filter)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.backups = backups
        self.rotations = 0
        self.fsyncs = 0
        self.repaired_bytes = 0  # removed from a partial last line (at start, or after a failed write)
        self._fd = -1
        self._size = 0
        self._check_tail = False

    def backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def open(self) -> None:
        self._fd = self._open_fd()
        self._repair()

    def _open_fd(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _repair(self) -> None:
        """Cut a partial last line back to the last newline, so the next record starts on a fresh line."""
        size = os.fstat(self._fd).st_size
        self._size = size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        keep, pos = 0, size
        while pos > 0:
            start = max(0, pos - _SCAN)
            at = os.pread(self._fd, pos - start, start).rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            pos = start
        fragment = os.pread(self._fd, min(size - keep, 80), keep)
        os.ftruncate(self._fd, keep)
        if self.fsync:
            os.fsync(self._fd)
        self._size = keep
        self.repaired_bytes += size - keep
        log.warning("%s ended with a partial line (%d bytes, from a write that never finished); removed "
                    "it so the next signal starts on a fresh line; it began %r", self.path, size - keep,
                    fragment)

    def write_line(self, line: bytes) -> bool:
        if self._fd < 0:  # a rotation could not reopen the file: try again
            self._fd = self._open_fd()
            self._check_tail = True
        if self._check_tail:
            self._repair()
            self._check_tail = False
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        try:
            write_all(self._fd, line)
        except OSError:
            self._check_tail = True  # part of the line may be on disk: cut it before the next one
            raise
        self._size += len(line)
        return True

    def after_batch(self) -> None:
        if self.fsync:
            os.fsync(self._fd)
            self.fsyncs += 1

    def _rotate(self) -> None:
        if self.fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        try:
            if self.backups:
                for n in range(self.backups - 1, 0, -1):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self.backup(n), self.backup(n + 1))
                os.replace(self.path, self.backup(1))
            else:
                self.path.unlink(missing_ok=True)
            self.rotations += 1
        except OSError as exc:
            self.errors += 1
            self.log_once("rotate", logging.ERROR, "sink %s: cannot rotate %s (%s); still appending to it",
                          self.name, self.path, exc)
        finally:
            self._fd = self._open_fd()
            self._size = os.fstat(self._fd).st_size
        if self.fsync:
            _fsync_dir(self.path.parent)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "path": str(self.path), "rotations": self.rotations,
                "fsyncs": self.fsyncs, "repaired_bytes": self.repaired_bytes}


class JsonlStreamSink(LineSink):
    """Signals as JSON lines on an inherited file descriptor (standard output by default). A reader that
    goes away (EPIPE) is logged once; later signals still reach the other sinks and are counted here as
    dropped."""

    type = "stdout"

    def __init__(self, fd: int = 1, name: str = "stdout", filter: SignalFilter = ANY) -> None:
        super().__init__(name, filter)
        self.fd = fd
        self.broken = False

    def open(self) -> None:
        os.fstat(self.fd)  # EBADF when there is no such descriptor (started with stdout closed)

    def write_line(self, line: bytes) -> bool:
        if self.broken:
            with self._cond:  # ``enqueue`` counts drops too, on the event loop
                self.dropped += 1
            return False
        try:
            write_all(self.fd, line)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.broken = True
            with self._cond:
                self.dropped += 1
            log.warning("sink %s: the reader went away; no more signals are written there", self.name)
            return False
        return True


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)

"""The disk buffer of signals the bus has not acknowledged yet: they survive a lost bus and a restart.

A journal, one JSON line per record, appended with one ``os.write`` and fsync'd before the signal is
handed to the bus: ``{"id", "subject", "data"}`` (a signal to publish: its message id, its subject and
the payload, the frame ``engine.sinks.frames`` encodes) or ``{"done": id}`` (the bus stored it, or
already had it). Opening reads the journal back: what was added and not done is published first, in
order. A line cut short by a crash (the last one, without its newline) was never fsync'd whole, so the
signal it held had not been handed to the bus; it is dropped, counted as ``torn`` and logged.

The journal is rewritten (temporary file, fsync, rename: ``engine.files.write_atomically``) with only the
pending records whenever it holds ``compact_after`` done lines, and emptied that way when nothing is
pending, so its size is bounded by ``max_pending`` records plus ``compact_after`` done lines.

Bounds: ``max_pending`` signals. A signal added when that many are pending is not kept: it is counted
(``overflow``) and the start and the end of each such stretch are logged; never silently dropped.

One process uses a journal at a time: ``open`` takes an exclusive ``flock`` on ``<path>.lock`` (the
journal itself is replaced on compaction, the lock file never) and refuses a journal in use.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine.files import write_atomically

log = logging.getLogger("tickdeck.bus")

COMPACT_AFTER = 10_000  # done lines in the journal before it is rewritten with the pending records only


class JournalError(OSError):
    """The journal cannot be used (in use by another process, unreadable, unwritable)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """One signal on its way to the bus."""

    id: str
    subject: str
    data: str


class DiskBuffer:
    """See the module docstring. Not thread-safe: the event loop's only."""

    def __init__(self, path: str | os.PathLike[str], *, max_pending: int = 100_000,
                 compact_after: int = COMPACT_AFTER, fsync: bool = True) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.path = Path(path)
        self.max_pending = max_pending
        self.compact_after = compact_after
        self.fsync = fsync
        self.pending: collections.OrderedDict[str, Pending] = collections.OrderedDict()
        self.added = 0  # signals journalled by this process
        self.done = 0  # of them and of those read back, acknowledged by the bus
        self.overflow = 0  # signals not kept: max_pending were pending
        self.recovered = 0  # pending signals read back at open
        self.torn = 0  # a cut-short last line found at open
        self._stretch = 0  # signals not kept since the buffer last had room
        self._done_lines = 0
        self._fd: int | None = None
        self._lock: int | None = None

    # --- opening and closing ---------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the journal and read back what it holds; ``JournalError`` names the file and the reason."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the bus buffer {self.path}: {exc.strerror or exc}") from None
        import fcntl

        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            self._lock = None
            raise JournalError(f"the bus buffer {self.path} is in use by another process (give each engine "
                              f"its own: bus.buffer, or bus.engine)") from None
        try:
            self._read()
            self._rewrite()  # drops done records and a torn line, so appends start on a line boundary
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            self.close()
            raise JournalError(f"cannot use the bus buffer {self.path}: {exc.strerror or exc}") from None
        if self.recovered:
            log.info("bus buffer %s: %d signals not yet published at the last stop are published first",
                     self.path, self.recovered)

    def close(self) -> None:
        """Release the journal; what is pending stays in it for the next start."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _read(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        if lines[-1]:  # no newline at the end: a write cut short by a crash
            self.torn += 1
            log.warning("bus buffer %s: its last line was cut short (a crash while writing it); that "
                        "signal had not been handed to the bus and is lost", self.path)
        for line in lines[:-1]:
            try:
                record = json.loads(line)
                if "done" in record:
                    self.pending.pop(str(record["done"]), None)
                else:
                    item = Pending(str(record["id"]), str(record["subject"]), str(record["data"]))
                    self.pending[item.id] = item
            except (ValueError, KeyError, TypeError):
                self.torn += 1
                log.warning("bus buffer %s: an unreadable line was skipped", self.path)
        self.recovered = len(self.pending)

    def _rewrite(self) -> None:
        lines = [json.dumps({"id": p.id, "subject": p.subject, "data": p.data}, ensure_ascii=False) + "\n"
                 for p in self.pending.values()]
        if not lines and not self.path.exists():
            return
        write_atomically(self.path, lambda fh: fh.writelines(lines))
        self._done_lines = 0

    # --- the publisher's side ----------------------------------------------------------------------------
    def add(self, items: list[Pending]) -> list[Pending]:
        """Journal ``items`` (not pending already: the publisher sees to it) with one write and one
        fsync; return those kept. Past ``max_pending`` the rest are counted as ``overflow`` and logged
        (the start and the end of each stretch)."""
        room = max(self.max_pending - len(self.pending), 0)
        kept = items[:room]
        lost = len(items) - room if len(items) > room else 0
        if lost:
            if not self._stretch:
                log.error("bus buffer %s is full (%d signals waiting for the bus); newer signals are not "
                          "kept until it has room (counted as overflow)", self.path, self.max_pending)
            self._stretch += lost
            self.overflow += lost
        elif self._stretch and kept:
            log.warning("bus buffer %s has room again; %d signals were not kept meanwhile (%d in all)",
                        self.path, self._stretch, self.overflow)
            self._stretch = 0
        if not kept:
            return []
        text = "".join(json.dumps({"id": p.id, "subject": p.subject, "data": p.data}, ensure_ascii=False)
                       + "\n" for p in kept)
        self._write(text.encode("utf-8"), sync=self.fsync)
        for p in kept:
            self.pending[p.id] = p
        self.added += len(kept)
        return kept

    def mark_done(self, ids: list[str]) -> None:
        """The bus has these; no fsync (a done line lost to a crash means one more publish, which the
        stream's duplicate window absorbs)."""
        ids = [i for i in ids if i in self.pending]
        if not ids:
            return
        for i in ids:
            del self.pending[i]
        self.done += len(ids)
        if not self.pending or self._done_lines + len(ids) >= self.compact_after:
            self._compact()
        else:
            self._write("".join(json.dumps({"done": i}) + "\n" for i in ids).encode("utf-8"), sync=False)
            self._done_lines += len(ids)

    def _compact(self) -> None:
        if self._fd is None:
            return
        try:
            self._rewrite()
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            log.error("bus buffer %s: cannot compact it: %s (it is read back correctly anyway)", self.path,
                      exc.strerror or exc)

    def _write(self, data: bytes, *, sync: bool) -> None:
        if self._fd is None:
            raise JournalError(f"the bus buffer {self.path} is not open")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        if sync:
            os.fsync(self._fd)

    def stats(self) -> dict[str, int | str]:
        return {"buffer": str(self.path), "buffered": len(self.pending), "buffer_max": self.max_pending,
                "overflow": self.overflow, "recovered": self.recovered, "torn": self.torn}

"""Recording the tick stream to a file that a replay (``engine.feeds.replay``) reads back.

The runtime calls a ``Recorder`` with every tick batch (``runtime.taps``). Files hold symbol names,
not slots: slots depend on the order symbols first appeared in one run, names mean the same thing in
any run and any tool. Two formats, chosen by the file's extension:

``.parquet``
    Columns ``symbol`` (string), ``ts``, ``recv`` (int64 ns since the epoch), ``price``, ``size``
    (float64), ``side`` (int8: +1 buy, -1 sell, 0 unknown), ``trade_id`` (int64, -1 when none), written
    in row groups of ``row_group_ticks`` through one ``pyarrow.parquet.ParquetWriter``. Compact and
    fast to write and read, but Parquet puts its index in a footer written by ``close()``: a recording
    that never closed (a crash) cannot be read.
``.jsonl.gz`` / ``.jsonl``
    One JSON object per tick with the same keys, one line each. Every batch is written as whole lines
    and flushed (gzip with a sync flush), so a crash loses at most the batch being written, and the
    replay keeps every complete line of a gzip stream that never got its trailer.

A recording is a new file: the recorder creates it exclusively (``O_EXCL``) and never truncates one that
exists, even one that appeared after the command line checked the name (``--force`` removes an old
recording on purpose, before the run). Appending to an old one was not chosen: Parquet cannot be
appended to, and a JSON-lines recording that ended in a crash (a gzip stream without its trailer, or a
half line) would swallow or garble what came after it.

Writing happens on a background thread fed by a bounded backlog, so a slow disk never blocks the event
loop or the feed. When the backlog is full the batch is left out of the recording and counted
(``dropped_ticks``, a warning the first time and a summary on close): a recording with holes is
reported as such, never passed off as complete.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.ticks import SymbolTable

log = logging.getLogger("tickdeck.record")

FIELDS = ("symbol", "ts", "recv", "price", "size", "side", "trade_id")
SCHEMA = pa.schema([("symbol", pa.string()), ("ts", pa.int64()), ("recv", pa.int64()),
                    ("price", pa.float64()), ("size", pa.float64()), ("side", pa.int8()),
                    ("trade_id", pa.int64())])
_Ns = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class TickLine(msgspec.Struct):
    """One line of a JSON-lines recording; ``side``, ``trade_id`` and ``recv`` may be left out."""

    symbol: str
    ts: _Ns
    price: float
    size: float
    recv: _Ns | None = None
    side: Annotated[int, msgspec.Meta(ge=-1, le=1)] = 0
    trade_id: Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)] = -1


class RecorderError(Exception):
    """The recording cannot be started (unsupported extension, unwritable path)."""


def recording_format(path: Path) -> str:
    """'parquet', 'jsonl.gz' or 'jsonl', from the file name."""
    name = path.name.lower()
    for fmt in ("parquet", "jsonl.gz", "jsonl"):
        if name.endswith("." + fmt):
            return fmt
    raise RecorderError(f"cannot record to {path}: the name must end in .parquet, .jsonl.gz or .jsonl")


class _Sink(Protocol):
    def write(self, ticks: np.ndarray, names: tuple[str, ...]) -> None: ...
    def close(self) -> None: ...


class _JsonlSink:
    def __init__(self, path: Path, compress: bool) -> None:
        self._file = open(path, "xb")  # noqa: SIM115 - closed in close(); "x": never truncate a recording
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0) if compress else None
        self._names: tuple[str, ...] = ()
        self._encoded: list[str] = []

    def write(self, ticks: np.ndarray, names: tuple[str, ...]) -> None:
        data = self._lines(ticks, names).encode()
        if self._gz is not None:
            self._gz.write(data)
            self._gz.flush()  # a sync flush: everything so far decompresses even without the trailer
        else:
            self._file.write(data)  # one write of whole lines
            self._file.flush()

    def _lines(self, ticks: np.ndarray, names: tuple[str, ...]) -> str:
        if names is not self._names:
            self._names = names
            self._encoded = [msgspec.json.encode(n).decode() for n in names]
        enc = self._encoded
        price = _floats_json(ticks["price"])
        size = _floats_json(ticks["size"])
        rows = zip(ticks["sym"].tolist(), ticks["ts"].tolist(), ticks["recv"].tolist(), price, size,
                   ticks["side"].tolist(), ticks["trade_id"].tolist(), strict=True)
        return "".join(f'{{"symbol":{enc[s]},"ts":{t},"recv":{r},"price":{p},"size":{z},"side":{d},'
                       f'"trade_id":{i}}}\n' for s, t, r, p, z, d, i in rows)

    def close(self) -> None:
        try:
            if self._gz is not None:
                self._gz.close()
        finally:
            self._file.close()


def _floats_json(values: np.ndarray) -> list[str]:
    """Shortest round-trip text (``repr``) for every value; JSON has no NaN or infinity, so null."""
    out = list(map(repr, values.tolist()))
    if not np.isfinite(values).all():
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            out[i] = "null"
    return out


class _ParquetSink:
    def __init__(self, path: Path, row_group_ticks: int) -> None:
        self._file = open(path, "xb")  # noqa: SIM115 - closed in close(); pyarrow would truncate a path
        try:
            self._writer = pq.ParquetWriter(self._file, SCHEMA)
        except BaseException:
            self._file.close()
            raise
        self._rows = row_group_ticks
        self._parts: list[pa.Table] = []
        self._buffered = 0

    def write(self, ticks: np.ndarray, names: tuple[str, ...]) -> None:
        sym = pa.array(np.ascontiguousarray(ticks["sym"]), pa.int32())
        symbol = pa.DictionaryArray.from_arrays(sym, pa.array(names, pa.string()), safe=True)
        columns = [symbol.dictionary_decode()]
        columns += [pa.array(np.ascontiguousarray(ticks[f])) for f in FIELDS[1:]]
        self._parts.append(pa.Table.from_arrays(columns, schema=SCHEMA))
        self._buffered += len(ticks)
        if self._buffered >= self._rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write whole row groups; keep the remainder for the next one unless this is the last."""
        table = pa.concat_tables(self._parts)
        full = len(table) if final else len(table) - len(table) % self._rows
        if full:
            self._writer.write_table(table.slice(0, full), row_group_size=self._rows)
        rest = table.slice(full)
        self._parts = [rest] if len(rest) else []
        self._buffered = len(rest)

    def close(self) -> None:
        try:
            if self._parts:
                self._flush(final=True)
        finally:
            try:
                self._writer.close()  # writes the footer; a file object it was given stays open
            finally:
                self._file.close()


@dataclass(frozen=True)
class RecorderStats:
    path: str
    written_ticks: int
    written_batches: int
    dropped_ticks: int  # left out of the recording: backlog full, writer failed, or after close
    dropped_batches: int
    pending_ticks: int  # in the backlog, not yet written
    error: str  # why the writer stopped ('' while it works)


class Recorder:
    """A runtime tap: ``recorder(batch)`` queues a copy of the batch; a thread writes it.

    ``max_pending_ticks`` bounds the backlog (memory); a batch that does not fit is dropped and
    counted, except when the backlog is empty (so one huge batch is never refused for its size alone).
    """

    def __init__(self, path: str | Path, symbols: SymbolTable, max_pending_ticks: int = 1_000_000,
                 row_group_ticks: int = 65_536) -> None:
        if max_pending_ticks < 1 or row_group_ticks < 1:
            raise ValueError("max_pending_ticks and row_group_ticks must be at least 1")
        self.path = Path(path)
        self.format = recording_format(self.path)
        self.symbols = symbols
        self.max_pending_ticks = max_pending_ticks
        self._names: tuple[str, ...] = ()
        self._cond = threading.Condition()
        self._items: deque[tuple[np.ndarray, tuple[str, ...]]] = deque()
        self._pending = 0
        self._closing = False
        self._written = [0, 0]  # ticks, batches
        self._dropped = [0, 0]
        self._error = ""
        try:
            self._sink: _Sink = (_ParquetSink(self.path, row_group_ticks) if self.format == "parquet"
                                 else _JsonlSink(self.path, self.format == "jsonl.gz"))
        except FileExistsError:
            raise RecorderError(f"cannot record to {self.path}: the file exists (a recording is never "
                                "overwritten; --force replaces it)") from None
        except OSError as exc:
            raise RecorderError(f"cannot record to {self.path}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._run, name=f"tickdeck-recorder:{self.path.name}",
                                        daemon=True)
        self._thread.start()

    def __call__(self, batch: np.ndarray) -> None:
        n = len(batch)
        if not n:
            return
        if len(self._names) != len(self.symbols):
            self._names = self.symbols.names  # shared by every queued batch until a symbol is added
        with self._cond:
            if self._closing or self._error or (self._pending and self._pending + n > self.max_pending_ticks):
                first = self._dropped[1] == 0
                self._dropped[0] += n
                self._dropped[1] += 1
                why = ("it is closed" if self._closing else self._error or
                       f"the writer is {self._pending} ticks behind")
            else:
                self._items.append((batch.copy(), self._names))
                self._pending += n
                self._cond.notify()
                return
        if first:
            log.warning("recording %s: %d ticks left out of the recording (%s); counting further drops",
                        self.path, n, why)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    break
                ticks, names = self._items.popleft()
            ok = not self._error
            if ok:
                try:
                    self._sink.write(ticks, names)
                except Exception as exc:  # disk full, file removed...: stop writing, keep counting
                    self._fail(exc)
                    ok = False
            with self._cond:
                self._pending -= len(ticks)
                counts = self._written if ok else self._dropped
                counts[0] += len(ticks)
                counts[1] += 1
        try:
            self._sink.close()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._error = self._error or text
        log.error("recording %s failed: %s; further ticks are counted as dropped", self.path, text)

    @property
    def stats(self) -> RecorderStats:
        with self._cond:
            return RecorderStats(str(self.path), self._written[0], self._written[1], self._dropped[0],
                                 self._dropped[1], self._pending, self._error)

    @property
    def dropped_ticks(self) -> int:
        return self.stats.dropped_ticks

    def close(self) -> RecorderStats:
        """Write everything queued, close the file (Parquet writes its footer) and report."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        stats = self.stats
        if stats.dropped_ticks:
            log.warning("recording %s is incomplete: %d ticks in %d batches were left out", self.path,
                        stats.dropped_ticks, stats.dropped_batches)
        return stats

    async def aclose(self) -> RecorderStats:
        """``close`` without blocking the event loop while the backlog is written."""
        return await asyncio.to_thread(self.close)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading JSON lines back (the replay's side of the format) -----------------------------------

@dataclass
class DecodedLines:
    """The good records of a JSON-lines file as columns, with their file line numbers."""

    columns: dict[str, Any]  # symbol: list[str]; the rest numpy arrays
    lines: np.ndarray  # file line (1-based) of each record
    read: int  # non-blank lines
    bad: list[tuple[str, int, str]]  # (reason, count, first sample)


def _decompress(raw: bytes, path: Path) -> tuple[bytes, bool]:
    """Every byte a gzip file holds (all members), and whether it ended cleanly."""
    out = []
    while raw:
        d = zlib.decompressobj(wbits=31)
        try:
            out.append(d.decompress(raw))
        except zlib.error as exc:
            raise ValueError(f"{path}: not a gzip file, or corrupt ({exc})") from None
        if not d.eof:
            return b"".join(out), False
        raw = d.unused_data.lstrip(b"\0")
    return b"".join(out), True


def read_jsonl(path: Path) -> DecodedLines:
    """Decode a JSON-lines recording (gzip when it starts with the gzip magic); bad lines are counted.

    The whole file is decoded in one msgspec call when every line is good (the usual case); only when
    that fails is it decoded line by line to find and count the bad ones.
    """
    raw = path.read_bytes()
    bad: list[tuple[str, int, str]] = []
    if raw[:2] == b"\x1f\x8b":
        raw, complete = _decompress(raw, path)
        if not complete:
            bad.append(("truncated file", 1, f"{path}: the gzip stream ends early (an unclosed recording)"))
    split = raw.split(b"\n")
    numbers = [i for i, line in enumerate(split, 1) if line.strip()]
    lines = [split[i - 1] for i in numbers]
    try:
        records = msgspec.json.decode(b"[" + b",".join(lines) + b"]", type=list[TickLine])
        if len(records) != len(lines):  # a line holding two records ('{...},{...}') decodes joined
            raise msgspec.DecodeError("not one record per line")
        good = numbers
    # RecursionError: a line nested too deeply; UnicodeDecodeError: a string that is not UTF-8
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        records, good = [], []
        decoder = msgspec.json.Decoder(TickLine)
        counts: dict[str, list[Any]] = {}
        for number, line in zip(numbers, lines, strict=True):
            try:
                records.append(decoder.decode(line))
                good.append(number)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
                reason = "bad record" if isinstance(exc, msgspec.ValidationError) else "bad json"
                entry = counts.setdefault(reason, [0, f"{path} line {number}: {exc}"])
                entry[0] += 1
        bad += [(reason, n, sample) for reason, (n, sample) in counts.items()]
    ts = np.array([r.ts for r in records], dtype=np.int64)
    columns: dict[str, Any] = {
        "symbol": [r.symbol for r in records], "ts": ts,
        "recv": np.array([r.ts if r.recv is None else r.recv for r in records], dtype=np.int64),
        "price": np.array([r.price for r in records], dtype=np.float64),
        "size": np.array([r.size for r in records], dtype=np.float64),
        "side": np.array([r.side for r in records], dtype=np.int8),
        "trade_id": np.array([r.trade_id for r in records], dtype=np.int64),
    }
    return DecodedLines(columns, np.array(good, dtype=np.int64), len(lines), bad)


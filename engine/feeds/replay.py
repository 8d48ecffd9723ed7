"""Replaying a file as a feed, through the same pipeline as a live run: at real speed (1x), N times
faster, or as fast as the engine takes it ("max"), optionally looping.

Inputs, by extension (``.csv``, ``.parquet``, ``.jsonl.gz`` / ``.jsonl``). OHLCV bars (CSV or Parquet)
are read and checked by ``engine.ohlcv_file``, the reader of ``tickdeck indicators`` too (columns open,
high, low, close, volume in any case; a time column date, time, datetime or timestamp, or first and
unnamed; ISO 8601 or epoch s/ms/us/ns; oldest first); a ``symbol`` column names each bar's symbol, else
``symbol=`` does (default: the file's stem). Ticks (CSV, Parquet or the recorder's JSON lines) have
columns symbol, ts, price, size and optionally side (+1/-1/0, buy/sell), trade_id and recv (default: ts);
a file with ``price`` is ticks.

A bar becomes four ticks that rebuild it exactly: the open at the bar's start; the low and the high --
low first when close >= open (the bar most plausibly dipped, then rallied to its close), else high
first -- at a quarter and at half of its interval; the close at its last nanosecond. The volume is split
v/4, v/4, v/4 and a rest that makes the sum, in tick order, exactly v (checked; where it could not, the
open carries it all). The interval is ``bar_interval`` or the smallest spacing of one symbol's bars. An
engine with that interval rebuilds the bars exactly when their times are multiples of it (bars align to
the epoch); a longer engine interval aggregates them.

Time: ticks keep their timestamps and pacing follows them (their running maximum: symbols may be stamped
out of order). At speed N a tick is handed over (ts - first ts) / N seconds after the start; at "max" as
fast as the consumer asks, in batches of up to 65,536. ``now_ns`` is the replayed time (wall-clock
progress times the speed) but never past the first tick not yet handed over, so bars close on replay time
and never while one of their ticks is on its way: the runtime reads the clock after draining its queue,
while the next batch may still wait to enter it; a batch counts as handed over once the consumer asks
for the next item. Looping shifts ``ts`` and ``recv`` by the file's span each lap (first to last time,
plus one bar interval for bars, 1 ns for ticks), so time keeps increasing.

The whole file is read and checked before the first tick: one that cannot be replayed raises
``ReplayError`` naming the file, line (CSV, JSON lines) or row (Parquet) and column. Bad rows of a tick
file are counted per reason in ``counters`` and skipped; the rest is replayed as recorded (duplicates and
out-of-order trades were the live feed's to filter).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.config import parse_duration
from engine.feeds.base import Feed, FeedStatus
from engine.feeds.record import read_jsonl
from engine.ohlcv_file import (
    Column,
    InputError,
    Table,
    arrow_column,
    check_bars,
    epoch_ns,
    parse_numbers,
    parse_times,
    read_csv,
    table_from_arrow,
    text_column,
)
from engine.ticks import SymbolTable, SymbolTableFull, make_ticks

MAX_BATCH = 65_536
TICK_COLUMNS = ("symbol", "ts", "price", "size", "side", "trade_id", "recv")  # the first four required
_REASONS = ("bad symbol", "bad ts", "bad price", "bad size", "bad side", "bad trade_id", "bad recv")
_SIDES = {"1": 1, "+1": 1, "buy": 1, "b": 1, "-1": -1, "sell": -1, "s": -1, "0": 0}


class ReplayError(Exception):
    """The file cannot be replayed; the message is one line naming the file, line or row and column."""

    def __init__(self, message: str, path: Path | str, line: int | None = None,
                 column: str | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.line = line  # file line (CSV, JSON lines) or 1-based row (Parquet)
        self.column = column


def parse_speed(speed: float | str) -> float:
    """1.0 for real time, N for N times faster (``10``, ``"10x"``), ``math.inf`` for ``"max"``."""
    text = str(speed).strip().lower()
    if text == "max":
        return math.inf
    try:
        value = float(text.removesuffix("x"))
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ValueError(f"replay speed must be a positive number, 'Nx' or 'max', got {speed!r}")
    return value


@dataclass
class Loaded:
    """A file read and checked: ticks (``sym`` holds an index into ``names`` until bound to slots)."""

    names: list[str]
    ticks: np.ndarray
    span: int  # how far a lap shifts time
    rows: int  # rows or lines read
    bad: list[tuple[str, int, str]]  # (reason, count, first sample)
    interval: int | None = None  # bar interval, for OHLCV files


def bars_to_ticks(t: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                  v: np.ndarray, interval: int) -> np.ndarray:
    """Four ticks per bar that rebuild it exactly (see the module docstring); ``sym`` is left at 0.

    The ticks are placed inside the interval-grid bucket that holds the bar's time, so a file whose bars
    are stamped off the grid (daily bars at 21:00 UTC, minutes at :20 s) still rebuilds one engine bar
    per file bar instead of splitting each across two buckets."""
    up = c >= o
    price = np.stack([o, np.where(up, lo, h), np.where(up, h, lo), c], axis=1).ravel()
    offsets = np.array([0, interval // 4, interval // 2, interval - 1], dtype=np.int64)
    start = t.astype(np.int64)
    ts = ((start - start % interval)[:, None] + offsets).ravel()
    q = v * 0.25
    rest = v - ((q + q) + q)
    sizes = np.stack([q, q, q, rest], axis=1)
    inexact = (((q + q) + q) + rest) != v  # the bar builder adds sizes in exactly this order
    sizes[inexact] = 0.0
    sizes[inexact, 0] = v[inexact]
    out = make_ticks(len(ts))
    for name, values in (("ts", ts), ("recv", ts), ("price", price), ("size", sizes.ravel())):
        out[name] = values
    return out


# --- OHLCV -------------------------------------------------------------------------------------------

def _bars(table: Table, symbol: str, bar_interval: int | None) -> Loaded:
    try:
        bars = check_bars(table, symbol)
    except InputError as exc:
        raise ReplayError(str(exc), table.path, exc.line, exc.column) from None
    t, codes = bars.t, bars.codes
    o, h, lo, c, v = bars.ohlcv
    if not len(t):
        raise ReplayError(f"{table.path}: no bars after the header", table.path, table.header_line)
    spacing = _spacing(codes, t)
    interval = bar_interval or spacing
    if interval is None:
        raise ReplayError(f"{table.path}: one bar per symbol, so the bar interval is unknown; set the "
                          "replay's bar interval", table.path)
    if spacing is not None and interval > spacing:  # the ticks of consecutive bars would interleave
        raise ReplayError(f"{table.path}: bar interval of {interval} ns is longer than the {spacing} ns "
                          "between some bars of one symbol", table.path)
    ticks = bars_to_ticks(t, o, h, lo, c, v, interval)
    ticks["sym"] = np.repeat(codes, 4)
    ticks = ticks[np.argsort(ticks["ts"], kind="stable")]  # several symbols: in time order
    span = int(t.max() - t.min()) + interval
    return Loaded(bars.symbols, ticks, span, len(t) + len(table.misshapen), [], interval)


def _spacing(codes: np.ndarray, t: np.ndarray) -> int | None:
    """The smallest time between consecutive bars of one symbol (None when no symbol has two)."""
    order = np.lexsort((t, codes))
    gaps = np.diff(t[order])[np.diff(codes[order]) == 0]
    return int(gaps.min()) if len(gaps) else None


# --- ticks -------------------------------------------------------------------------------------------

def _times(col: Column) -> tuple[np.ndarray, np.ndarray]:
    """(ns, bad): numbers by magnitude, datetimes as they are, text as ISO 8601 or epoch numbers."""
    values, missing = col
    if values.dtype.kind == "M":
        ns = values.astype("datetime64[ns]").view(np.int64)
    elif values.dtype.kind in "iuf":
        ns = epoch_ns(values)[0]
    else:
        ns = parse_times(pd.Series(values, dtype=object))[0]
    return ns, (ns <= 0) & ~missing


def _floats(col: Column) -> np.ndarray:
    values, missing = col
    if values.dtype.kind in "iuf":
        out = values.astype(np.float64)
    else:
        out = parse_numbers(pd.Series(values, dtype=object))
    out[missing] = np.nan
    return out


def _sides(col: Column) -> tuple[np.ndarray, np.ndarray]:
    values, missing = col
    if values.dtype.kind in "iuf":
        bad = ~np.isin(values, (-1, 0, 1)) & ~missing
        return np.where(bad | missing, 0, values).astype(np.int8), bad
    text = pd.Series(values, dtype=object).astype(str).str.lower()  # astype: a Parquet column may hold times
    mapped = text.map(_SIDES).to_numpy(np.float64, na_value=np.nan)
    bad = np.isnan(mapped) & ~missing
    return np.where(bad | missing, 0, mapped).astype(np.int8), bad


def _ids(col: Column) -> tuple[np.ndarray, np.ndarray]:
    """Trade ids as exact int64 (text is parsed with ``int``, never through float); -1 when missing."""
    values, missing = col
    if values.dtype.kind in "iu":
        out = np.where(values <= 2**63 - 1, values, -2).astype(np.int64)  # a uint64 id would wrap
    elif values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2**53)
        out = np.where(whole, values, -2).astype(np.int64)
    else:
        out = np.array([_int(x) for x in values.tolist()], dtype=np.int64)
    bad = (out < -1) & ~missing
    return np.where(bad | missing, -1, out), bad


def _int(text: str) -> int:
    """An int64 from text, -2 (invalid as a trade id) when it is not one."""
    try:
        value = int(text or "-1")
    except ValueError:
        return -2
    return value if -(2**63) <= value < 2**63 else -2


def _ticks(path: str, cols: dict[str, Column], where: Callable[[int], str], rows: int,
           bad: list[tuple[str, int, str]]) -> Loaded:
    """Check every row; good ones become ticks, bad ones are counted by their first problem."""
    symbols, no_symbol = cols["symbol"]
    n = len(symbols)
    ts, bad_ts = _times(cols["ts"])
    bad_ts |= cols["ts"][1]
    price, size = _floats(cols["price"]), _floats(cols["size"])
    side, bad_side = _sides(cols.get("side") or (np.zeros(n, np.int8), np.ones(n, bool)))
    trade_id, bad_id = _ids(cols.get("trade_id") or (np.zeros(n, np.int64), np.ones(n, bool)))
    recv_col = cols.get("recv") or (np.zeros(n, np.int64), np.ones(n, bool))
    recv, bad_recv = _times(recv_col)
    recv = np.where(recv_col[1], ts, recv)
    checks = (no_symbol, bad_ts, ~((price > 0) & (price < np.inf)), ~((size >= 0) & (size < np.inf)),
              bad_side, bad_id, bad_recv)
    reason = np.zeros(n, dtype=np.int8)
    for code, (mask, column) in enumerate(zip(checks, TICK_COLUMNS, strict=True), 1):
        first = mask & (reason == 0)
        reason[first] = code
        if first.any():
            i = int(np.argmax(first))
            values, missing = cols.get(column, (np.zeros(n), np.ones(n, bool)))
            value = None if missing[i] else values[i : i + 1].tolist()[0]
            bad.append((_REASONS[code - 1], int(first.sum()), f"{where(i)}, column {column!r}: {value!r}"))
    good = reason == 0
    if not good.any():
        detail = f"; first: {bad[0][2]}" if bad else ""
        raise ReplayError(f"{path}: nothing to replay, no good ticks in {rows} rows{detail}", path)
    codes, uniques = pd.factorize(symbols[good])
    out = make_ticks(int(good.sum()))
    out["sym"] = codes
    for name, values in (("ts", ts), ("recv", recv), ("price", price), ("size", size), ("side", side),
                         ("trade_id", trade_id)):
        out[name] = values[good]
    span = int(out["ts"].max() - out["ts"].min()) + 1
    return Loaded([str(u) for u in uniques], out, span, rows, bad)


def _header(path: str, names: list[str], line: int, need: tuple[str, ...]) -> dict[str, int]:
    """Where each tick column is (case-insensitive); a required one missing is a ReplayError."""
    lowered = [n.strip().lower() for n in names]
    found = {name: lowered.index(name) for name in TICK_COLUMNS if name in lowered}
    missing = [n for n in need if n not in found]
    if missing:
        raise ReplayError(f"{path}: missing tick column(s) {', '.join(map(repr, missing))}; the columns are "
                          f"{', '.join(map(repr, names))}", path, line, missing[0])
    return found


def _ticks_csv(table: Table) -> Loaded:
    found = _header(table.path, table.header, table.header_line, TICK_COLUMNS[:4])
    cols = {name: text_column(np.array([r[p] for r in table.rows], dtype=object))
            for name, p in found.items()}
    bad = [("wrong number of fields", len(table.misshapen), table.misshapen[0][1])] if table.misshapen else []
    return _ticks(table.path, cols, lambda i: table.at(table.lines[i]),
                  len(table.rows) + len(table.misshapen), bad)


def _parquet(path: Path, symbol: str, bar_interval: int | None) -> Loaded:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        why = " ".join(str(exc).split())[:300]  # Arrow's messages can run over several lines
        raise ReplayError(f"{path}: not a readable Parquet file ({why})", path) from None
    if "price" not in [n.strip().lower() for n in table.column_names]:
        return _bars(table_from_arrow(str(path), table), symbol, bar_interval)
    names = [("" if n.startswith("__index_level_") else n) for n in table.column_names]  # a pandas index
    found = _header(str(path), names, 0, TICK_COLUMNS[:4])
    cols = {name: arrow_column(table.column(i)) for name, i in found.items()}
    return _ticks(str(path), cols, lambda i: f"{path} row {i + 1}", table.num_rows, [])


def _jsonl(path: Path) -> Loaded:
    try:
        decoded = read_jsonl(path)
    except ValueError as exc:
        raise ReplayError(str(exc), path) from None
    c = decoded.columns
    n = len(c["ts"])
    present = np.zeros(n, dtype=bool)
    cols: dict[str, Column] = {name: (c[name], present) for name in TICK_COLUMNS[1:]}
    cols["symbol"] = text_column(np.array(c["symbol"], dtype=object))
    return _ticks(str(path), cols, lambda i: f"{path} line {decoded.lines[i]}", decoded.read, decoded.bad)


def read_replay_file(path: str | Path, symbol: str | None = None, bar_interval: int | None = None) -> Loaded:
    """Read and check a whole file (any supported kind); raises ReplayError when it cannot be replayed."""
    path = Path(path)
    name = path.name.lower()
    stem = symbol or path.name.split(".")[0]
    try:
        if name.endswith((".jsonl", ".jsonl.gz")):
            return _jsonl(path)
        if name.endswith(".parquet"):
            return _parquet(path, stem, bar_interval)
        if not name.endswith(".csv"):
            raise ReplayError(f"{path}: cannot replay this kind of file; use .csv, .parquet, .jsonl.gz or "
                              ".jsonl", path)
        try:
            table = read_csv(str(path))
        except InputError as exc:
            raise ReplayError(str(exc), path) from None
        if "price" in [h.strip().lower() for h in table.header]:
            return _ticks_csv(table)
        return _bars(table, stem, bar_interval)
    except FileNotFoundError:
        raise ReplayError(f"{path}: no such file", path) from None
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}", path) from None


# --- the feed ----------------------------------------------------------------------------------------

class ReplayFeed(Feed):
    """A file replayed as a feed. ``clock`` (monotonic seconds) and ``sleep`` pace it; tests inject both.

    ``load()`` reads and checks the file now (the CLI can report a bad file before the console starts,
    and ``universe()`` is known from then on); otherwise ``stream()`` reads it in a thread.
    """

    name = "replay"
    realtime = False
    closed_universe = True
    max_batch = MAX_BATCH

    def __init__(self, symbols: SymbolTable, path: str | Path, speed: float | str = 1.0, loop: bool = False,
                 symbol: str | None = None, bar_interval: int | str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(symbols)
        self.path = Path(path)
        self.speed = parse_speed(speed)
        self.loop = loop
        self.symbol = symbol
        self.bar_interval = parse_duration(bar_interval) if isinstance(bar_interval, str) else bar_interval
        if self.bar_interval is not None and self.bar_interval <= 0:
            raise ValueError(f"bar interval must be positive, got {bar_interval!r}")
        self._clock = clock
        self._sleep = sleep
        self._ticks: np.ndarray | None = None
        self._pace = np.zeros(0, dtype=np.int64)
        self._names: tuple[str, ...] = ()
        self.span = 0
        self.interval: int | None = None
        self.laps = 0  # laps completed
        self._origin: tuple[float, int] | None = None  # (clock, replayed ns) when pacing started
        self._floor = 0  # pacing time of the last tick handed over
        self._pending: int | None = None  # pacing time of the first tick not handed over

    def load(self) -> None:
        if self._ticks is None:
            self._bind(read_replay_file(self.path, self.symbol, self.bar_interval))

    def _bind(self, loaded: Loaded) -> None:
        """Give the file's symbols their slots (on the event loop's thread, like every feed)."""
        try:
            slots = np.array([self.symbols.slot(n) for n in loaded.names], dtype=np.int32)
        except SymbolTableFull as exc:
            raise ReplayError(f"{self.path}: {exc}", self.path) from None
        ticks = loaded.ticks
        ticks["sym"] = slots[ticks["sym"]]
        self._ticks, self._names = ticks, tuple(loaded.names)
        self.span, self.interval = loaded.span, loaded.interval
        self._pace = np.maximum.accumulate(ticks["ts"])
        self._pending = int(self._pace[0])
        self.counters.messages += loaded.rows
        for reason, count, sample in loaded.bad:
            self.counters.bad_message(reason, sample)
            self.counters.bad[reason] += count - 1

    def universe(self) -> tuple[str, ...]:
        return self._names

    def _replayed(self) -> float:
        """Where the replay would be by the clock alone (infinite at max speed or before the start)."""
        if self._origin is None or self.speed == math.inf:
            return math.inf
        wall, start = self._origin
        return start + round((self._clock() - wall) * self.speed * 1e9)

    def now_ns(self) -> int:
        if self._pending is None:
            return self._floor
        return int(max(self._floor, min(self._replayed(), self._pending)))

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "connecting", f"reading {self.path}")
        if self._ticks is None:
            try:
                loaded = await asyncio.to_thread(read_replay_file, self.path, self.symbol, self.bar_interval)
                self._bind(loaded)
            except ReplayError as exc:
                yield FeedStatus(self.name, "failed", str(exc))
                raise
        ticks, pace = self._ticks, self._pace
        assert ticks is not None
        speed = "max speed" if self.speed == math.inf else f"{self.speed:g}x"
        yield FeedStatus(self.name, "live", f"replaying {self.path.name} at {speed}")
        n, offset = len(ticks), 0
        self._origin = (self._clock(), int(pace[0]))
        while True:
            i = 0
            while i < n:
                j = n if self.speed == math.inf else self._due(pace, offset, i)
                j = min(j, i + self.max_batch)
                chunk = ticks[i:j].copy()
                if offset:
                    chunk["ts"] += offset
                    chunk["recv"] += offset
                self.counters.ticks += len(chunk)
                yield chunk
                # the consumer asked for more: the chunk is queued (see the module docstring)
                self._floor = int(pace[j - 1]) + offset
                i = j
                self._pending = (int(pace[i]) + offset if i < n
                                 else int(pace[0]) + offset + self.span if self.loop else None)
                await self._wait()
            if not self.loop:
                break
            offset += self.span
            self.laps += 1
        yield FeedStatus(self.name, "stopped", f"end of {self.path.name}")

    def _due(self, pace: np.ndarray, offset: int, i: int) -> int:
        """Index after the last tick due by now (at least one: we slept until tick ``i`` was due)."""
        due = max(self._replayed(), int(pace[i]) + offset) - offset
        return int(np.searchsorted(pace, due, side="right"))

    async def _wait(self) -> None:
        """Sleep until the next pending tick is due; yield to the event loop in any case."""
        if self._pending is not None and self._origin is not None and self.speed != math.inf:
            wall, start = self._origin
            delay = (self._pending - start) / (self.speed * 1e9) - (self._clock() - wall)
            if delay > 0:
                await self._sleep(delay)
                return
        await asyncio.sleep(0)

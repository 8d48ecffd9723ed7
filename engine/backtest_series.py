"""The bars a backtest runs over, read from OHLCV files (CSV or Parquet, checked by ``engine.ohlcv_file``
with the replay feed's checks) into one :class:`Series`: every symbol's bars, oldest first, at one bar
interval (each file's smallest spacing between two bars of a symbol; every file of a run must agree)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.ohlcv_file import (
    CheckedBars,
    InputError,
    Table,
    check_bars,
    fast_checked_csv,
    read_csv,
    table_from_arrow,
)

_UNITS = (("d", 86_400_000_000_000), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000))


class BacktestError(Exception):
    """A problem with the inputs (files, rules); the message is one line for the user."""


def format_interval(ns: int) -> str:
    """``86400e9`` → ``1d``; ``90e9`` → ``90s``; anything finer than seconds in ns."""
    for unit, size in _UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns} ns"


@dataclass
class Series:
    """Every bar of a run: symbol by symbol (bars of symbol s at ``start[s]:start[s + 1]``), oldest first."""

    files: list[str]
    names: list[str]
    start: np.ndarray  # int64[symbols + 1]
    t: np.ndarray  # the files' bar times, UTC ns
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    interval: int
    sym: np.ndarray = field(init=False)  # symbol index of each bar
    end: np.ndarray = field(init=False)  # one past the last bar of each bar's symbol

    def __post_init__(self) -> None:
        counts = np.diff(self.start)
        self.sym = np.repeat(np.arange(len(self.names), dtype=np.int64), counts)
        self.end = self.start[1:][self.sym]

    def __len__(self) -> int:
        return len(self.c)


def read_table(path: str) -> Table:
    """A CSV or Parquet file's cells (``InputError`` when it cannot be read)."""
    name = path.lower()
    if not name.endswith((".csv", ".parquet")):
        raise InputError(f"{path}: cannot backtest this kind of file; use .csv or .parquet (OHLCV bars)")
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    if name.endswith(".csv"):
        return read_csv(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    return table_from_arrow(path, data)


def read_bars(path: str, stem: str) -> CheckedBars:
    """A file's checked bars; InputError for the first problem. A CSV file without problems is read by
    pandas' C parser; any other (or one with a problem) by the careful reader, which names the problem."""
    if path.lower().endswith(".csv") and Path(path).is_file():
        fast = fast_checked_csv(path, stem)
        if fast is not None:
            return fast
    table = read_table(path)
    bars = check_bars(table, stem)
    if not len(bars.t):
        raise InputError(f"{table.path}: no bars after the header", table.header_line)
    return bars


def _bars(bars: CheckedBars) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(symbol, times, [o, h, l, c, v]) per symbol of checked bars."""
    t, codes = bars.t, bars.codes
    order = np.argsort(codes, kind="stable")  # the file is oldest first, so each symbol's bars are too
    bounds = np.searchsorted(codes[order], np.arange(len(bars.symbols) + 1))
    return [(u, t[order[a:b]], [x[order[a:b]] for x in bars.ohlcv])
            for u, a, b in zip(bars.symbols, bounds[:-1], bounds[1:], strict=True)]


def load_series(paths: Sequence[str]) -> Series:
    """Read and check every file; the first problem raises BacktestError (file, line or row, column)."""
    if not paths:
        raise BacktestError("no files to backtest")
    parts: list[tuple[str, np.ndarray, list[np.ndarray]]] = []
    owner: dict[str, str] = {}
    spacing: dict[str, int] = {}
    for path in paths:
        try:
            symbols = _bars(read_bars(path, Path(path).name.split(".")[0]))
        except InputError as exc:
            raise BacktestError(str(exc)) from None
        for name, t, _ in symbols:
            if name in owner:
                raise BacktestError(f"{path}: symbol {name!r} is also in {owner[name]}; "
                                    "give each symbol's bars once")
            owner[name] = path
            if len(t) > 1:
                gap = int(np.diff(t).min())
                spacing[path] = min(spacing.get(path, gap), gap)
        parts += symbols
    intervals = sorted(set(spacing.values()))
    if not intervals:
        raise BacktestError(f"{paths[0]}: one bar per symbol, so the bar interval is unknown")
    if len(intervals) > 1:
        first = {format_interval(i): p for p, i in reversed(spacing.items())}
        shown = ", ".join(f"{p} has {i} bars" for i, p in first.items())
        raise BacktestError(f"the files' bar intervals differ ({shown}); a run needs one interval "
                            "(the smallest spacing of a file's bars)")
    counts = np.array([len(t) for _, t, _ in parts], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    o, h, lo, c, v = (np.concatenate([p[2][j] for p in parts]) for j in range(5))
    return Series(list(paths), [p[0] for p in parts], start, np.concatenate([p[1] for p in parts]),
                  o, h, lo, c, v, intervals[0])

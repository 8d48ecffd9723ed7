"""``tickdeck history list | export | prune``: what the bar store holds (see ``engine.store``).

- ``list``: one line per feed, symbol and interval: bars, first and last open time (UTC), and the
  bytes they take (their share of the database's pages).
- ``export FEED SYMBOL [--interval I] [-o FILE.csv|FILE.parquet]``: the stored bars as an OHLCV file
  that ``tickdeck backtest``, ``tickdeck indicators`` (CSV) and the replay feed read: columns
  ``timestamp`` (ISO 8601, UTC), ``symbol``, ``open``, ``high``, ``low``, ``close``, ``volume``, oldest
  first, prices written exactly (shortest round-trip text in CSV, doubles in Parquet). Without ``-o``,
  CSV on standard output. The file is written next to its target and renamed into place only when
  complete, so a failed export leaves nothing.
- ``prune [--older-than D] [--feed F] [--symbol S]``: delete the bars older than D (by default
  ``history.retention``, and the size cap) of the series that match.

Mistakes (no store configured, an unknown series, a bad duration or interval, an output that cannot be
written) raise ``HistoryError`` with one line; the CLI prints it and exits with status 2. Nothing is
created by ``list`` or ``prune`` when no store exists yet.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import numpy as np

from engine.config import Config, parse_duration, parse_interval
from engine.files import UMASK, fsync_directory, write_atomically
from engine.store import FILENAME, BarStore, SeriesInfo, StoreError, store_root

__all__ = ["HistoryError", "run"]

EXPORT_COLUMNS = ("timestamp", "symbol", "open", "high", "low", "close", "volume")


class HistoryError(Exception):
    """A mistake in a ``tickdeck history`` command: one line for the user."""


def run(args: argparse.Namespace, config: Config) -> int:
    """The ``history`` command: 0 on success; raises HistoryError for the user's mistakes."""
    root = store_root(config.history.store)
    if root is None:
        raise HistoryError('no bar store: history.store is "" (off); set it to "auto" or a directory')
    command = args.history_command
    if command == "export":  # its arguments are checked before the store is touched
        target, interval = _export_target(args.output), _interval(args.interval)
    if not (root / FILENAME).is_file():
        if command == "export":
            raise HistoryError(f"nothing stored for {args.feed} {args.symbol}: there is no bar store in "
                               f"{root} yet")
        print(f"no bars stored yet (the store will be {root / FILENAME})")
        return 0
    try:
        with BarStore(root, parse_duration(config.history.retention),
                      max_bytes=config.history.store_max_mb * 2**20) as store:
            if command == "list":
                _list(store)
            elif command == "export":
                _export(store, args.feed, args.symbol, interval, target)
            else:
                _prune(store, args)
    except StoreError as exc:
        raise HistoryError(str(exc)) from None
    return 0


# --- list --------------------------------------------------------------------------------------------

def _list(store: BarStore) -> None:
    rows = store.series()
    if not rows:
        print(f"no bars stored in {store.path}")
        return
    table = [("feed", "symbol", "interval", "bars", "first (UTC)", "last (UTC)", "bytes")]
    for s in rows:
        table.append((s.feed, s.symbol, _interval_text(s.interval_ns), f"{s.bars:,}", _time(s.first_ns),
                      _time(s.last_ns), f"{s.bytes:,}"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    right = {3, 6}
    for r in table:
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))).rstrip())
    total = sum(s.bars for s in rows)
    print(f"{len(rows)} series, {total:,} bars, {store.used_bytes() / 2**20:.1f} MiB in {store.path}")


def _time(ns: int) -> str:
    return str(np.datetime64(ns, "ns").astype("datetime64[s]")).replace("T", " ")


def _interval_text(ns: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        seconds = ns / 1e9
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{ns}ns"


# --- export ------------------------------------------------------------------------------------------

def _interval(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_interval(text)
    except ValueError as exc:
        raise HistoryError(f"--interval {exc}") from None


def _export_target(output: str | None) -> Path | None:
    """The output file checked before anything is read (None: standard output)."""
    if output is None or output == "-":
        return None
    target = Path(output)
    if target.suffix.lower() not in (".csv", ".parquet"):
        raise HistoryError(f"cannot export to {output}: use a .csv or .parquet file name")
    if not target.parent.is_dir():
        raise HistoryError(f"cannot write {output}: directory {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise HistoryError(f"cannot write {output}: it is a directory")
    return target


def _pick(store: BarStore, feed: str, symbol: str, interval: int | None) -> SeriesInfo:
    every = store.series()
    mine = [s for s in every if s.feed == feed and s.symbol == symbol]
    if not mine:
        stored = sorted({f"{s.feed} {s.symbol}" for s in every})
        shown = ", ".join(stored[:10]) + (" ..." if len(stored) > 10 else "")
        raise HistoryError(f"nothing stored for {feed} {symbol}; stored: {shown or 'nothing'} "
                           "(see 'tickdeck history list')")
    if interval is None:
        if len(mine) > 1:
            have = ", ".join(_interval_text(s.interval_ns) for s in mine)
            raise HistoryError(f"{feed} {symbol} is stored at several intervals ({have}): choose one with "
                               "--interval")
        return mine[0]
    for s in mine:
        if s.interval_ns == interval:
            return s
    have = ", ".join(_interval_text(s.interval_ns) for s in mine)
    raise HistoryError(f"{feed} {symbol} is not stored at {_interval_text(interval)}; it is at {have}")


def _export(store: BarStore, feed: str, symbol: str, interval: int | None, target: Path | None) -> None:
    series = _pick(store, feed, symbol, interval)
    bars = store.load(feed, symbol, series.interval_ns, np.iinfo(np.int64).min)
    if target is None:
        _write_csv(bars, symbol, sys.stdout)
        sys.stdout.flush()
        return
    try:
        if target.suffix.lower() == ".csv":
            write_atomically(target, lambda fh: _write_csv(bars, symbol, fh))
        else:
            _write_parquet(bars, symbol, target)
    except OSError as exc:
        raise HistoryError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"exported {len(bars):,} bars of {feed} {symbol} ({_interval_text(series.interval_ns)}) to "
          f"{target}", file=sys.stderr)


def _iso(t: np.ndarray) -> list[str]:
    return [s + "Z" for s in np.datetime_as_string(t.astype("datetime64[ns]"), unit="s").tolist()]


def _write_csv(bars: np.ndarray, symbol: str, stream: TextIO) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    columns = [bars[name].tolist() for name in EXPORT_COLUMNS[2:]]
    for stamp, *values in zip(_iso(bars["t"]), *columns, strict=True):
        writer.writerow([stamp, symbol, *(repr(v) for v in values)])


def _write_parquet(bars: np.ndarray, symbol: str, target: Path) -> None:
    """Parquet, all or nothing: a temporary file next to ``target``, fsynced, renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"timestamp": pa.array(bars["t"], pa.timestamp("ns", "UTC")),
                      "symbol": pa.array([symbol] * len(bars), pa.string()),
                      **{name: pa.array(bars[name]) for name in EXPORT_COLUMNS[2:]}})
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


# --- prune -------------------------------------------------------------------------------------------

def _prune(store: BarStore, args: argparse.Namespace) -> None:
    if args.older_than is None and args.feed is None and args.symbol is None:
        deleted = store.prune()
        what = f"older than the retention ({_interval_text(store.retention_ns)}) or past the size cap"
    else:
        try:
            older = store.retention_ns if args.older_than is None else parse_duration(args.older_than)
        except ValueError as exc:
            raise HistoryError(f"--older-than {exc}") from None
        deleted = store.delete(older_than_ns=older, feed=args.feed, symbol=args.symbol)
        scope = "".join(f", {k} {v}" for k, v in (("feed", args.feed), ("symbol", args.symbol)) if v)
        what = f"older than {_interval_text(older)}{scope}"
    print(f"pruned {deleted:,} bars ({what}) from {store.path}")


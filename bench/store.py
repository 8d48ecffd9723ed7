"""``tickdeck bench --store``: what keeping bars on disk costs, for the store and the alternatives.

Each backend, in a directory of its own, takes what a live feed's store takes: history for 40 symbols
(flushes of 40 x 1,000 one-minute bars, as the writer flushes a history batch), then live flushes of
one bar per symbol (a bar closing on every symbol at once), then a refill that writes 100 bars of
every symbol again (an upsert). Then it loads the newest 2,000 bars of each symbol. Reported: append
cost per bar (history flushes, live flushes), load time for 2,000 bars (median over the symbols), and
bytes on disk per stored bar.

Backends: the store itself (SQLite, ``engine.store``); Parquet through pyarrow, written the way a
Parquet store must be (files cannot be appended to: one file per series and flush, written under a
temporary name and renamed, every ``COMPACT`` files of a series merged into one); DuckDB when it is
installed (it is not a dependency: ``pip install duckdb`` to compare). Every backend's loaded bars are
checked against what was written (later writes win): exit status 1 when one differs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.store import BarStore
from engine.ticks import BAR_DTYPE, make_bars

MINUTE = 60_000_000_000
SYMBOLS = 40
LOAD_BARS = 2_000
REFILL_BARS = 100
COMPACT = 16
Series = tuple[str, str, int, np.ndarray]
FIELDS = ("t", "open", "high", "low", "close", "volume", "trades")  # BAR_DTYPE without the slot


@dataclass(frozen=True)
class Sizes:
    history_flushes: int  # of SYMBOLS x 1,000 bars
    live_flushes: int  # of SYMBOLS x 1 bar


FULL = Sizes(history_flushes=5, live_flushes=300)
QUICK = Sizes(history_flushes=3, live_flushes=20)


class Backend(Protocol):
    def append_many(self, series: Iterable[Series]) -> int: ...
    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray: ...
    def close(self) -> None: ...


class ParquetBars:
    """Parquet through pyarrow, for comparison (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seq = 0

    def _dir(self, feed: str, symbol: str, interval_ns: int) -> Path:
        return self.root / feed / symbol / str(interval_ns)

    def append_many(self, series: Iterable[Series]) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        written = 0
        for feed, symbol, interval_ns, bars in series:
            where = self._dir(feed, symbol, interval_ns)
            where.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            target = where / f"part-{self._seq:09d}.parquet"
            tmp = where / f".{target.name}.tmp"
            table = pa.table({name: bars[name] for name in FIELDS})
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, target)
            written += len(bars)
            parts = sorted(where.glob("part-*.parquet"))
            if len(parts) >= COMPACT:
                self._compact(where, parts)
        return written

    def _compact(self, where: Path, parts: list[Path]) -> None:
        import pyarrow.parquet as pq

        merged = self._read(parts)
        self._seq += 1
        target = where / f"part-{self._seq:09d}.parquet"
        tmp = where / f".{target.name}.tmp"
        pq.write_table(merged, tmp, compression="zstd")
        os.replace(tmp, target)  # a crash before the deletes leaves duplicates that loads resolve
        for part in parts:
            part.unlink()

    @staticmethod
    def _read(parts: list[Path]) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pa.concat_tables([pq.read_table(p) for p in parts])  # oldest part first
        order = np.arange(len(table))
        t = table.column("t").to_numpy()
        # last write wins: sort by (t, position), keep each t's last row
        idx = np.lexsort((order, t))
        keep = np.ones(len(idx), dtype=bool)
        keep[:-1] = t[idx][1:] != t[idx][:-1]
        return table.take(pc.cast(pa.array(idx[keep]), pa.int64()))

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        parts = sorted(self._dir(feed, symbol, interval_ns).glob("part-*.parquet"))
        table = self._read(parts)
        out = np.empty(len(table), dtype=BAR_DTYPE)
        out["sym"] = -1
        for name in FIELDS:
            out[name] = table.column(name).to_numpy()
        return out[out["t"] >= since_ns]

    def close(self) -> None:
        return None


class DuckBars:
    """DuckDB, for comparison: one table, primary key (series, t), batches inserted from Arrow."""

    def __init__(self, root: Path) -> None:
        import duckdb

        self.conn = duckdb.connect(str(root / "bars.duckdb"))
        self.conn.execute("CREATE TABLE bars (feed VARCHAR, symbol VARCHAR, interval_ns BIGINT, t BIGINT, "
                          "open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, trades BIGINT, "
                          "PRIMARY KEY (feed, symbol, interval_ns, t))")

    def append_many(self, series: Iterable[Series]) -> int:
        import pyarrow as pa

        tables = []
        for feed, symbol, interval_ns, bars in series:
            n = len(bars)
            cols: dict[str, Any] = {"feed": pa.array([feed] * n), "symbol": pa.array([symbol] * n),
                                    "interval_ns": np.full(n, interval_ns, dtype=np.int64)}
            cols.update({name: bars[name] for name in FIELDS})
            tables.append(pa.table(cols))
        batch = pa.concat_tables(tables)
        self.conn.register("batch", batch)
        self.conn.execute("BEGIN TRANSACTION")
        self.conn.execute("INSERT OR REPLACE INTO bars SELECT * FROM batch")
        self.conn.execute("COMMIT")
        self.conn.unregister("batch")
        return len(batch)

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        got = self.conn.execute("SELECT t, open, high, low, close, volume, trades FROM bars WHERE feed = ? "
                                "AND symbol = ? AND interval_ns = ? AND t >= ? ORDER BY t",
                                [feed, symbol, interval_ns, since_ns]).fetchnumpy()
        out = np.empty(len(got["t"]), dtype=BAR_DTYPE)
        out["sym"] = -1
        for name, values in got.items():
            out[name] = values
        return out

    def close(self) -> None:
        self.conn.close()


def _bars(rng: np.random.Generator, start: int, n: int) -> np.ndarray:
    """``n`` one-minute bars from ``start``: a random walk with realistic decimals and volumes."""
    b = make_bars(n)
    b["t"] = start + np.arange(n, dtype=np.int64) * MINUTE
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), 2)
    b["open"] = np.round(close * (1 + rng.normal(0, 3e-4, n)), 2)
    b["close"] = close
    b["high"] = np.round(np.maximum(b["open"], close) * (1 + rng.exponential(3e-4, n)), 2)
    b["low"] = np.round(np.minimum(b["open"], close) * (1 - rng.exponential(3e-4, n)), 2)
    b["volume"] = np.round(rng.gamma(2.0, 50.0, n), 5)
    b["trades"] = rng.integers(1, 2_000, n)
    return b


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def measure(name: str, backend: Backend, root: Path, sizes: Sizes, seed: int = 3) -> dict[str, Any]:
    """Time one backend through the history, live and refill writes and the loads; check the loads."""
    rng = np.random.default_rng(seed)
    t0 = (time.time_ns() // MINUTE - 30 * 1440) * MINUTE
    names = [f"SYM{k:02d}USDT" for k in range(SYMBOLS)]
    expected: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def flush(start: int, n: int) -> tuple[float, int]:
        batch = [("binance", sym, MINUTE, _bars(rng, start, n)) for sym in names]
        for (_, sym, _, bars) in batch:
            expected[sym].append(bars)
        began = time.perf_counter()
        written = backend.append_many(batch)
        return time.perf_counter() - began, written

    hist_s = hist_n = 0.0
    for i in range(sizes.history_flushes):
        s, n = flush(t0 + i * 1_000 * MINUTE, 1_000)
        hist_s, hist_n = hist_s + s, hist_n + n
    live_start = t0 + sizes.history_flushes * 1_000 * MINUTE
    live_s = live_n = 0.0
    for i in range(sizes.live_flushes):
        s, n = flush(live_start + i * MINUTE, 1)
        live_s, live_n = live_s + s, live_n + n
    end = live_start + sizes.live_flushes * MINUTE
    refill_s, refill_n = flush(end - REFILL_BARS * MINUTE, REFILL_BARS)
    since = end - LOAD_BARS * MINUTE
    loads: list[float] = []
    wrong: list[str] = []
    for sym in names:
        began = time.perf_counter()
        got = backend.load("binance", sym, MINUTE, since)
        loads.append(time.perf_counter() - began)
        want = _latest(expected[sym], since)
        if len(got) != len(want) or not all(np.array_equal(got[f], want[f]) for f in FIELDS):
            wrong.append(sym)
    backend.close()
    stored = sum(len(_latest(expected[s], 0)) for s in names)
    size = _bytes(root)
    return {"backend": name, "bars_stored": stored, "bytes": size, "bytes_per_bar": size / stored,
            "history_append_us_per_bar": hist_s / hist_n * 1e6,
            "live_append_us_per_bar": live_s / live_n * 1e6,
            "refill_upsert_us_per_bar": refill_s / refill_n * 1e6,
            "load_2000_ms": statistics.median(loads) * 1e3, "loaded_bars": LOAD_BARS,
            "wrong_loads": wrong}


def _latest(parts: list[np.ndarray], since: int) -> np.ndarray:
    """What a store must give back: every bar once, the last write of each open time, oldest first."""
    bars = np.concatenate(parts)
    order = np.lexsort((np.arange(len(bars)), bars["t"]))
    bars = bars[order]
    keep = np.ones(len(bars), dtype=bool)
    keep[:-1] = bars["t"][1:] != bars["t"][:-1]
    bars = bars[keep]
    out = bars[bars["t"] >= since].copy()
    out["sym"] = -1
    return out


def run(sizes: Sizes) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory(prefix="tickdeck-bench-store-") as tmp:
        for name in ("sqlite", "parquet", "duckdb"):
            root = Path(tmp) / name
            root.mkdir()
            backend: Backend
            if name == "sqlite":
                backend = BarStore(root, 3650 * 1440 * MINUTE)
            elif name == "parquet":
                backend = ParquetBars(root)
            else:
                try:
                    backend = DuckBars(root)
                except ImportError:
                    continue
            results.append(measure(name, backend, root, sizes))
    return {"symbols": SYMBOLS, "history_flushes": sizes.history_flushes,
            "live_flushes": sizes.live_flushes, "backends": results}


def main(args: argparse.Namespace) -> int:
    """``tickdeck bench --store [--json]``; exit status 1 when a backend gave back other bars than it
    was given."""
    result = run(QUICK if getattr(args, "quick", False) else FULL)
    failed = [f"{r['backend']}: loaded bars differ from those written for {', '.join(r['wrong_loads'])}"
              for r in result["backends"] if r["wrong_loads"]]
    result["pass"] = not failed
    if getattr(args, "json", False):
        print(json.dumps(result), flush=True)
    else:
        _render(result)
    for line in failed:
        print(f"tickdeck bench --store: {line}", file=sys.stderr)
    return 1 if failed else 0


def _render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tickdeck bench --store ({r['symbols']} symbols, 1-minute bars: "
                        f"{r['history_flushes']} history flushes of {r['symbols']} x 1,000 bars, "
                        f"{r['live_flushes']} live flushes of {r['symbols']} x 1 bar, a refill of "
                        f"{r['symbols']} x {REFILL_BARS})")
    for column in ("backend", "bars stored", "bytes/bar", "append µs/bar, history",
                   "append µs/bar, live", "upsert µs/bar, refill", f"load ms, {LOAD_BARS:,} bars", "check"):
        table.add_column(column, justify="left" if column in ("backend", "check") else "right")
    for b in r["backends"]:
        table.add_row(b["backend"], f"{b['bars_stored']:,}", f"{b['bytes_per_bar']:.1f}",
                      f"{b['history_append_us_per_bar']:.2f}", f"{b['live_append_us_per_bar']:.1f}",
                      f"{b['refill_upsert_us_per_bar']:.2f}", f"{b['load_2000_ms']:.2f}",
                      "[red]differs[/]" if b["wrong_loads"] else "ok")
    console = Console()
    if not console.is_terminal:  # a file or a pipe: no width to fit, so never truncate
        console = Console(width=140)
    console.print(table)
    if not any(b["backend"] == "duckdb" for b in r["backends"]):
        console.print("duckdb is not installed, so it was not measured (pip install duckdb to compare)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tickdeck bench --store")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    sys.exit(main(parser.parse_args()))

"""Rows a history source returns, turned into what the engine takes: trades and bars as ticks (a
``Refill`` carries ticks), and the newest bars of a span."""

from __future__ import annotations

import numpy as np

from engine.ticks import make_ticks


def newest(bars: np.ndarray, count: int, interval_ns: int) -> np.ndarray:
    """The bars of the newest ``count`` engine bars (bars finer than the engine's are kept by the engine
    bar that holds them); ``bars`` ascending."""
    if count <= 0:
        return bars[:0]
    opens = bars["t"] - bars["t"] % interval_ns
    distinct = np.unique(opens)
    return bars if len(distinct) <= count else bars[opens >= distinct[-count]]


def seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.2g} s"


def trade_ticks(trades: np.ndarray, slot: int, now: int) -> np.ndarray:
    ticks = make_ticks(len(trades))
    ticks["sym"] = slot
    ticks["ts"] = trades["ts"]
    ticks["recv"] = now
    ticks["price"] = trades["price"]
    ticks["size"] = trades["size"]
    ticks["side"] = trades["side"]
    ticks["trade_id"] = trades["last_id"]
    return ticks


def bar_ticks(bars: np.ndarray, slot: int, now: int) -> np.ndarray:
    """Four ticks per bar that rebuild it (as ``engine.tick_engine._history_ticks``: open with the whole
    volume, then low and high, low first when it closed up, then the close), 0-3 ns after its open."""
    n = len(bars)
    o, h, lo, c = bars["open"], bars["high"], bars["low"], bars["close"]
    up = c >= o
    ticks = make_ticks(4 * n)
    ticks["price"] = np.stack([o, np.where(up, lo, h), np.where(up, h, lo), c], axis=1).ravel()
    ticks["ts"] = (bars["t"].astype(np.int64)[:, None] + np.arange(4, dtype=np.int64)).ravel()
    ticks["recv"] = now
    ticks["sym"] = slot
    size = np.zeros((n, 4))
    size[:, 0] = bars["volume"]
    ticks["size"] = size.ravel()
    return ticks


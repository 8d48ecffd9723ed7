"""Turning decoded messages into tick batches, and keeping trade sequences honest.

Exchange frames arrive one JSON message at a time, so some Python per message is unavoidable; what
follows it (bars, indicators, signals) works on whole batches. ``TickBatcher`` collects ticks as plain
tuples and converts them to one ``TICK_DTYPE`` array per batch (numpy builds a structured array from a
list of tuples in one call, far cheaper than element-wise writes).
"""

from __future__ import annotations

import numpy as np

from engine.ticks import TICK_DTYPE

Tick = tuple[int, int, int, float, float, int, int]  # sym, ts, recv, price, size, side, trade_id


class TickBatcher:
    def __init__(self) -> None:
        self._rows: list[Tick] = []

    def add(self, sym: int, ts: int, recv: int, price: float, size: float, side: int = 0,
            trade_id: int = -1) -> None:
        self._rows.append((sym, ts, recv, price, size, side, trade_id))

    def __len__(self) -> int:
        return len(self._rows)

    def flush(self) -> np.ndarray | None:
        """The ticks added since the last flush, as one array (None when there are none)."""
        if not self._rows:
            return None
        out = np.array(self._rows, dtype=TICK_DTYPE)
        self._rows = []
        return out


def valid_trade(price: float, size: float) -> str:
    """Why a trade cannot be used ('' when it can): non-finite or non-positive price, bad size."""
    if not (price > 0.0 and price < float("inf")):
        return "bad price"
    if not (size >= 0.0 and size < float("inf")):
        return "bad size"
    return ""


class TradeSequencer:
    """Per-symbol trade ids: drop duplicates (a resent or replayed trade) and count gaps (missed ones).

    Ids are assumed to increase by one per trade, as on Binance and Coinbase. ``check`` returns how many
    trades are missing before this one (0 when in order), or -1 for a duplicate to skip.
    """

    def __init__(self) -> None:
        self.last: dict[int, int] = {}

    def check(self, sym: int, trade_id: int) -> int:
        last = self.last.get(sym)
        if last is not None and trade_id <= last:
            return -1
        self.last[sym] = trade_id
        return 0 if last is None else trade_id - last - 1

    def forget(self, sym: int) -> None:
        self.last.pop(sym, None)

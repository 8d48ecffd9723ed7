"""Normalised ticks, history bars, and the symbol table that maps names to dense slots.

Feeds deliver batches as numpy structured arrays of ``TICK_DTYPE`` so the engine can hand a whole batch
to a compiled kernel. History (bars from before the feed went live: generated, fetched or loaded) comes
as arrays of ``BAR_DTYPE`` instead, wrapped in ``engine.feeds.base.HistoryBars`` so it can never be
mistaken for the live tape. Symbols travel as small integers (slots into every per-symbol array); the
``SymbolTable`` interns names once, when a symbol first appears, never per tick.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NO_BAR = np.iinfo(np.int64).min  # "no forming bar" in per-symbol bar-start arrays

TICK_DTYPE = np.dtype(
    [
        ("sym", np.int32),  # slot in the SymbolTable
        ("ts", np.int64),  # exchange time, ns since the epoch
        ("recv", np.int64),  # receive time, ns since the epoch
        ("price", np.float64),
        ("size", np.float64),
        ("side", np.int8),  # +1 buy, -1 sell, 0 unknown
        ("trade_id", np.int64),  # -1 when the feed has none
    ]
)


BAR_DTYPE = np.dtype(
    [
        ("sym", np.int32),  # slot in the SymbolTable
        ("t", np.int64),  # the bar's open time, ns since the epoch
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),
        ("trades", np.int64),  # trades in the bar; -1 when the source does not say
    ]
)


class SymbolTableFull(RuntimeError):
    pass


class SymbolTable:
    """Dense, stable slots for symbol names, up to a fixed capacity (the engine's arrays are sized by it)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slot: dict[str, int] = {}
        self._names: list[str] = []
        self._listeners: list[Callable[[int, str], None]] = []

    def on_add(self, listener: Callable[[int, str], None]) -> None:
        """Call ``listener(slot, name)`` whenever a new symbol gets a slot (rule filters need it)."""
        self._listeners.append(listener)

    def slot(self, name: str) -> int:
        """The slot of ``name``, assigning the next free one the first time it is seen."""
        slot = self._slot.get(name)
        if slot is None:
            if len(self._names) >= self.capacity:
                raise SymbolTableFull(
                    f"cannot track {name!r}: all {self.capacity} symbol slots are in use "
                    "(raise engine.max_symbols)"
                )
            slot = len(self._names)
            self._slot[name] = slot
            self._names.append(name)
            for listener in self._listeners:
                listener(slot, name)
        return slot

    def get(self, name: str) -> int | None:
        return self._slot.get(name)

    def name(self, slot: int) -> str:
        return self._names[slot]

    def __contains__(self, name: object) -> bool:
        return name in self._slot

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names)


def make_ticks(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=TICK_DTYPE)
    out["trade_id"] = -1
    return out


def make_bars(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=BAR_DTYPE)
    out["trades"] = -1
    return out


def check_refill(slot: int, since_ns: int, ticks: object) -> None:
    """Raise ``ValueError`` naming the problem unless ``ticks`` can refill ``slot`` from ``since_ns``: a
    1-d ``TICK_DTYPE`` array, every tick of ``slot`` and none before ``since_ns`` (its bar is kept, not
    rebuilt; a tick there would count as late)."""
    if slot < 0:
        raise ValueError(f"refill: slot must be 0 or more, got {slot}")
    if not isinstance(ticks, np.ndarray) or ticks.dtype != TICK_DTYPE or ticks.ndim != 1:
        got = getattr(ticks, "dtype", type(ticks).__name__)
        raise ValueError(f"refill of slot {slot}: ticks must be a 1-d TICK_DTYPE array, got {got}")
    if (wrong := np.flatnonzero(ticks["sym"] != slot)).size:
        i = int(wrong[0])
        raise ValueError(f"refill of slot {slot}: tick {i} is of slot {int(ticks['sym'][i])}")
    if (early := np.flatnonzero(ticks["ts"] < since_ns)).size:
        i = int(early[0])
        raise ValueError(f"refill of slot {slot}: tick {i} at {int(ticks['ts'][i])} ns is before since_ns "
                         f"{since_ns}, in a bar that is kept, not rebuilt")

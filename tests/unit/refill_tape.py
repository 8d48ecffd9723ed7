"""A multi-symbol trade tape, cut into batches as a live feed delivers them, and the same tape with a gap in
one symbol's trades that a ``Refill`` closes: what the refill tests drive engines and runtimes with.

An uninterrupted engine takes every batch; an interrupted one takes the same batches without the gap's
trades of one symbol (its clock still closes that symbol's partial bar meanwhile), then, before the
symbol's first trade after the gap, a ``Refill`` of every trade of the symbol from ``since`` to there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.config import load_config
from engine.feeds.base import Refill
from engine.signals.events import Signal
from engine.signals.rules import load_rules
from engine.tick_engine import Engine
from engine.ticks import make_ticks

SEC = 1_000_000_000
MIN = 60 * SEC
DAY = 86_400 * SEC
T0 = 1_700_000_000 * SEC - (1_700_000_000 * SEC) % DAY + DAY - 90 * MIN  # 90 min before a UTC midnight
NAMES = ("AAA", "BBB", "CCC")
OUTPUTS = tuple(load_config(env={}).engine.indicators)  # the default set: every kernel
CLOSE_RULES: tuple[dict[str, Any], ...] = (
    {"id": "close-x-sma", "kind": "cross", "a": "close", "b": "sma_20", "cooldown": "3m"},
    {"id": "rsi-mid", "kind": "cross", "a": "rsi_14", "b": 50},
    {"id": "macd-x", "kind": "cross", "a": "macd_12_26_9", "b": "macd_signal_12_26_9", "cooldown": "4m"},
    {"id": "spike", "kind": "volume_spike", "window": 20, "zscore": 1.0, "cooldown": "5m"},
    {"id": "move", "kind": "move", "window": 3, "pct": 0.3},
)
LIVE_RULES: tuple[dict[str, Any], ...] = (
    {"id": "live-x-ema", "kind": "cross", "a": "close", "b": "ema_5", "on": "live", "cooldown": "2m"},
)


def make_engine(rules: Sequence[dict[str, Any]] = CLOSE_RULES, depth: int = 2000) -> Engine:
    e = Engine(OUTPUTS, MIN, capacity=4, depth=depth, rules=load_rules([(dict(r), "test") for r in rules]))
    for name in NAMES:
        e.add_symbol(name)
    return e


def tape(minutes: int, seed: int) -> np.ndarray:
    """Trades of the three symbols over ``minutes`` minutes from ``T0``, in time order: random walks at
    different rates, each symbol with a quiet stretch (intervals with no trade make no bar)."""
    rng = np.random.default_rng(seed)
    parts = []
    for slot, rate in enumerate((25, 9, 4)):  # trades a minute
        n = int(rng.poisson(rate * minutes))
        ts = np.sort(rng.integers(T0, T0 + minutes * MIN, n))
        quiet_from = T0 + int(rng.integers(0, minutes)) * MIN
        ts = ts[(ts < quiet_from) | (ts >= quiet_from + 3 * MIN)]
        ticks = make_ticks(len(ts))
        ticks["sym"] = slot
        ticks["ts"] = ticks["recv"] = ts
        ticks["price"] = (50.0 + 40 * slot) * np.exp(np.cumsum(rng.normal(0.0, 0.003, len(ts))))
        ticks["size"] = rng.gamma(2.0, 1.5, len(ts))
        parts.append(ticks)
    out = np.concatenate(parts)
    return out[np.argsort(out["ts"], kind="stable")]


def cut(ticks: np.ndarray, seed: int, most: int = 16) -> list[np.ndarray]:
    """``ticks`` in consecutive batches of 1 to ``most`` trades."""
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(rng.integers(1, most + 1, len(ticks)))
    bounds = bounds[bounds < len(ticks)]
    return [b.copy() for b in np.split(ticks, bounds)]


@dataclass(frozen=True)
class Gap:
    slot: int
    lo: int  # the symbol's trades with lo <= ts < hi never reach the engine live
    hi: int
    since: int  # the Refill's since_ns

    def refill(self, ticks: np.ndarray) -> Refill:
        mine = ticks[(ticks["sym"] == self.slot) & (ticks["ts"] >= self.since) & (ticks["ts"] < self.hi)]
        return Refill(self.slot, self.since, mine.copy())


def gap_at(ticks: np.ndarray, slot: int, lo: int, hi: int) -> Gap:
    """The gap with the ``since`` a feed would use: the bar of the last trade received before it."""
    before = ticks["ts"][(ticks["sym"] == slot) & (ticks["ts"] < lo)]
    last = int(before[-1]) if len(before) else lo
    return Gap(slot, lo, hi, last - last % MIN)


Step = tuple[np.ndarray, int]  # a batch and the feed's clock when the runtime takes it
Item = Step | Refill


def steps(batches: Sequence[np.ndarray]) -> list[Step]:
    """Each batch with its clock: the time of its last trade, as a live feed's wall clock would be."""
    return [(b, int(b["ts"].max())) for b in batches]


def interrupted(ticks: np.ndarray, batches: Sequence[np.ndarray], gap: Gap) -> list[Item]:
    """``batches`` without the gap's trades, and the refill just before the symbol's first trade after the
    gap (at the end when it has none), which is where the feed notices the gap: the batch that holds that
    trade is cut there, its trades before it go in first. A batch left empty keeps its clock: the clock
    still closes bars."""
    items: list[Item] = []
    pending = True
    for b, now in steps(batches):
        b = b[~((b["sym"] == gap.slot) & (b["ts"] >= gap.lo) & (b["ts"] < gap.hi))]
        after = np.flatnonzero((b["sym"] == gap.slot) & (b["ts"] >= gap.hi))
        if pending and after.size:
            head = b[: after[0]]
            if len(head):
                items.append((head, int(head["ts"].max())))
            items.append(gap.refill(ticks))
            pending = False
            b = b[after[0]:]
        items.append((b, now))
    if pending:
        items.append(gap.refill(ticks))
    return items


def drive(e: Engine, items: Sequence[Item]) -> list[Signal]:
    """Apply ``items`` as the runtime does: a batch, then the bars its clock has closed; a refill alone."""
    signals: list[Signal] = []
    for item in items:
        if isinstance(item, Refill):
            signals += e.refill(item.sym, item.since_ns, item.ticks)
            continue
        batch, now = item
        if len(batch):
            signals += e.ingest(batch)
        signals += e.close_due(now - now % MIN)
    return signals


def slot_state(e: Engine, slot: int) -> dict[str, Any]:
    """Everything the engine holds for ``slot``: indicator state and outputs, history ring, forming bar,
    rule memory (previous operands per crossing, cooldowns per rule)."""
    d = e.detector
    forming = e.forming_bar(slot)
    t, bars = e.history.tail(slot)
    return {
        "state": e.bank.state[:, slot].copy(), "committed": e.bank.committed[:, slot].copy(),
        "provisional": e.bank.provisional[:, slot].copy(), "counts": int(e.bank.counts[slot]),
        "ring_t": t, "ring_bars": bars, "ring_head": int(e.history.head[slot]),
        "forming": forming, "carry": float(e.carry[slot]),
        # the detector's arrays (private: read here to prove the refill rebuilt them)
        "prev_a": d._prev_a[:, slot].copy(), "prev_b": d._prev_b[:, slot].copy(),
        "last_fire": d._last_fire[:, slot].copy(), "has_fired": d._has_fired[:, slot].copy(),
    }


def assert_same(a: dict[str, Any], b: dict[str, Any], what: str = "") -> None:
    """Bit for bit (NaN equals NaN) for every field of two ``slot_state``s."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if key == "forming":
            assert (x is None) == (y is None), f"{what}{key}: {x} vs {y}"
            if x is not None:
                assert x[0] == y[0], f"{what}forming bar opens at {x[0]} vs {y[0]}"
                np.testing.assert_array_equal(x[1], y[1], err_msg=f"{what}forming bar")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}{key}")


def news(signals: Sequence[Signal]) -> list[tuple[Any, ...]]:
    """Signals as comparable tuples (without the detection time, which is the wall clock's)."""
    return [(s.symbol, s.rule, s.direction, s.bar_time, s.price, tuple(sorted(s.values.items())))
            for s in signals]

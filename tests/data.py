"""Generated OHLCV series for parity and property tests, covering the shapes that break indicators.

Each generator is deterministic for its seed. The shapes: a plain random walk, price gaps, flat
stretches (zero range and zero change, where ratios hit 0/0), zero volume, tiny and huge prices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BUSY_RULE = """
[[rules]]
id = "close_x_ema"
kind = "cross"
a = "close"
b = "ema_20"
direction = "both"
on = "live"
"""
"""A rule that fires many times a minute on any moving market (close crossing its EMA, checked live):
what the service, broadcast and attach tests use to have signals flowing."""


@dataclass(frozen=True)
class Bars:
    t: np.ndarray  # int64 ns
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.c)

    def rows(self) -> Iterator[tuple[int, float, float, float, float, float]]:
        for i in range(len(self)):
            yield (int(self.t[i]), float(self.o[i]), float(self.h[i]), float(self.l[i]),
                   float(self.c[i]), float(self.v[i]))


MINUTE_NS = 60_000_000_000


def random_walk(n: int = 1500, seed: int = 0, price: float = 100.0, vol: float = 0.01,
                volume: float = 1000.0) -> Bars:
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate([[price], close[:-1]]) * np.exp(rng.normal(0.0, vol / 4, n))
    wick = np.abs(rng.normal(0.0, vol, (2, n))) * close
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    low = np.maximum(low, np.minimum(open_, close) * 0.5)
    vol_ = rng.gamma(2.0, volume / 2.0, n)
    t = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * MINUTE_NS
    return Bars(t, open_, high, low, close, vol_)


def with_gaps(seed: int = 1, n: int = 1500) -> Bars:
    b = random_walk(n, seed)
    rng = np.random.default_rng(seed + 100)
    jumps = np.ones(n)
    idx = rng.choice(n, size=n // 50, replace=False)
    jumps[idx] = np.exp(rng.normal(0.0, 0.08, idx.size))
    f = np.cumprod(jumps)
    return Bars(b.t, b.o * f, b.h * f, b.l * f, b.c * f, b.v)


def with_flats(seed: int = 2, n: int = 1500) -> Bars:
    """Stretches where every price is identical and volume is zero (a halted or illiquid market)."""
    b = random_walk(n, seed)
    o, h, l, c, v = (a.copy() for a in (b.o, b.h, b.l, b.c, b.v))
    rng = np.random.default_rng(seed + 200)
    for start in rng.choice(n - 80, size=6, replace=False):
        length = int(rng.integers(5, 60))
        level = c[start]
        sl = slice(start, start + length)
        o[sl] = h[sl] = l[sl] = c[sl] = level
        v[sl] = 0.0
    return Bars(b.t, o, h, l, c, v)


def zero_volume(seed: int = 3, n: int = 800) -> Bars:
    b = random_walk(n, seed)
    v = b.v.copy()
    v[::3] = 0.0
    v[100:200] = 0.0
    return Bars(b.t, b.o, b.h, b.l, b.c, v)


def scaled(factor: float, seed: int = 4, n: int = 1500) -> Bars:
    b = random_walk(n, seed)
    return Bars(b.t, b.o * factor, b.h * factor, b.l * factor, b.c * factor, b.v)


def scenarios() -> dict[str, Bars]:
    """Every shape, by name (used as pytest ids)."""
    return {
        "walk": random_walk(),
        "walk_volatile": random_walk(seed=7, vol=0.05),
        "gaps": with_gaps(),
        "flats": with_flats(),
        "zero_volume": zero_volume(),
        "tiny": scaled(1e-6),
        "huge": scaled(1e7),
    }

"""The built-in simulated market: deterministic for a seed, no network, any rate.

Prices follow geometric Brownian motion per symbol with its own volatility; trades arrive at the
configured rate, spread over the symbols with a skew (a few names trade far more, as on a real tape).
Ticks are generated a batch at a time with numpy, so the sim costs little next to the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from engine.feeds.base import Feed, FeedStatus
from engine.ticks import SymbolTable, make_ticks

TICKERS = (
    "AAPL MSFT NVDA AMZN GOOGL META TSLA BRK.B JPM V UNH XOM JNJ WMT MA PG AVGO HD CVX MRK ABBV KO PEP "
    "COST ADBE CRM NFLX AMD INTC CSCO ORCL QCOM TXN IBM BA CAT GE GS MS BAC WFC C DIS NKE MCD SBUX PFE "
    "T VZ UBER ABNB SHOP SQ PYPL PLTR SNOW COIN BTC-USD ETH-USD SOL-USD"
).split()
_CONSONANTS = "BCDFGHJKLMNPRSTVWXZ"
_VOWELS = "AEIOUY"


def universe(n: int, seed: int) -> list[str]:
    """``n`` distinct ticker-like names: the well-known ones first, then pronounceable inventions."""
    names = list(TICKERS[:n])
    rng = np.random.default_rng(seed)
    seen = set(names)
    while len(names) < n:
        length = int(rng.integers(3, 5))
        name = "".join(
            (_CONSONANTS if i % 2 == 0 else _VOWELS)[int(rng.integers(0, 19 if i % 2 == 0 else 6))]
            for i in range(length)
        )
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


class SimFeed(Feed):
    name = "sim"

    def __init__(self, symbols: SymbolTable, n_symbols: int = 40, seed: int = 7, rate: float = 200.0,
                 batch_hz: float = 20.0, backfill_s: float = 0.0) -> None:
        super().__init__(symbols)
        if not 1 <= n_symbols <= 5000:
            raise ValueError(f"sim symbols must be between 1 and 5000, got {n_symbols}")
        if rate <= 0:
            raise ValueError(f"sim rate must be positive, got {rate}")
        self.names = universe(n_symbols, seed)
        self.slots = np.array([symbols.slot(n) for n in self.names], dtype=np.int32)
        self.rate = rate
        self.batch_hz = batch_hz
        self.rng = np.random.default_rng(seed)
        k = len(self.names)
        self.price = np.exp(self.rng.uniform(np.log(5.0), np.log(900.0), k))
        self.sigma = self.rng.uniform(0.15, 0.9, k)  # annualised volatility
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        self.weights = weights / weights.sum()
        self.trade_id = 0
        self.backfill_s = backfill_s

    def universe(self) -> tuple[str, ...]:
        return tuple(self.names)

    def next_batch(self, n: int, now_ns: int, dt_s: float, vol_scale: float = 1.0) -> np.ndarray:
        """``n`` ticks covering the last ``dt_s`` seconds, ending at ``now_ns`` (no Python per tick)."""
        idx = self.rng.choice(len(self.names), size=n, p=self.weights)
        ticks = make_ticks(n)
        # each trade moves its symbol by one GBM step; per-symbol paths via a grouped cumulative sum
        shocks = self.rng.standard_normal(n) * self.sigma[idx] * (1e-3 * vol_scale)
        order = np.argsort(idx, kind="stable")
        sym_sorted = idx[order]
        steps = np.cumsum(shocks[order])
        first = np.r_[True, sym_sorted[1:] != sym_sorted[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        path = self.price[sym_sorted] * np.exp(steps - steps[group_start] + shocks[order][group_start])
        last = np.r_[sym_sorted[1:] != sym_sorted[:-1], True]
        self.price[sym_sorted[last]] = path[last]
        ticks["price"][order] = np.round(path, 4)
        ticks["sym"] = self.slots[idx]
        offsets = np.sort(self.rng.uniform(0.0, dt_s * 1e9, n)).astype(np.int64)
        ticks["ts"] = now_ns - int(dt_s * 1e9) + offsets
        ticks["recv"] = now_ns
        ticks["size"] = np.round(self.rng.lognormal(3.0, 1.2, n))
        ticks["side"] = np.where(self.rng.random(n) < 0.5, 1, -1)
        ticks["trade_id"] = np.arange(self.trade_id, self.trade_id + n)
        self.trade_id += n
        return ticks

    def backfill(self, now_ns: int) -> np.ndarray:
        """Trades over the last ``backfill_s`` seconds, so charts and indicators start warm.

        About four trades per symbol per bar for a 300-bar backfill, capped at 1M trades in total, each
        step scaled up so the history moves as much per unit of time as the live tape will.
        """
        n = min(len(self.names) * 1200, 1_000_000)
        live = self.rate * self.backfill_s
        return self.next_batch(n, now_ns, self.backfill_s, vol_scale=max(1.0, (live / n) ** 0.5))

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "live")
        if self.backfill_s > 0:
            yield self.backfill(time.time_ns())
        period = 1.0 / self.batch_hz
        last = time.monotonic()
        carry = 0.0
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            dt = now - last
            last = now
            carry += self.rate * dt
            n = int(carry)
            carry -= n
            if n:
                yield self.next_batch(n, time.time_ns(), dt)

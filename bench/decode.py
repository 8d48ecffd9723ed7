"""``python -m bench.decode``: what decoding a snapshot frame costs a console's event loop.

A frame like those an engine of ``tickdeck bench --fleet`` publishes (1,000 symbols, 61 closes each,
the two default columns' values, prices of the sim's kind; ``--symbols`` changes the count) is decoded
by ``engine.sinks.frames.decode`` (msgspec's typed way) and by the lenient way it falls back to
(``json.loads`` and a check of every number), alternately in this process; the medians of ``--runs``
decodes each are printed, and their ratio. Both results are checked to be equal first (exit status 1
when they differ).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from engine.sinks import frames
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote

CLOSES = 61  # the runtime's sparkline, 60 closed bars and the forming one
COLUMNS = ("rsi_14", "macd_hist_12_26_9")
T0 = 1_800_000_000_000_000_000


def sample(symbols: int, seed: int = 7) -> bytes:
    """A snapshot frame of ``symbols`` quotes, as the bus carries it (UTF-8 bytes)."""
    rng = np.random.default_rng(seed)
    quotes = []
    for i in range(symbols):
        closes = 100.0 + rng.standard_normal(CLOSES).cumsum() * 0.01  # every digit, as a sim's
        if i % 10 == 0:
            closes[:5] = np.nan  # a symbol with a short history: nulls
        closes.flags.writeable = False
        values = {name: float(rng.standard_normal() * 20) for name in COLUMNS}
        last = float(closes[-1])
        quotes.append(Quote(f"SYM{i:04d}", last, 0.25, 0.25, float(rng.integers(1, 10_000)), closes,
                            values, T0 + 60 * 10**9, 2, math.nan))
    market = MarketSnapshot(T0, tuple(quotes), 100_000, 1_000)
    return frames.dumps(frames.snapshot_frame(market, PipelineHealth(feed="sim"))).encode()


def lenient(raw: bytes) -> frames.Frame:
    """The way ``decode`` falls back to (and the only way before msgspec read snapshots)."""
    return frames.Snapshot(*frames.decode_snapshot(json.loads(raw)))


def timed(decode: Callable[[bytes], object], raw: bytes) -> float:
    start = time.perf_counter()
    decode(raw)
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    raw = sample(args.symbols)
    got, want = frames.decode(raw), lenient(raw)
    if not (isinstance(got, frames.Snapshot) and isinstance(want, frames.Snapshot)
            and got.health == want.health and len(got.market.quotes) == len(want.market.quotes)
            and all(a.symbol == b.symbol and a.values == b.values and a.last == b.last
                    and np.array_equal(a.closes, b.closes, equal_nan=True)
                    for a, b in zip(got.market.quotes, want.market.quotes, strict=True))):
        print("bench.decode: the two ways decode the frame differently", file=sys.stderr)
        return 1
    typed, slow = [], []
    for _ in range(args.runs):  # alternately, so a change in the machine's load falls on both
        typed.append(timed(frames.decode, raw))
        slow.append(timed(lenient, raw))
    t, s = statistics.median(typed), statistics.median(slow)
    print(f"snapshot frame: {args.symbols:,} symbols, {len(raw) / 1e6:.2f} MB")
    print(f"decode (msgspec, typed)        {t:7.2f} ms median of {args.runs}")
    print(f"json.loads + checks (lenient)  {s:7.2f} ms median of {args.runs}")
    print(f"ratio                          {s / t:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

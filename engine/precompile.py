"""Compile and cache every kernel once, so the first run of the console starts at full speed.

``make run`` and ``make test`` call this after installing: numba's first compile of the indicator
interpreter takes about a minute on a small machine; afterwards every process loads it from the
cache in well under a second. Run by hand with ``python -m engine.precompile``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def compiled() -> bool:
    """True when this source's kernels are already in the cache (its directory is keyed by them)."""
    from engine.jit import cache_dir

    return any(Path(cache_dir()).rglob("*.nbi"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--if-needed" in args and compiled():
        return 0
    start = time.perf_counter()
    print("tickdeck: compiling engine kernels (once; about a minute)...", file=sys.stderr, flush=True)
    from engine.config import Config
    from engine.indicators.bank import IndicatorBank
    from engine.indicators.catalogue import DEFAULT_OUTPUTS
    from engine.runtime import build_engine
    from engine.signals.rules import load_rules
    from engine.ticks import make_ticks

    rules = load_rules([({"id": "live", "kind": "price", "above": 1.0}, "precompile")])
    engine = build_engine(Config())
    live = type(engine)(list(DEFAULT_OUTPUTS), 60_000_000_000, capacity=2, depth=4, rules=rules)
    for e in (engine, live):
        slot = e.add_symbol("X")
        ticks = make_ticks(3)
        ticks["sym"] = slot
        ticks["ts"] = [0, 1, 120_000_000_000]
        ticks["price"] = [1.0, 2.0, 1.5]
        ticks["size"] = 1.0
        e.ingest(ticks)
        e.close_due(10**12)
        e.refill(slot, 60_000_000_000, ticks[2:])  # replays the ring's first bar
        e.history.append(slot, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    bank = IndicatorBank(DEFAULT_OUTPUTS, 1)
    bank.commit(0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    bank.preview(0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    one = np.zeros(1, dtype=np.int64)
    bank.commit_many(one, one, *(np.ones(1) for _ in range(5)))
    print(f"tickdeck: kernels ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

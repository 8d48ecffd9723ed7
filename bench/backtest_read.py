"""``python -m bench.backtest_read [DIR]``: ``tickdeck backtest``'s bars/s with the fast CSV reader and
with the careful one alone (what every file went through before), alternating in one process, three
runs each, on 3 files x 100,000 one-minute bars (ISO 8601 times, as ``history export`` writes; written
to DIR, a temporary folder by default) with the config's rules. bars/s counts read, replay and figures,
as the command prints it."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from engine import backtest, backtest_series
from engine.config import load_config
from engine.ohlcv_file import CheckedBars

BARS = 100_000
RUNS = 3


def write_files(folder: Path) -> list[str]:
    """Three random walks around 30,000, one a file (one symbol each, named by the stem)."""
    paths = []
    for k, name in enumerate(("AAA", "BBB", "CCC")):
        rng = np.random.default_rng(k)
        c = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.001, BARS)))
        o = np.r_[c[0], c[:-1]]
        h = np.maximum(o, c) * (1 + rng.uniform(0, 0.001, BARS))
        lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.001, BARS))
        t = pd.date_range("2024-01-01", periods=BARS, freq="1min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        path = folder / f"{name}.csv"
        pd.DataFrame({"timestamp": t, "open": o, "high": h, "low": lo, "close": c,
                      "volume": rng.uniform(0, 100, BARS)}).to_csv(path, index=False)
        paths.append(str(path))
    return paths


def careful_only(path: str, default_symbol: str) -> CheckedBars | None:
    """In place of the fast reader: never reads, so every file goes to the careful reader."""
    return None


def measure(folder: Path) -> None:
    paths = write_files(folder)
    rules = backtest.select_rules(load_config(None).rules)
    fast = backtest_series.fast_checked_csv
    backtest.run(paths, rules)  # warm: kernels loaded, modules imported
    rates: dict[str, list[float]] = {"careful": [], "fast": []}
    try:
        for i in range(RUNS):
            for label in rates:
                if label == "fast":
                    backtest_series.fast_checked_csv = fast
                else:
                    backtest_series.fast_checked_csv = careful_only
                r = backtest.run(paths, rules)
                rates[label].append(r.bars / r.total_s)
                print(f"{label:8} run {i + 1}: {r.bars / r.total_s:,.0f} bars/s (read {r.read_s:.2f} s, "
                      f"replay {r.replay_s:.2f} s, figures {r.stats_s:.2f} s)", flush=True)
    finally:
        backtest_series.fast_checked_csv = fast
    for label, xs in rates.items():
        print(f"{label:8} {min(xs):,.0f}-{max(xs):,.0f} bars/s")
    print("fast / careful, run by run:",
          ", ".join(f"{b / a:.2f}x" for a, b in zip(rates["careful"], rates["fast"], strict=True)))


def main(argv: list[str]) -> None:
    if argv:
        Path(argv[0]).mkdir(parents=True, exist_ok=True)
        measure(Path(argv[0]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            measure(Path(tmp))


if __name__ == "__main__":
    main(sys.argv[1:])

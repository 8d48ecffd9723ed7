"""``tickdeck bench --history``: how fast a live feed starts warm. 40 symbols x 1,000 one-minute bars of
history from a Binance stand-in on 127.0.0.1 (``console.history_server``, in its own process) that serves
klines and aggregate trades from the same tape it streams and enforces Binance's request weight (6,000
a minute, ``X-MBX-USED-WEIGHT-1M``, 429 and 418), through tickdeck's own Binance feed and history loader:

1. headless: from the service's start to every bar of every symbol in the engine;
2. console: from the app's start (``build_app``, driven by Pilot at 160x48) to every row of the watchlist
   showing RSI 14 and SMA 200.

Kernels are warm (a throwaway engine runs every kernel first, as the on-disk cache of a second start
would have them ready). Besides the two targets (< 3 s each) it checks itself: every bar arrived, no
request was refused with 429 or 418. The exit status is 1 when a target is missed or a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYMBOLS, BARS, TARGET_S = 40, 1000, 3.0
QUICK = (6, 300)


def main(args: argparse.Namespace) -> int:
    from console.bench_report import Figure, emit

    n, bars = QUICK if getattr(args, "quick", False) else (SYMBOLS, BARS)
    server = subprocess.Popen([sys.executable, "-m", "console.history_server", "--symbols", str(n),
                               "--bars", str(bars), "--rate", "40"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            print("tickdeck bench --history: the stand-in did not start", file=sys.stderr)
            return 2
        market = json.loads(line)
        with tempfile.TemporaryDirectory(prefix="tickdeck-bench-history-") as tmp:
            r = asyncio.run(_measure(market, bars, tmp))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    total = n * bars
    refused = r["http_429"] + r["http_418"]
    figures = [
        Figure("symbols", "symbols x one-minute bars of history", total, f"{n} x {bars:,}"),
        Figure("engine_s", "headless: start -> every bar in the engine, s", r["engine_s"],
               f"{r['engine_s']:.2f}", f"< {TARGET_S:g}", r["engine_s"] < TARGET_S),
        Figure("screen_s", "console: start -> RSI 14 and SMA 200 on every row, s", r["screen_s"],
               f"{r['screen_s']:.2f}", f"< {TARGET_S:g}", r["screen_s"] < TARGET_S),
        Figure("history_bars", "bars taken in as history (headless / console)", r["history_bars"],
               f"{r['history_bars']:,} / {r['console_bars']:,}", f"{total:,} each",
               r["history_bars"] == total == r["console_bars"]),
        Figure("late_ticks", "live ticks that came before their history (late)", r["late_ticks"],
               f"{r['late_ticks']:,}", "0", r["late_ticks"] == 0),
        Figure("requests", "requests: klines / aggTrades (one run)", r["klines"] + r["aggs"],
               f"{r['klines']} / {r['aggs']}"),
        Figure("weight", "request weight the stand-in counted this minute (both runs), of 6,000",
               r["weight"], f"{r['weight']:,}"),
        Figure("refused", "answers 429 / 418", refused, f"{r['http_429']} / {r['http_418']}", "0",
               refused == 0),
    ]
    notes = [f"Stand-in: 127.0.0.1, its own process, {r['trades_per_bar']} trades a bar; the machine's load "
             "shows in every figure."]
    return emit("history", f"tickdeck bench --history ({n} symbols x {bars:,} bars)", figures,
                bool(getattr(args, "json", False)), notes)


def _config(market: dict[str, Any], bars: int, config_dir: str) -> Any:
    from engine.config import CONFIG_DIR_VAR, load_config

    symbols = tuple(market["symbols"])
    return load_config(overrides={
        "feed.name": "binance", "feeds.binance.url": market["ws"], "feeds.binance.rest_url": market["rest"],
        "feeds.binance.symbols": symbols, "engine.interval": "1m", "history.backfill": bars,
        "engine.max_symbols": len(symbols) + 24, "ui.columns": ("rsi_14", "sma_200"),
    }, env={CONFIG_DIR_VAR: config_dir})


def _warm_kernels(config: Any) -> None:
    """Every kernel history and live ticks run, loaded (from numba's cache) before any clock starts."""
    from engine.runtime import build_engine
    from engine.snapshot import build_snapshot
    from engine.ticks import make_bars, make_ticks

    engine = build_engine(config)
    slot = engine.add_symbol("WARM")
    bars = make_bars(3)
    bars["sym"], bars["t"] = slot, [0, engine.interval_ns, 2 * engine.interval_ns]
    bars["open"] = bars["high"] = bars["low"] = bars["close"] = 1.0
    engine.ingest_history(bars)
    ticks = make_ticks(2)
    ticks["sym"], ticks["ts"], ticks["price"], ticks["size"] = slot, [3 * engine.interval_ns] * 2, 1.0, 1.0
    engine.ingest(ticks)
    engine.close_due(10 * engine.interval_ns)
    build_snapshot(engine, ["WARM"], list(config.ui.columns), 60, 0)


async def _until(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"tickdeck bench --history: timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def _measure(market: dict[str, Any], bars: int, tmp: str) -> dict[str, Any]:
    from console.app import build_app
    from console.state import StateStore
    from engine.headless import Headless, prepare
    from engine.sinks.base import SinkGroup

    config = _config(market, bars, tmp)
    n = len(market["symbols"])
    _warm_kernels(config)
    out: dict[str, Any] = {"trades_per_bar": 4}

    runtime, feed, _ = prepare(config, stdout_fd=None)
    service = Headless(runtime, feed, SinkGroup([]), status_every=0)
    started = time.perf_counter()
    run = asyncio.create_task(service.run())
    await _until(lambda: runtime.engine.stats.history_bars >= n * bars or run.done(),
                 "every bar in the engine")
    out["engine_s"] = time.perf_counter() - started
    out["history_bars"] = runtime.engine.stats.history_bars
    out["late_ticks"] = runtime.engine.stats.late_ticks
    source = feed.inner.history.source  # type: ignore[attr-defined]
    rest_bad = runtime.feed.counters.rest_bad
    out["http_429"], out["http_418"] = rest_bad["HTTP 429"], rest_bad["HTTP 418"]
    service.request_stop("SIGTERM")
    await run
    out["klines"], out["aggs"] = source.requests["/api/v3/klines"], source.requests["/api/v3/aggTrades"]

    app = build_app(config, store=StateStore(Path(tmp) / "state"), saved_theme=False)
    started = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        def warm() -> bool:
            shown = app.watchlist.rows_text()
            return len(shown) == n and all(all(_number(c) for c in r[-3:-1]) for r in shown.values())

        while not warm():
            if time.perf_counter() - started > 30:
                shown = app.watchlist.rows_text()
                raise TimeoutError(f"tickdeck bench --history: the console never showed every row warm: "
                                   f"{app.header.state} {app.header.reason} {app.header.health}, "
                                   f"{len(shown)} rows, not warm: "
                                   f"{[r for r in shown.values() if not all(_number(c) for c in r[-3:-1])]} "
                                   f"{app.runtime.feed.counters.rest_bad if app.runtime else ''}")
            await pilot.pause(0.002)
        out["screen_s"] = time.perf_counter() - started
        assert app.runtime is not None
        out["console_bars"] = app.runtime.engine.stats.history_bars
        out["late_ticks"] += app.runtime.engine.stats.late_ticks
        history = app.runtime.feed.history  # type: ignore[attr-defined]
        out["weight"] = history.source.limiter.used
        counts = app.runtime.feed.counters.rest_bad
        out["http_429"] += counts["HTTP 429"]
        out["http_418"] += counts["HTTP 418"]
    return out


def _number(cell: str) -> bool:
    with contextlib.suppress(ValueError):
        return math.isfinite(float(cell.replace(",", "")))
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tickdeck bench --history")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    sys.exit(main(parser.parse_args()))

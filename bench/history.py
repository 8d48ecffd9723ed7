"""``tickdeck bench --history``: how fast a live feed starts warm. 40 symbols x 1,000 one-minute bars of
history from a Binance stand-in on 127.0.0.1 (``bench.servers.history``, in its own process) that serves
klines and aggregate trades from the same tape it streams and enforces Binance's request weight (6,000
a minute, ``X-MBX-USED-WEIGHT-1M``, 429 and 418), through tickdeck's own Binance feed and history loader:

1. headless: from the service's start to every bar of every symbol in the engine;
2. console: from launching a process that builds the app (``build_app``, driven by Pilot at 160x48,
   as users start it) to every row of the watchlist showing RSI 14 and SMA 200.

The kernel cache on disk is warm (compiled before, as on any start after the first); the headless part
also loads every kernel into its process before its clock starts, while the console's time includes
loading them, as a user's start does. Besides the two targets (< 3 s each) it checks itself: every bar
arrived, none came after live ticks of its symbol (late), no request was refused with 429 or 418. The
exit status is 1 when a target is missed or a check fails.
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
    from bench.report import Figure, emit

    n, bars = QUICK if getattr(args, "quick", False) else (SYMBOLS, BARS)
    server = subprocess.Popen([sys.executable, "-m", "bench.servers.history", "--symbols", str(n),
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
            r = asyncio.run(_headless(market, bars, tmp))
            c = _console(market, bars, tmp)
        r |= {"screen_s": c["screen_s"], "console_bars": c["console_bars"], "weight": c["weight"],
              "late_ticks": r["late_ticks"] + c["late_ticks"], "http_429": r["http_429"] + c["http_429"],
              "http_418": r["http_418"] + c["http_418"], "trades_per_bar": 4}
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
        Figure("screen_s", "console: launch -> RSI 14 and SMA 200 on every row, s", r["screen_s"],
               f"{r['screen_s']:.2f}", f"< {TARGET_S:g}", r["screen_s"] < TARGET_S),
        Figure("history_bars", "bars taken in as history (headless / console)", r["history_bars"],
               f"{r['history_bars']:,} / {r['console_bars']:,}", f"{total:,} each",
               r["history_bars"] == total == r["console_bars"]),
        Figure("late_ticks", "live ticks that came before their history (late)", r["late_ticks"],
               f"{r['late_ticks']:,}", "0", r["late_ticks"] == 0),
        Figure("klines", "klines requests (one run)", r["klines"], f"{r['klines']}"),
        Figure("aggs", "aggTrades requests (one run)", r["aggs"], f"{r['aggs']}"),
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
        "history.store": "",  # every bar from REST (and the user's store untouched)
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


async def _headless(market: dict[str, Any], bars: int, tmp: str) -> dict[str, Any]:
    """Part 1, in this process: the headless service from its start to every bar in the engine."""
    from engine.headless import Headless, prepare
    from engine.sinks.base import SinkGroup

    config = _config(market, bars, tmp)
    n = len(market["symbols"])
    _warm_kernels(config)
    runtime, feed, _ = prepare(config, stdout_fd=None)
    service = Headless(runtime, feed, SinkGroup([]), status_every=0)
    started = time.perf_counter()
    run = asyncio.create_task(service.run())
    await _until(lambda: runtime.engine.stats.history_bars >= n * bars or run.done(),
                 "every bar in the engine")
    out: dict[str, Any] = {"engine_s": time.perf_counter() - started}
    stats, rest_bad = runtime.engine.stats, runtime.feed.counters.rest_bad
    source = feed.inner.history.source  # type: ignore[attr-defined]
    service.request_stop("SIGTERM")
    await run
    return out | {"history_bars": stats.history_bars, "late_ticks": stats.late_ticks,
                  "http_429": rest_bad["HTTP 429"], "http_418": rest_bad["HTTP 418"],
                  "klines": source.requests["/api/v3/klines"], "aggs": source.requests["/api/v3/aggTrades"]}


def _console(market: dict[str, Any], bars: int, tmp: str) -> dict[str, Any]:
    """Part 2, in a child process of its own (what a user starts): from launch to every row warm."""
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "bench.history", "--child", json.dumps(market),
                           "--bars", str(bars), "--tmp", tmp], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the console's run failed: {done.stderr[-2000:]}")
    child: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return child | {"screen_s": child["warm_wall"] - started}


async def _child(market: dict[str, Any], bars: int, tmp: str) -> dict[str, Any]:
    from console.app import build_app
    from console.state import StateStore

    config = _config(market, bars, tmp)
    n = len(market["symbols"])
    app = build_app(config, store=StateStore(Path(tmp) / "state"), saved_theme=False)
    async with app.run_test(size=(160, 48)) as pilot:
        def cold() -> list[list[str]]:
            shown = app.watchlist.rows_text()
            rows = [r for r in shown.values() if not all(_number(c) for c in r[-3:-1])]
            return rows if len(shown) == n else [[f"{len(shown)} rows of {n}"]]

        started = time.monotonic()
        while rows := cold():
            if time.monotonic() - started > 120:
                raise TimeoutError(f"tickdeck bench --history: rows still without RSI 14 or SMA 200: {rows}")
            await pilot.pause(0.002)
        out: dict[str, Any] = {"warm_wall": time.time()}
        runtime: Any = app.runtime
        stats, rest_bad = runtime.engine.stats, runtime.feed.counters.rest_bad
        out |= {"console_bars": stats.history_bars, "late_ticks": stats.late_ticks,
                "http_429": rest_bad["HTTP 429"], "http_418": rest_bad["HTTP 418"],
                "weight": runtime.feed.history.source.limiter.used}
    return out


def _number(cell: str) -> bool:
    with contextlib.suppress(ValueError):
        return math.isfinite(float(cell.replace(",", "")))
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tickdeck bench --history")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the console's run: the market, as JSON
    parser.add_argument("--bars", type=int, default=BARS, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.child:
        print(json.dumps(asyncio.run(_child(json.loads(cli.child), cli.bars, cli.tmp))), flush=True)
        sys.exit(0)
    sys.exit(main(cli))

"""``tickdeck bench --feeds``: how fast ticks get from a feed through the engine.

Two measurements in one run, each with the six-indicator set of ``tickdeck bench`` (SMA 20, EMA 20,
RSI 14, MACD 12/26/9, BB 20/2, ATR 14) on 1 s bars:

1. sim -> engine in process: the simulated market generates tick batches and the engine ingests
   them (bars, indicators, provisional values); ticks/s over both, and the engine's share alone.
2. WebSocket: a local server speaking Binance's combined-stream protocol on 127.0.0.1 streams trade
   frames as fast as it can; tickdeck's Binance client decodes them and the engine ingests them.
   Messages/s end to end, and the latency from a frame's receipt to its indicators being updated
   (p50/p99 over every tick).
3. ccxt: the same over Kraken's WebSocket v2 protocol (a loopback stand-in, ``tests.servers.kraken``)
   through the ccxt feed (ccxt.pro's client, then the feed's checks), beside the built-in Binance
   client; no target, a figure and its ratio to the Binance run (``bench.ccxt_feed``). Skipped, with
   the reason, where ccxt or the stand-in is not there.

Besides the two targets, the run checks itself: every frame the server sent reached the engine (a
dropped connection would cut the run short), and no kernel was compiled or loaded inside a timed
window (each warm-up ingests real ticks first). The exit status is 1 when a target was missed or a
check failed, each named on stderr; 0 when everything passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.ws import bench_ws, loaded_kernels
from engine.tick_engine import Engine

SIX = ("sma_20", "ema_20", "rsi_14", "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
       "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2", "atr_14")
SEC = 1_000_000_000
TARGET_SIM = 200_000
TARGET_WS = 50_000


@dataclass(frozen=True)
class Sizes:
    sim_ticks: int
    ws_messages: int
    ccxt_messages: int = 100_000


FULL = Sizes(sim_ticks=3_000_000, ws_messages=300_000, ccxt_messages=100_000)
QUICK = Sizes(sim_ticks=50_000, ws_messages=5_000, ccxt_messages=2_000)


def _engine(n_symbols: int) -> Engine:
    return Engine(SIX, SEC, capacity=max(n_symbols, 1), depth=100)


def bench_sim(ticks: int, n_symbols: int = 40, batch: int = 10_000) -> dict[str, float]:
    """Ticks/s of sim generation + engine ingest, and of the engine alone, on one core."""
    from engine.feeds.sim import SimFeed

    engine = _engine(n_symbols)
    feed = SimFeed(engine.symbols, n_symbols=n_symbols, seed=11)
    t0 = 1_800_000_000 * SEC
    warm = feed.next_batch(batch, t0, 1.0)
    engine.ingest(warm)  # compile/load kernels outside the timing
    kernels_at_start = loaded_kernels()
    gen = 0.0
    ing = 0.0
    done = 0
    now = t0
    while done < ticks:
        now += SEC
        a = time.perf_counter()
        b = feed.next_batch(batch, now, 1.0)
        m = time.perf_counter()
        engine.ingest(b)
        e = time.perf_counter()
        gen += m - a
        ing += e - m
        done += batch
    loaded_in_window = loaded_kernels() - kernels_at_start
    return {"sim_engine_ticks_per_s": done / (gen + ing), "engine_only_ticks_per_s": done / ing,
            "sim_ticks": float(done), "sim_kernels_loaded_in_window": float(loaded_in_window)}


def run(sizes: Sizes = FULL) -> dict[str, Any]:
    """Both measurements and their verdicts, as the flat dict ``--json`` prints."""
    result: dict[str, Any] = {}
    result.update(bench_sim(sizes.sim_ticks))
    result.update(asyncio.run(bench_ws(sizes.ws_messages, SIX)))
    from bench.ccxt_feed import bench_ccxt, unavailable

    result["ccxt_skipped"] = unavailable()
    if not result["ccxt_skipped"]:
        result.update(asyncio.run(bench_ccxt(sizes.ccxt_messages, SIX)))
        result["ccxt_vs_binance"] = (result["ccxt_messages_per_s"] / result["ws_messages_per_s"]
                                     if result["ws_messages_per_s"] else 0.0)
    result["sim_target_met"] = result["sim_engine_ticks_per_s"] >= TARGET_SIM
    result["ws_target_met"] = result["ws_messages_per_s"] >= TARGET_WS
    return result


def failures(r: dict[str, Any]) -> list[str]:
    """Every target missed and check failed, one line each naming it (empty when all passed)."""
    out = []
    if not r["sim_target_met"]:
        out.append(f"target missed: sim -> engine = {r['sim_engine_ticks_per_s']:,.0f} ticks/s, "
                   f"target >= {TARGET_SIM:,}")
    if not r["ws_target_met"]:
        out.append(f"target missed: Binance-protocol WS -> engine = {r['ws_messages_per_s']:,.0f} "
                   f"messages/s, target >= {TARGET_WS:,}")
    if r["ws_messages"] != r["ws_messages_sent"]:
        out.append(f"check failed: {r['ws_messages']:,.0f} of the {r['ws_messages_sent']:,.0f} frames the "
                   "server sent reached the engine (the connection dropped)")
    if "ccxt_messages" in r and r["ccxt_messages"] != r["ccxt_messages_sent"]:
        out.append(f"check failed: {r['ccxt_messages']:,.0f} of the {r['ccxt_messages_sent']:,.0f} trades "
                   "the Kraken stand-in sent reached the engine through ccxt")
    for key, path in (("sim_kernels_loaded_in_window", "sim -> engine"),
                      ("ws_kernels_loaded_in_window", "WS -> engine"),
                      ("ccxt_kernels_loaded_in_window", "ccxt -> engine")):
        if r.get(key):
            out.append(f"check failed: {r[key]:.0f} kernels were compiled or loaded inside the timed "
                       f"window of {path} (its warm-up missed them)")
    return out


def main(args: argparse.Namespace) -> int:
    """``tickdeck bench --feeds [--json]``; ``args.quick`` (hidden) shrinks the run for tests. Exit status
    1 when a target was missed or a check failed (each named on stderr)."""
    result = run(QUICK if getattr(args, "quick", False) else FULL)
    failed = failures(result)
    result["pass"], result["failed"] = not failed, failed
    if getattr(args, "json", False):
        print(json.dumps(result), flush=True)
    else:
        _render(result)
        sys.stdout.flush()
    for line in failed:
        print(f"tickdeck bench --feeds: {line}", file=sys.stderr)
    return 1 if failed else 0


def _render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tickdeck bench --feeds (six indicators, 1 s bars)")
    table.add_column("path")
    table.add_column("figure", justify="right")
    table.add_column("target", justify="right")
    table.add_column("status")

    def met(ok: object) -> str:
        return "[green]met[/]" if ok else "[red]missed[/]"

    table.add_row("sim -> engine, ticks/s", f"{r['sim_engine_ticks_per_s']:,.0f}", f">= {TARGET_SIM:,}",
                  met(r["sim_target_met"]))
    table.add_row("  engine alone, ticks/s", f"{r['engine_only_ticks_per_s']:,.0f}", "", "")
    table.add_row("Binance-protocol WS -> engine, messages/s", f"{r['ws_messages_per_s']:,.0f}",
                  f">= {TARGET_WS:,}", met(r["ws_target_met"]))
    table.add_row("  frames that reached the engine", f"{r['ws_messages']:,.0f}",
                  f"{r['ws_messages_sent']:,.0f}", met(r["ws_messages"] == r["ws_messages_sent"]))
    table.add_row("  receive -> indicators latency p50 / p99 (ms)",
                  f"{r['ws_latency_p50_ms']:.2f} / {r['ws_latency_p99_ms']:.2f}", "", "")
    if "ccxt_messages_per_s" not in r:
        table.add_row("ccxt (Kraken protocol) -> engine", "skipped", "", r.get("ccxt_skipped") or "not run")
    else:
        table.add_row("ccxt (Kraken protocol) -> engine, messages/s", f"{r['ccxt_messages_per_s']:,.0f}",
                      f"{r['ccxt_vs_binance']:.2f}x Binance", "")
        table.add_row("  trades that reached the engine", f"{r['ccxt_messages']:,.0f}",
                      f"{r['ccxt_messages_sent']:,.0f}", met(r["ccxt_messages"] == r["ccxt_messages_sent"]))
        table.add_row("  receive -> indicators latency p50 / p99 (ms)",
                      f"{r['ccxt_latency_p50_ms']:.2f} / {r['ccxt_latency_p99_ms']:.2f}", "", "")
    console = Console()
    console.print(table)
    console.print("all targets met, every check passed" if r["pass"] else "[red]some targets missed or "
                  "checks failed (listed on stderr)[/]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tickdeck bench --feeds")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    sys.exit(main(parser.parse_args()))

"""The WebSocket half of ``tickdeck bench --feeds``: the Binance stand-in (``bench.servers.binance``) in
its own process (so the client has a core to itself) flooding trade frames, and tickdeck's Binance
client feeding the engine. Only 127.0.0.1 is ever used.

Before the clock starts, real ticks go through a throwaway engine of the same shape, so every kernel
``Engine.ingest`` runs is compiled (or loaded from numba's cache) outside the timed window; the run
counts the kernels loaded inside it anyway (``ws_kernels_loaded_in_window``, which must be 0).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

SEC = 1_000_000_000
CAPACITY, DEPTH = 64, 100  # the engine's symbol slots and bars of history
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT")


def loaded_kernels() -> int:
    """Compiled kernels in this process (every numba dispatcher of ``engine``, one per signature it has
    compiled or loaded): a count that grows inside a timed window means the window paid for loading."""
    from numba.core.dispatcher import Dispatcher

    return sum(len(value.overloads) for name, module in list(sys.modules.items())
               if name == "engine" or name.startswith("engine.")
               for value in list(vars(module).values()) if isinstance(value, Dispatcher))


def warm_up(outputs: Sequence[str]) -> int:
    """Ticks of three 1 s intervals for every symbol through a throwaway engine shaped like the timed
    one (two bars close per symbol), so every kernel ``Engine.ingest`` runs is loaded; the ticks
    ingested. (An empty batch would load none: ``ingest`` calls no kernel for it.)"""
    from engine.tick_engine import Engine
    from engine.ticks import make_ticks

    engine = Engine(outputs, SEC, capacity=CAPACITY, depth=DEPTH)
    slots = np.array([engine.add_symbol(s) for s in SYMBOLS])
    ticks = make_ticks(3 * len(slots))
    ticks["sym"] = np.tile(slots, 3)
    ticks["ts"] = ticks["recv"] = 1_800_000_000 * SEC + np.repeat(np.arange(3) * SEC, len(slots))
    ticks["price"], ticks["size"] = 100.0 + np.arange(len(ticks)) * 0.01, 0.01
    engine.ingest(ticks)
    return engine.stats.ticks


async def bench_ws(messages: int, outputs: Sequence[str]) -> dict[str, float]:
    from engine.feeds.backoff import Backoff
    from engine.feeds.base import FeedStatus
    from engine.feeds.binance import BinanceFeed
    from engine.tick_engine import Engine

    server = subprocess.Popen([sys.executable, "-m", "bench.servers.binance", "--flood", str(messages),
                               "--symbols", ",".join(SYMBOLS)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        engine = Engine(outputs, SEC, capacity=CAPACITY, depth=DEPTH)
        feed = BinanceFeed(engine.symbols, url, wanted=SYMBOLS,
                           backoff=Backoff(base=0.05, cap=0.1))
        warm = warm_up(outputs)
        lat: list[np.ndarray] = []
        got = 0
        start = 0.0
        kernels_at_start = 0
        async for item in feed.stream():
            if isinstance(item, FeedStatus):
                if item.state == "reconnecting":
                    break
                continue
            if not isinstance(item, np.ndarray):  # (no history here: the feed has no loader)
                continue
            if not start:
                kernels_at_start = loaded_kernels()
                start = time.perf_counter()
            engine.ingest(item)
            lat.append(time.time_ns() - item["recv"])
            got += len(item)
            if got >= messages:
                break
        elapsed = time.perf_counter() - start if start else 0.0
        loaded_in_window = loaded_kernels() - kernels_at_start if start else 0
    finally:
        server.kill()
        server.wait()
    latency = np.concatenate(lat) if lat else np.zeros(1)
    p50, p99 = np.percentile(latency, [50, 99]) / 1e6
    return {"ws_messages_per_s": got / elapsed if elapsed else 0.0, "ws_messages": float(got),
            "ws_messages_sent": float(messages), "ws_latency_p50_ms": float(p50),
            "ws_latency_p99_ms": float(p99), "ws_warmup_ticks": float(warm),
            "ws_kernels_loaded_in_window": float(loaded_in_window)}


"""The ccxt half of ``tickdeck bench --feeds``: the Kraken stand-in (``tests.servers.kraken --flood N``, in
its own process, compression off as the Binance flood) sends trade frames over Kraken's WebSocket v2
protocol as fast as the client takes them; the ccxt feed (ccxt.pro's kraken client, the feed's frame
guard and trade checks) feeds the engine, shaped as the Binance run's. Only 127.0.0.1 is used.

Latency is from a frame's receipt (the feed's guard stamps it before ccxt parses it) to the engine
having ingested the batch that holds it. ccxt keeps the last ``tradesLimit`` trades of a symbol (1,000)
between two ``watch_trades`` calls: trades past that while the feed is busy are lost inside ccxt, so
the run also reports how many of the frames sent reached the engine.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.ws import CAPACITY, DEPTH, SEC, loaded_kernels, warm_up

SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD")
ROOT = Path(__file__).resolve().parent.parent


def unavailable() -> str:
    """Why the ccxt run cannot be made here ('' when it can): ccxt not installed, or no stand-in (the
    stand-in lives in the repository's tests, not in an installed package)."""
    if importlib.util.find_spec("ccxt") is None:
        return "ccxt is not installed (pip install 'tickdeck[exchanges]')"
    if not (ROOT / "tests" / "servers" / "kraken.py").is_file():
        return "the Kraken stand-in (tests/servers/kraken.py) is in the repository only"
    return ""


async def bench_ccxt(messages: int, outputs: Sequence[str]) -> dict[str, float]:
    from engine.feeds.backoff import Backoff
    from engine.feeds.base import FeedStatus
    from engine.feeds.ccxt_feed import CcxtFeed, make_exchange
    from engine.tick_engine import Engine

    server = subprocess.Popen([sys.executable, "-m", "tests.servers.kraken", "--flood", str(messages),
                               "--symbols", ",".join(SYMBOLS)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        engine = Engine(outputs, SEC, capacity=CAPACITY, depth=DEPTH)
        urls = {"api": {"public": base, "ws": {"publicV2": base + "/v2"}}}
        exchange = make_exchange("kraken", {"urls": urls, "rateLimit": 10})
        # stale after 2 s: the end of the flood, when trades were lost inside ccxt (see the docstring)
        feed = CcxtFeed(engine.symbols, exchange, wanted=SYMBOLS, backoff=Backoff(base=0.05, cap=0.1),
                        stale_after=2.0)
        warm = warm_up(outputs)
        lat: list[np.ndarray] = []
        got = 0
        start = end = 0.0
        kernels_at_start = 0
        async for item in feed.stream():
            if isinstance(item, FeedStatus):
                if item.state in ("reconnecting", "stale"):
                    break
                continue
            if not isinstance(item, np.ndarray):
                continue
            if not start:
                kernels_at_start = loaded_kernels()
                start = time.perf_counter()
            engine.ingest(item)
            lat.append(time.time_ns() - item["recv"])
            got += len(item)
            end = time.perf_counter()
            if got >= messages:
                break
        elapsed = end - start
        loaded_in_window = loaded_kernels() - kernels_at_start if start else 0
    finally:
        server.kill()
        server.wait()
    latency = np.concatenate(lat) if lat else np.zeros(1)
    p50, p99 = np.percentile(latency, [50, 99]) / 1e6
    return {"ccxt_messages_per_s": got / elapsed if elapsed else 0.0, "ccxt_messages": float(got),
            "ccxt_messages_sent": float(messages), "ccxt_latency_p50_ms": float(p50),
            "ccxt_latency_p99_ms": float(p99), "ccxt_warmup_ticks": float(warm),
            "ccxt_kernels_loaded_in_window": float(loaded_in_window)}

"""A Binance-protocol market on 127.0.0.1 with a past: a trade tape with ``bars`` bars of history before
now, served as REST history (``bench.servers.history_tape``: klines and aggregate trades, Binance's weight
limits) and streamed live by the Binance stand-in (``bench.servers.binance``: combined streams,
``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` answered by id, Binance's limits), from the same
tape, so what the REST side says happened is what the stream carried.

``tickdeck bench --history`` runs it in its own process (``python -m bench.servers.history``), and so do
the console's tests (the tmux test runs the real command against it); it lives here, not in ``tests/``,
for the bench. It prints one JSON line, ``{"ws": ..., "rest": ..., "symbols": [...]}``, then serves until
its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.servers.binance import BinanceServer
from bench.servers.history_tape import INTERVAL_MS, RestHistory, Tape

MAJORS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT",
          "DOTUSDT", "LINKUSDT")


def names(n: int) -> list[str]:
    """``n`` symbol names: the majors, then ``T00USDT``, ``T01USDT``, ..."""
    return list(MAJORS[:n]) + [f"T{i:02d}USDT" for i in range(max(0, n - len(MAJORS)))]


class Market:
    """The tape, its REST history and its live stream (``start``, then ``stop``)."""

    def __init__(self, symbols: Sequence[str], bars: int, interval: str = "1m", per_bar: int = 4,
                 rate: float = 50.0, seed: int = 5, limit: int = 6000) -> None:
        self.symbols = [s.upper() for s in symbols]
        self.step = INTERVAL_MS[interval]
        self.per_bar = per_bar
        self.rate = rate
        self.tape = Tape()
        self.rest = RestHistory(self.tape, limit=limit)
        self.stream = BinanceServer()
        self.sent = 0  # trade frames sent
        self._rng = random.Random(seed)
        self._ids = dict.fromkeys(self.symbols, 0)
        self._price = {s: 100.0 + 37.0 * i for i, s in enumerate(self.symbols)}
        self._maker: asyncio.Task[None] | None = None
        self._history(bars)

    def _trade(self, symbol: str, ms: int, order: int | None = None) -> dict[str, Any]:
        rng = self._rng
        price = self._price[symbol] = max(0.05, self._price[symbol] * (1.0 + rng.gauss(0.0, 0.002)))
        text = f"{price:.2f}"
        qty = f"{rng.randint(1, 64) / 8:.3f}"  # multiples of 1/8: float sums are exact
        maker = rng.random() < 0.5
        self._ids[symbol] += 1
        tid = self._ids[symbol]
        self.tape.add(symbol, tid, ms, text, qty, maker, order)
        return {"e": "trade", "E": ms + 1, "s": symbol, "t": tid, "p": text, "q": qty, "T": ms, "m": maker,
                "M": True}

    def _history(self, bars: int) -> None:
        now = time.time_ns() // 1_000_000
        first = now - now % self.step - bars * self.step
        for k in range(bars + 1):  # the closed bars, then the forming one up to now
            start = first + k * self.step
            span = min(self.step, now - start)
            if span <= 0:
                break
            for symbol in self.symbols:
                times = sorted(self._rng.randrange(start, start + span) for _ in range(self.per_bar))
                for ms in times:
                    self._trade(symbol, ms)

    @property
    def ws_url(self) -> str:
        return self.stream.url

    async def start(self) -> None:
        await self.rest.start()
        await self.stream.__aenter__()
        self._maker = asyncio.get_running_loop().create_task(self._make(), name="market-tape")

    async def stop(self) -> None:
        if self._maker is not None:
            self._maker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maker
        if self.stream.url:
            await self.stream.__aexit__(None, None, None)
        await self.rest.stop()

    async def _make(self) -> None:
        """Trades at ``rate`` a second across the symbols, on the wall clock, to their subscribers."""
        while True:
            await asyncio.sleep(1.0 / self.rate)
            symbol = self._rng.choice(self.symbols)
            ms = max(time.time_ns() // 1_000_000, self.tape.series[symbol].ms[-1])
            data = self._trade(symbol, ms)
            stream = f"{symbol.lower()}@trade"
            self.sent += await self.stream.publish(stream, {"stream": stream, "data": data})


async def _serve(args: argparse.Namespace) -> None:
    market = Market(names(args.symbols), args.bars, args.interval, args.per_bar, args.rate, limit=args.limit)
    await market.start()
    print(json.dumps({"ws": market.ws_url, "rest": market.rest.url, "symbols": market.symbols}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin (or exits)
    await market.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.history",
                                     description="A Binance-protocol market with history on 127.0.0.1.")
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--bars", type=int, default=1000)
    parser.add_argument("--interval", default="1m", choices=sorted(INTERVAL_MS))
    parser.add_argument("--per-bar", type=int, default=4, help="trades per symbol per bar of history")
    parser.add_argument("--rate", type=float, default=50.0, help="live trades per second, all symbols")
    parser.add_argument("--limit", type=int, default=6000, help="request weight per minute")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

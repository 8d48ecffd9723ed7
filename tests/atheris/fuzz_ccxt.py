"""Coverage-guided fuzzing (atheris/libFuzzer) of the ccxt feed's message handling.

Run by ``make fuzz``; by hand: ``python -m tests.atheris.fuzz_ccxt -max_total_time=60 [corpus_dir]``. The
first byte picks the exchange (Kraken's v2 WebSocket or OKX's v5), the rest is one frame (a text frame when
it starts with ``T`` and is UTF-8), handed to a real ccxt.pro client whose markets came from the loopback
stand-in, through the feed's frame guard, as ccxt's receive loop hands it; the trades ccxt made of it then
go through the feed's checks, as in ``tests/unit/test_fuzz_ccxt.py`` (whose harness this reuses). Anything
raised is a crash libFuzzer reports with its input: the guard must count what ccxt cannot parse, and every
tick must be usable. Only tickdeck's modules are instrumented: ccxt is large and its coverage is not ours
to steer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["engine.feeds.ccxt_feed", "engine.feeds.ccxt_trades",
                                         "engine.feeds.batching"]):
    from engine.feeds.ccxt_feed import make_exchange

from tests.servers.kraken import KrakenServer
from tests.servers.okx import OkxServer
from tests.unit.test_fuzz_ccxt import Harness

_HARNESSES: list[Harness] = []
_SERVERS: list[Any] = []


def _start() -> None:
    loop = asyncio.new_event_loop()

    async def start() -> None:
        for server, name, symbol in ((KrakenServer(heartbeat_s=None), "kraken", "BTC/USD"),
                                     (OkxServer(), "okx", "BTC/USDT")):
            await server.__aenter__()
            _SERVERS.append(server)
            exchange = make_exchange(name, {**server.options(), "rateLimit": 10})
            await exchange.load_markets()
            _HARNESSES.append(Harness(loop, exchange, server.ws_url, symbol))

    loop.run_until_complete(start())


def test_one_input(data: bytes) -> None:
    if not data:
        return
    harness, frame = _HARNESSES[data[0] % len(_HARNESSES)], data[1:]
    raw: str | bytes = frame
    if frame[:1] == b"T":
        with contextlib.suppress(UnicodeDecodeError):
            raw = frame[1:].decode()
    harness.take([raw])


def main() -> None:
    logging.disable(logging.WARNING)  # every bad frame is logged by the feed
    _start()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

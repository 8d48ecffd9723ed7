"""The Binance stand-in with a past: ``BinanceServer``'s WebSocket stream and, on a second port, the REST
history (``bench.servers.history_tape``: klines and aggregate trades, Binance's weight limits, faults on
demand) computed from the same trade tape, every trade the stream made, sent or not.

The test owns the clock: ``trade(..., at_ms=...)`` stamps a trade, and the REST side's "now" (which
kline is forming) is the newest trade's time unless ``now_ms`` is set. ``dropping`` holds symbols whose
trades are made (and served by REST) but not sent on the stream: a gap, or trades made before a
subscription took effect.
"""

from __future__ import annotations

from typing import Any

from bench.servers.binance import BinanceServer
from bench.servers.history_tape import RestHistory, Tape


class BinanceHistoryServer(BinanceServer):
    """``async with BinanceHistoryServer() as server``: ``server.url`` (WebSocket), ``server.rest_url``."""

    def __init__(self, *, limit: int = 6000, window_s: float = 60.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.tape = Tape()
        self.now_ms: int | None = None
        self.rest = RestHistory(self.tape, now_ms=self._now, limit=limit, window_s=window_s)
        self.dropping: set[str] = set()
        self.made: dict[str, list[dict[str, Any]]] = {}  # every trade, sent or not, per symbol

    def _now(self) -> int:
        return self.now_ms if self.now_ms is not None else self.clock_ms

    @property
    def rest_url(self) -> str:
        return self.rest.url

    async def __aenter__(self) -> BinanceHistoryServer:
        await super().__aenter__()
        await self.rest.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rest.stop()
        await super().__aexit__(*exc)

    async def trade(self, symbol: str, price: str, qty: str, buyer_maker: bool = False, *,
                    at_ms: int | None = None, order: int | None = None) -> dict[str, Any]:
        """The next trade of ``symbol`` (at ``at_ms``, or 1 ms after the last one), on the tape and, unless
        the symbol is being dropped, on the stream. ``order``: consecutive trades of one order at one
        price and time are one aggregate trade."""
        if at_ms is not None:
            self.clock_ms = at_ms - 1  # _trade_data adds 1
        data = self._trade_data(symbol, price, qty, buyer_maker)
        self.tape.add(symbol, data["t"], data["T"], price, qty, buyer_maker, order)
        self.made.setdefault(symbol.upper(), []).append(data)
        if symbol.upper() not in self.dropping:
            stream = f"{symbol.lower()}@trade"
            await self.publish(stream, {"stream": stream, "data": data})
        return data

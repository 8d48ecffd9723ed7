"""Binance tick sizes, from the public exchange information, so the console shows each symbol at the
precision Binance quotes it in.

Protocol, as Binance's spot REST docs state it (github.com/binance/binance-spot-api-docs, rest-api.md,
"Exchange information"): ``GET /api/v3/exchangeInfo?symbols=["BTCUSDT","BNBBTC"]`` (the list as a JSON
array, URL-encoded; weight 20 whatever the number of symbols) answers ``{"symbols": [{"symbol": ...,
"filters": [{"filterType": "PRICE_FILTER", "minPrice", "maxPrice", "tickSize": "0.01000000"}, ...]},
...]}``. One unknown symbol makes the whole request fail (HTTP 400, ``{"code": -1121, "msg": "Invalid
symbol."}``): the symbols of such a batch are then asked one by one, so one typo costs only its own
tick size. A ``tickSize`` of ``"0.00000000"`` means the price filter is off: no tick size.

The lookup runs beside the stream (a tick size only changes how prices look, so nothing waits for it):
symbols the feed subscribes are queued, one task asks for them :data:`BATCH` at a time, one request at a
time, and what it learns goes into the feed's ``decimals``. A symbol whose lookup failed (network, a 5xx,
a 429) is asked again on the next subscription or reconnect, at most :data:`ATTEMPTS` times in all. At
20 weight a request against Binance's 6,000 a minute, a watchlist of 1,000 symbols costs 200 weight,
once: a symbol learned is never asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

import aiohttp
import msgspec

from engine.feeds.base import FeedCounters
from engine.feeds.pacing import describe_failure, read_at_most
from engine.precision import tick_decimals

log = logging.getLogger("tickdeck.feeds.binance")

PATH = "/api/v3/exchangeInfo"
BATCH = 100  # symbols a request; the URL stays under 2 kB
ATTEMPTS = 3  # lookups of one symbol that failed before it is given up on
MAX_ANSWER_BYTES = 1 << 20  # one symbol's record is ~1.5 kB; a batch of 100 about 150 kB
INVALID_SYMBOL = -1121


class Filter(msgspec.Struct):
    filterType: str  # Binance's field names
    tickSize: str = ""


class SymbolInfo(msgspec.Struct):
    symbol: str
    filters: list[Filter] = msgspec.field(default_factory=list)


class ExchangeInfo(msgspec.Struct):
    symbols: list[SymbolInfo]


class TickSizes:
    """Learns the tick size of every symbol passed to :meth:`want` into ``decimals``, in the background."""

    def __init__(self, rest_url: str, counters: FeedCounters, decimals: dict[str, int],
                 timeout: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.counters = counters
        self.decimals = decimals
        self.timeout = timeout
        self.requests = 0
        self.failed: Counter[str] = Counter()  # symbol -> lookups that failed (bounded by the symbols)
        self._pending: dict[str, None] = {}  # in order, at most the symbols wanted
        self._asking: set[str] = set()  # in the request under way
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def want(self, symbols: Iterable[str]) -> None:
        """Queue the symbols whose tick size is not known yet, and start the lookup if it is idle."""
        for name in symbols:
            if name not in self.decimals and name not in self._asking and self.failed[name] < ATTEMPTS:
                self._pending[name] = None
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="binance tick sizes")

    async def wait(self) -> None:
        """Until the queue is empty (tests; the feed never waits for tick sizes)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _run(self) -> None:
        while self._pending:
            batch = list(self._pending)[:BATCH]
            for name in batch:
                del self._pending[name]
            self._asking.update(batch)
            try:
                answer = await self._ask(batch)
                if isinstance(answer, int) and len(batch) > 1:
                    for name in batch:  # which one is unknown: each alone (weight 20 each, once)
                        self._learn([name], await self._ask([name]))
                else:
                    self._learn(batch, answer)
            finally:
                self._asking.difference_update(batch)

    def _learn(self, batch: list[str], answer: ExchangeInfo | int | None) -> None:
        if not isinstance(answer, ExchangeInfo):
            if answer is None:  # (a refusal of the symbol says the same the next time: not retried)
                self.failed.update(batch)
            return
        for info in answer.symbols:
            if info.symbol not in batch:
                continue
            tick = next((f.tickSize for f in info.filters if f.filterType == "PRICE_FILTER"), "")
            decimals = tick_decimals(tick)
            if decimals is not None:
                self.decimals[info.symbol] = decimals

    async def _ask(self, batch: list[str]) -> ExchangeInfo | int | None:
        """The exchange information of ``batch``; :data:`INVALID_SYMBOL` when Binance does not know one
        of them; None when there is no usable answer (counted and logged)."""
        url = self.rest_url + PATH
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Accept": "application/json"})
        self.requests += 1
        status: int | None = None
        try:
            async with self._session.get(url, params={"symbols": json.dumps(batch, separators=(",", ":"))},
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status = resp.status
                body = await read_at_most(resp.content, MAX_ANSWER_BYTES)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._failed(batch, describe_failure(exc, url, self.timeout))
            return None
        if body is None:
            self.counters.bad_answer("answer too large", url)
            self._failed(batch, "answer too large")
            return None
        try:
            decoded: Any = msgspec.json.decode(body)
            if status == 200:
                return msgspec.convert(decoded, ExchangeInfo)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            self.counters.bad_answer("bad exchangeInfo answer", body)
            self._failed(batch, "not an exchangeInfo answer")
            return None
        code = decoded.get("code") if isinstance(decoded, dict) else None
        if status == 400 and code == INVALID_SYMBOL:  # an answer, not a fault: the history reports it
            if len(batch) == 1:
                log.warning("binance: %s is not a Binance symbol (exchangeInfo: Invalid symbol); its "
                            "prices show at a precision taken from the price", batch[0])
            return INVALID_SYMBOL
        self.counters.bad_answer(f"HTTP {status}", body)
        self._failed(batch, f"HTTP {status}")
        return None

    def _failed(self, batch: list[str], why: str) -> None:
        log.warning("binance: could not look up the tick size of %d symbol(s) (%s); their prices show at a "
                    "precision taken from the price until a later lookup succeeds", len(batch), why)

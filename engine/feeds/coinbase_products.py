"""Which Coinbase products are aliases of another, learned from the public products endpoint.

Coinbase merged the order books of some pairs (BTC-USDC trades on the BTC-USD book). A subscription to
the alias is accepted, but the market data comes back under the canonical id: ``market_trades`` and
``ticker`` events for a BTC-USDC subscription carry ``"product_id": "BTC-USD"`` (ccxt's Coinbase Advanced
Trade client resolves them the same way: ccxt issue 26465, ``tryResolveUsdc`` in ts/src/pro/coinbase.ts).
The public product endpoint says so per product (Advanced Trade REST API, "Get Public Product",
``GET /api/v3/brokerage/market/products/{product_id}``): ``alias`` is the canonical id of an aliased
product (BTC-USDC: ``"alias": "BTC-USD"``), and ``alias_to`` lists the aliases of a canonical one
(BTC-USD: ``"alias_to": ["BTC-USDC"]``). The feed asks for each product it subscribes (not the whole
product list), before the subscription goes out, so the first trade already finds its name. The same
answer gives the product's tick size, ``quote_increment`` ("the minimum increment for the quote
currency", e.g. ``"0.01"``; ``price_increment`` when it is missing), whose decimals go to the feed's
``decimals`` so the console shows the product at its own precision.

Answers are cached (``cachetools.TTLCache``, a day, 10,000 products): a product dropped and added back, or a
reconnect, asks nothing again. A lookup that fails (network, HTTP error, a page that is not the product)
is counted and logged; the product is subscribed all the same and looked up again on the next subscribe
or reconnect. Requests go at most ``parallel`` at a time, within Coinbase's 10 requests a second per IP
for public endpoints ("Advanced Trade API Rate Limits"); with the REST history on (``share``), through
its session and its host limiter, so every request to the host counts against one budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import cachetools
import msgspec

from engine.feeds.base import FeedCounters
from engine.feeds.pacing import describe_failure, read_at_most
from engine.precision import tick_decimals

if TYPE_CHECKING:
    from engine.backfill.limiter import RateLimiter

log = logging.getLogger("tickdeck.feeds")

PRODUCT_PATH = "/api/v3/brokerage/market/products/"
MAX_ANSWER_BYTES = 64 * 1024  # a product record is ~1.5 kB
CACHE_TTL_S = 24 * 3600.0
CACHE_SIZE = 10_000


class Product(msgspec.Struct):
    product_id: str
    alias: str = ""
    alias_to: list[str] = msgspec.field(default_factory=list)
    quote_increment: str = ""
    price_increment: str = ""


class ProductAliases:
    """``canonical(product)``: the id Coinbase's market data uses for ``product`` (itself when it is none's
    alias or was never looked up)."""

    def __init__(self, rest_url: str, counters: FeedCounters, timeout: float = 5.0,
                 parallel: int = 4, decimals: dict[str, int] | None = None) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.counters = counters
        self.decimals = decimals if decimals is not None else {}  # product -> its tick's decimals
        self.timeout = timeout
        self.cache: cachetools.TTLCache[str, str] = cachetools.TTLCache(CACHE_SIZE, CACHE_TTL_S)
        self.requests = 0
        self.failures = 0
        self._gate = asyncio.Semaphore(parallel)
        self._session: aiohttp.ClientSession | None = None
        self._shared: Callable[[], aiohttp.ClientSession] | None = None
        self._limiter: RateLimiter | None = None

    def share(self, session: Callable[[], aiohttp.ClientSession], limiter: RateLimiter) -> None:
        """Ask through the REST history's session and host limiter (one of each for the service)."""
        self._shared, self._limiter = session, limiter

    def canonical(self, product: str) -> str:
        return self.cache.get(product, product)

    async def learn(self, products: Iterable[str]) -> None:
        """Look up every product not in the cache (in parallel, each bounded by ``timeout``)."""
        todo = [p for p in dict.fromkeys(products) if p not in self.cache]
        if todo:
            await asyncio.gather(*(self._lookup(p) for p in todo))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _lookup(self, product: str) -> None:
        url = self.rest_url + PRODUCT_PATH + quote(product, safe="")
        async with self._gate:
            if self._shared is not None:
                session = self._shared()
            else:
                if self._session is None:
                    self._session = aiohttp.ClientSession(headers={"Accept": "application/json"})
                session = self._session
            if self._limiter is not None:
                from engine.backfill.limiter import Throttled

                try:
                    await self._limiter.acquire(1)
                except Throttled as exc:
                    self._failed(product, str(exc))
                    return
            self.requests += 1
            status: int | None = None
            headers: Any = None
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    status, headers = resp.status, resp.headers
                    body = await read_at_most(resp.content, MAX_ANSWER_BYTES)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._failed(product, describe_failure(exc, url, self.timeout))
                return
            finally:
                if self._limiter is not None:
                    self._limiter.release(1, status, headers)
        if status != 200 or body is None:  # (a 429 paused the shared limiter: the next lookup waits)
            self._failed(product, f"HTTP {status}" if body is not None else "answer too large")
            return
        try:
            record = msgspec.json.decode(body, type=Product)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            self.counters.bad_message("bad product answer", body)
            self._failed(product, "not a product record")
            return
        if record.product_id != product:
            self.counters.bad_message("bad product answer", body)
            self._failed(product, f"the answer is for {record.product_id!r}")
            return
        canonical = record.alias if record.alias and record.alias != product else product
        self.cache[product] = canonical
        tick = tick_decimals(record.quote_increment or record.price_increment)
        if tick is not None:
            self.decimals[product] = tick
        if canonical != product:
            log.info("coinbase: %s is an alias of %s; its trades arrive under that id", product, canonical)

    def _failed(self, product: str, why: str) -> None:
        self.failures += 1
        log.warning("coinbase: could not look up product %s (%s); subscribing it as it is, looked up again "
                    "on the next subscription", product, why)

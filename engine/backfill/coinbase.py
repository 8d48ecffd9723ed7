"""Coinbase Advanced Trade history over its public REST API: product candles for closed bars, market
trades for the forming bar and for gaps.

Protocol, as the Advanced Trade REST API reference documents it ("Get Public Product Candles", "Get
Public Market Trades", docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/public/, read
2026-07), with the paths and parameters of the official client, coinbase-advanced-py
(``coinbase/rest/public.py``: ``get_public_candles``, ``get_public_market_trades``):

* ``GET /api/v3/brokerage/market/products/{product_id}/candles?start&end&granularity``: ``start`` and
  ``end`` in UNIX seconds; ``granularity`` one of the names in ``GRANULARITY`` (the values of the official
  TypeScript client's ``Granularity``, coinbase-samples/advanced-sdk-ts ``src/rest/types/common-types.ts``;
  an engine interval none of them equals is built from the largest that divides it, as the engine
  aggregates finer bars). At most 350 candles a request: a wider span is refused with HTTP 400,
  ``{"error": "INVALID_ARGUMENT", "error_details": "start and end argument is invalid - number of candles
  requested should be less than 350"}`` (the text clients report, e.g. KmiQ/coinbase-advanced-python
  PR 26 for the former 300). The docs do not say whether ``end`` is inclusive, so each request asks
  ``[start, start + 350 x granularity - 1]``, which holds 350 bucket starts either way, and the next one
  starts where that ended. The answer is ``{"candles": [{"start": "<unix s>", "low", "high", "open",
  "close", "volume"}]}``, every field a string, newest first (nautilus_trader's adapter reads it so,
  crates/adapters/coinbase/src/http/models.rs ``Candle``); an interval without a trade has no candle
  ("No data is published for intervals where there are no ticks", the same service's Exchange docs).
* ``GET /api/v3/brokerage/market/products/{product_id}/ticker?limit&start&end``: the newest trades with a
  time in the window (UNIX seconds), newest first, at most ``TRADES_PAGE`` an answer whatever ``limit``
  asks, and no cursor: ``{"trades": [{"trade_id", "product_id", "price", "size", "time", "side"}],
  "best_bid", "best_ask"}``. Pages are walked back in time (the next window ends at the second of the
  oldest trade had, and what both pages hold is had once), until the window's start or the trade sought.
  Trade ids are per product and increase by one per trade, the ids ``market_trades`` carries (consecutive
  in nautilus_trader's fixture ``test_data/http_ticker.json``), so the seam and a refill are exact by id;
  a page that cannot be walked past (more trades in one second than a page holds) leaves a hole, counted
  (``trades missing``). ``side`` is the maker's, as on the WebSocket (``engine.feeds.coinbase``).
* Aliased products (BTC-USDC trades on the BTC-USD book) are asked for under their canonical id
  (``engine.feeds.coinbase_products``) and their rows handed back under the name subscribed.
* Errors: ``{"error", "error_details", "message"}`` with a 4xx (an unknown product: 404 ``NOT_FOUND``) is
  a refusal; 5xx are the service's trouble and asked again.
* Rate limits ("Advanced Trade API Rate Limits"): public endpoints 10 requests a second per IP; past it,
  HTTP 429. One limiter for the host (``engine.backfill.limiter.RateLimiter``: 8 a second, one every
  125 ms; the product lookups share it), and a 429 stops every request to the host for
  ``Retry-After`` or, Coinbase documenting none, a second.

Every answer is checked row by row; what is wrong is counted per reason (``rest_bad``) and skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import cachetools
import numpy as np

from engine.backfill.fetch import JsonGetter
from engine.backfill.limiter import RateLimiter
from engine.backfill.source import TRADE_DTYPE, HistorySource, HistoryUnavailable, whole_bar
from engine.feeds.base import FeedCounters
from engine.feeds.coinbase import parse_time_ns
from engine.ticks import make_bars

NS = 1_000_000_000
GRANULARITY = {60: "ONE_MINUTE", 300: "FIVE_MINUTE", 900: "FIFTEEN_MINUTE", 1800: "THIRTY_MINUTE",
               3600: "ONE_HOUR", 7200: "TWO_HOUR", 21600: "SIX_HOUR", 86400: "ONE_DAY"}
"""Candle granularities, by their length in seconds."""
PRODUCTS = "/api/v3/brokerage/market/products/"
CANDLES = 350  # the most candles one request may span
TRADES_PAGE = 100  # the most trades one answer holds
REQUESTS_PER_S = 10  # public endpoints, per IP
MAX_PAGES = 300  # per call: 105,000 candles or 30,000 trades, bounding a very long gap
_SIDE = {"BUY": -1, "SELL": 1}  # the maker's side -> the aggressor's, as engine.feeds.coinbase

Sleep = Callable[[float], Awaitable[None]]


def coinbase_limiter(host: str) -> RateLimiter:
    """The host's limiter: 8 of the ``REQUESTS_PER_S`` in any second."""
    return RateLimiter(host, REQUESTS_PER_S, share=0.8, window_s=1.0, max_in_flight=8)


class CoinbaseHistory(HistorySource):
    service = "coinbase"
    max_bars = CANDLES
    trade_ids = True

    def __init__(self, base_url: str, counters: FeedCounters, *, limiter: RateLimiter | None = None,
                 canonical: Callable[[str], Awaitable[str]] | None = None, timeout: float = 10.0,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc or self.base_url
        self.counters = counters
        self.limiter = limiter or coinbase_limiter(self.host)
        self.canonical = canonical  # the product id a subscribed name trades under (an alias's book)
        self._session: aiohttp.ClientSession | None = None
        self._getter = JsonGetter(self.host, self.limiter, counters, timeout, self.session, sleep)
        self.requests = self._getter.requests  # requests sent, per endpoint ("candles", "ticker")
        # the time of trades handed out, by (symbol, id): where the next page after one of them starts
        self._times: cachetools.LRUCache[tuple[str, int], int] = cachetools.LRUCache(4096)

    # --- the interface -------------------------------------------------------------------------
    def bar_interval(self, interval_ns: int) -> int:
        fits = [s for s in GRANULARITY if interval_ns % (s * NS) == 0]
        if not fits:
            raise HistoryUnavailable(
                f"Coinbase has no candle granularity that divides {interval_ns / NS:g} s", final=True)
        return max(fits) * NS

    async def bars(self, symbol: str, start_ns: int, end_ns: int, interval_ns: int, *,
                   older: bool = False) -> np.ndarray:
        step = self.bar_interval(interval_ns) // NS
        product = await self._product(symbol)
        cursor = -(-start_ns // NS // step) * step  # the first bucket opening at or after start
        end = end_ns // NS
        pages: list[np.ndarray] = []
        newest = -1
        for _ in range(MAX_PAGES):
            if cursor >= end:
                break
            last = min(cursor + CANDLES * step, end) - 1
            answer = await self._get("candles", product, {"start": str(cursor), "end": str(last),
                                                          "granularity": GRANULARITY[step]}, "candles")
            bars, newest = self.candles(answer, cursor, last + 1, step, newest)
            if len(bars):
                pages.append(bars)
            cursor += CANDLES * step
        if not pages:
            if not older:
                self.counters.bad_answer("empty range", f"{symbol} candles {start_ns // NS}..{end} s: none")
            return make_bars(0)
        return np.concatenate(pages)

    async def trades(self, symbol: str, *, start_ns: int | None = None, after: int | None = None,
                     until_id: int | None = None) -> np.ndarray:
        if after is not None:
            since = self._times.get((symbol, after))
            if since is None:
                raise HistoryUnavailable(f"no time known for {symbol} trade {after}")
            floor = after
        elif start_ns is not None:
            since, floor = start_ns, -1
        else:
            raise ValueError("trades needs start_ns or after")
        got = await self._walk(symbol, since, floor, None)
        got = got[(got["last_id"] > floor) & (got["ts"] >= since)]
        if len(got):  # ids increase by one per trade: a hole is trades no page gave
            ids = got["last_id"]
            first, last = (floor + 1 if floor >= 0 else int(ids[0])), int(ids[-1])
            if holes := last - first + 1 - len(ids):
                self.counters.bad_answer("trades missing", f"{symbol}: {holes} of ids {first}..{last}")
        self._remember(symbol, got)
        return got

    async def last_trade_before(self, symbol: str, end_ns: int) -> np.ndarray:
        end = end_ns // NS
        got = await self._walk(symbol, end_ns - 86_400 * NS, -1, end, pages=1)
        got = got[got["ts"] < end_ns][-1:]
        self._remember(symbol, got)
        return got

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def session(self) -> aiohttp.ClientSession:
        """The service's one session (the product lookups use it too)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limiter.max_in_flight, ttl_dns_cache=300),
                headers={"Accept": "application/json"})
        return self._session

    # --- trades, walked back in time -----------------------------------------------------------
    async def _walk(self, symbol: str, since: int, floor: int, end: int | None, *,
                    pages: int = MAX_PAGES) -> np.ndarray:
        """Trades of ``symbol`` from ``since`` (ns) to ``end`` (s; None: now), ascending by id, walked
        back page by page until a page reaches ``since`` or the id ``floor``."""
        product = await self._product(symbol)
        start = since // NS
        had: dict[int, tuple[int, float, float, int]] = {}
        for _ in range(pages):
            params = {"limit": str(TRADES_PAGE), "start": str(start)}
            if end is not None:
                params["end"] = str(end)
            page = await self._get("ticker", product, params, "trades")
            rows = self.market_trades(page, (symbol, product))
            new = {tid: row for tid, row in rows.items() if tid not in had}
            had.update(new)
            if len(page) < TRADES_PAGE or not rows:
                break  # the window held no more
            oldest = min(rows)
            ts = rows[oldest][0]
            if oldest <= floor + 1 or ts < since:
                break
            if not new:  # the same page again: more trades in one second than a page holds
                break
            end = ts // NS + 1  # the oldest trade's second, whole (ids had are had once)
        out = np.zeros(len(had), dtype=TRADE_DTYPE)
        for i, tid in enumerate(sorted(had)):
            ts, price, size, side = had[tid]
            out[i] = (ts, price, size, side, tid, tid, tid)
        return out

    def _remember(self, symbol: str, trades: np.ndarray) -> None:
        if len(trades):
            self._times[(symbol, int(trades["last_id"][-1]))] = int(trades["ts"][-1])

    async def _product(self, symbol: str) -> str:
        return await self.canonical(symbol) if self.canonical is not None else symbol

    # --- requests ------------------------------------------------------------------------------
    async def _get(self, endpoint: str, product: str, params: dict[str, str], key: str) -> list[Any]:
        """The list under ``key`` of one GET's JSON object, asked again after a bad answer
        (``JsonGetter``); ``HistoryUnavailable`` for a refusal or when no try gave a usable answer."""
        url = f"{self.base_url}{PRODUCTS}{quote(product, safe='')}/{endpoint}"

        def rows(status: int, decoded: Any, body: bytes) -> list[Any] | str:
            if status != 200 or (isinstance(decoded, dict) and "error" in decoded):
                self.counters.bad_answer(f"HTTP {status}" if status != 200 else "error answer", body)
                raise HistoryUnavailable(
                    f"{self.host} refused {product}: {_error(decoded)} (HTTP {status})", final=True)
            found = decoded.get(key) if isinstance(decoded, dict) else None
            if not isinstance(found, list):
                return f"an answer from {self.host} without its {key!r} list"
            return found

        return await self._getter.get(url, params, 1, endpoint, rows)

    # --- answers, row by row -------------------------------------------------------------------
    def candles(self, rows: list[Any], start: int, end: int, step: int,
                newest: int) -> tuple[np.ndarray, int]:
        """The rows that are candles with trades opening in ``[start, end)`` (s) on the ``step`` grid,
        after ``newest``, ascending; and the newest valid candle's open (``newest`` when none)."""
        good: list[tuple[int, float, float, float, float, float]] = []
        for row in rows:
            try:
                if not isinstance(row, dict):
                    raise TypeError("not a candle")
                t = _integer(row["start"])
                o, h, lo, c, v = (float(_text(row[k])) for k in ("open", "high", "low", "close", "volume"))
            except (TypeError, ValueError, KeyError, OverflowError):
                self.counters.bad_answer("bad row", row)
                continue
            if t < start or t >= end or t % step:
                self.counters.bad_answer("bar outside the range", row)
            elif not whole_bar(o, h, lo, c, v):
                self.counters.bad_answer("bad bar", row)
            else:
                good.append((t, o, h, lo, c, v))
        good.reverse()  # newest first, as documented
        if any(a[0] > b[0] for a, b in itertools.pairwise(good)):
            self.counters.bad_answer("out-of-order bars", [g[0] for g in good][:20])
            good.sort(key=lambda g: g[0])
        out = make_bars(len(good))
        n, last = 0, newest
        for t, o, h, lo, c, v in good:
            if t <= last:  # already had (from an earlier page, or twice in this one)
                self.counters.bad_answer("overlapping bars", t)
                continue
            last = t
            if v > 0:  # an interval nothing traded in makes no bar
                out[n] = (-1, t * NS, o, h, lo, c, v, -1)
                n += 1
        return out[:n], last

    def market_trades(self, rows: list[Any],
                      names: tuple[str, ...]) -> dict[int, tuple[int, float, float, int]]:
        """The valid trades of a page, by id: (time ns, price, size, side); the product must be one of
        ``names`` (the name subscribed or the id asked for)."""
        out: dict[int, tuple[int, float, float, int]] = {}
        times: list[tuple[int, int]] = []
        for row in rows:
            try:
                if not isinstance(row, dict):
                    raise TypeError("not a trade")
                tid = _integer(row["trade_id"])
                price, size = float(_text(row["price"])), float(_text(row["size"]))
                ts = parse_time_ns(_text(row["time"]))
                side = _SIDE.get(str(row.get("side")), 0)
                product = row.get("product_id", names[-1])
            except (TypeError, ValueError, KeyError, OverflowError):
                self.counters.bad_answer("bad row", row)
                continue
            if product not in names:
                self.counters.bad_answer("another product", row)
            elif not (0 < price < math.inf and 0 <= size < math.inf and 0 <= tid < 2**63):
                self.counters.bad_answer("bad trade", row)
            elif tid in out:
                self.counters.bad_answer("overlapping trades", tid)
            else:
                out[tid] = (ts, price, size, side)
                times.append((tid, ts))
        if any(a[0] < b[0] for a, b in itertools.pairwise(times)):  # newest first, as documented
            self.counters.bad_answer("out-of-order trades", [t for t, _ in times][:20])
        return out


def _text(value: object) -> str:
    """Coinbase sends numbers and times as strings; anything else is a bad row."""
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _integer(value: object) -> int:
    """A non-negative integer sent as a string of digits (an id, a time in seconds)."""
    text = _text(value)
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValueError(f"not an integer: {text[:40]!r}")
    return int(text)


def _error(decoded: object) -> str:
    if isinstance(decoded, dict):
        text = (decoded.get("error_details") or decoded.get("message") or decoded.get("error")
                or "no message")
        code = decoded.get("error")
        return (f"{text}" + (f" ({code})" if code and code != text else ""))[:200]
    return "no message"

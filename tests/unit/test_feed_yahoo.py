"""The Yahoo quote poller against a local server speaking /v7/finance/quote and Yahoo's cookie-and-crumb
handshake: ticks from scripted quotes, batching, the quote cache, rate limit and hourly budget, the
handshake and its refresh, backoff and recovery, and every bad answer.

Every feed starts with a handshake (a cookie request and a crumb request), so budgets below count two
requests more than quote requests, once per handshake."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest

from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.feeds.pacing import RequestBudget, TokenBucket, describe_failure, retry_after
from engine.feeds.yahoo import Quote, YahooFeed
from engine.feeds.yahoo_answer import MAX_BODY_BYTES, MAX_QUOTE_BYTES
from engine.ticks import SymbolTable
from tests.fakes import FakeClock
from tests.servers.yahoo import INVALID_CRUMB, Record, YahooServer

T0 = 1_700_000_000
SEC = 1_000_000_000
SEED = 11
Items = list[np.ndarray | FeedStatus]
Status = tuple[str, str, float, tuple[str, ...]]  # state, reason, retry_in, symbols
CONNECTING: Status = ("connecting", "", 0.0, ())
COOKIE_1 = "d=AQABBN0001ZmYCEMs2&S=AQAAAtX0001Lw"  # what the server issues first, and its crumb
CRUMB_1 = "zLoP.Fp/001"


def make_feed(server: YahooServer | str, wanted: list[str], **kw: Any) -> YahooFeed:
    """Short intervals and a generous limiter and budget unless a test is about them."""
    kw.setdefault("interval", 0.05)
    kw.setdefault("limiter", TokenBucket(60_000, burst=1000))
    kw.setdefault("budget", RequestBudget(10_000))
    kw.setdefault("backoff", Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)))
    url = server if isinstance(server, str) else server.url
    kw.setdefault("cookie_url", url if isinstance(server, str) else server.cookie_url)
    return YahooFeed(SymbolTable(64), wanted, url, **kw)


async def run(feed: YahooFeed, until: Callable[[Items], bool], limit_s: float = 10.0) -> Items:
    items: Items = []
    async with asyncio.timeout(limit_s), contextlib.aclosing(feed.stream()) as stream:
        async for item in stream:
            items.append(item)
            if until(items):
                break
    return items


def n_ticks(items: Items) -> int:
    return sum(len(i) for i in items if isinstance(i, np.ndarray))


def ticks(feed: YahooFeed, items: Items, since_ns: int) -> list[tuple[str, int, float, float, int, int]]:
    """Every tick as (symbol, ts, price, size, side, trade_id); receive times checked, then left out."""
    out = []
    for batch in (i for i in items if isinstance(i, np.ndarray)):
        assert all(since_ns <= r <= time.time_ns() for r in batch["recv"])
        out += [(feed.symbols.name(int(t["sym"])), int(t["ts"]), float(t["price"]), float(t["size"]),
                 int(t["side"]), int(t["trade_id"])) for t in batch]
    return out


def statuses(items: Items) -> list[Status]:
    return [(s.state, s.reason, s.retry_in, s.symbols) for s in items if isinstance(s, FeedStatus)]


def kinds(items: Items) -> list[str]:
    return [i.state if isinstance(i, FeedStatus) else f"ticks:{len(i)}" for i in items]


def live(left: int, limit: int = 10_000) -> Status:
    return ("live", f"{left}/{limit} requests left this hour", 0.0, ())


def secs(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.2g} s"


def counters(feed: YahooFeed, **changed: object) -> dict[str, object]:
    """What ``counters.as_dict()`` should be: all zero/empty (one handshake) except ``changed``."""
    base: dict[str, object] = {
        "feed": "yahoo", "messages": 0, "ticks": 0, "reconnects": 0, "duplicates": 0, "gaps": 0,
        "out_of_order": 0, "bad": {}, "requests": 0, "handshakes": 1, "http_errors": {}, "timeouts": 0,
        "connection_errors": 0, "cache_hits": 0, "fresh_skips": 0, "unchanged": 0, "rate_waits": 0,
        "budget_left": feed.budget.limit, "budget_limit": feed.budget.limit,
    }
    base.update(changed)
    return base


# --- ticks ------------------------------------------------------------------------------------------
async def test_each_new_time_and_price_is_one_tick_sized_by_the_volume_increase() -> None:
    market = {
        "AAPL": [(T0, 189.3, 51_234_567), (T0, 189.3, 51_234_567), (T0 + 5, 189.5, 51_240_000),
                 (T0 + 3, 189.1, 51_250_000), (T0 + 7, 189.4, 1_000), (T0 + 9, 189.45, 1_500)],
        "MSFT": [(T0, 370.1, 20_000_000), (T0 + 1, 370.1, 20_000_100), (T0 + 1, 370.2, 20_000_100),
                 (T0 + 1, 370.2, 20_000_100), (T0 + 2, 370.3, 20_000_400), (T0 + 2, 370.3, 20_000_400)],
    }
    async with YahooServer(market) as server:
        feed = make_feed(server, ["AAPL", "MSFT"])
        start = time.time_ns()
        items = await run(feed, lambda it: n_ticks(it) == 8)
        assert ticks(feed, items, start) == [
            ("AAPL", T0 * SEC, 189.3, 0.0, 0, -1),  # first sight: no volume to compare with
            ("MSFT", T0 * SEC, 370.1, 0.0, 0, -1),
            ("MSFT", (T0 + 1) * SEC, 370.1, 100.0, 0, -1),  # same price, new time
            ("AAPL", (T0 + 5) * SEC, 189.5, 5_433.0, 0, -1),
            ("MSFT", (T0 + 1) * SEC, 370.2, 0.0, 0, -1),  # same time, new price
            ("AAPL", (T0 + 7) * SEC, 189.4, 0.0, 0, -1),  # volume restarted: a new session
            ("MSFT", (T0 + 2) * SEC, 370.3, 300.0, 0, -1),
            ("AAPL", (T0 + 9) * SEC, 189.45, 500.0, 0, -1),
        ]
        assert statuses(items) == [CONNECTING, live(9997), live(9996), live(9995), live(9994), live(9993)]
        assert server.requests == [("AAPL", "MSFT")] * 6
        assert server.calls == ["cookie", "crumb", *["quote"] * 6]
        quote = feed.latest["AAPL"]
        assert quote == Quote("AAPL", 189.45, (T0 + 9) * SEC, 1_500.0, "USD", quote.received_ns)
        assert feed.counters.as_dict() == counters(
            feed, messages=6, ticks=8, requests=8, unchanged=3, out_of_order=1, budget_left=9992)


async def test_symbols_go_many_to_a_request_over_one_pooled_connection() -> None:
    names = [f"S{i}" for i in range(1, 8)]
    async with YahooServer({n: [(T0 + i, 10.0 + i, 100)] for i, n in enumerate(names)}) as server:
        feed = make_feed(server, names, batch_size=3)
        start = time.time_ns()
        items = await run(feed, lambda it: statuses(it)[-1] == live(9995))
        assert kinds(items) == ["connecting", "live", "ticks:3", "ticks:3", "ticks:1", "live"]
        assert ticks(feed, items, start) == [(n, (T0 + i) * SEC, 10.0 + i, 0.0, 0, -1)
                                             for i, n in enumerate(names)]
        assert statuses(items) == [CONNECTING, live(9997), live(9995)]
        assert server.requests == [("S1", "S2", "S3"), ("S4", "S5", "S6"), ("S7",)]
        assert len(server.peers) == 1  # keep-alive: the crumb and the quotes went over one connection
        assert feed.counters.as_dict() == counters(feed, messages=3, ticks=7, requests=5, budget_left=9995)


# --- the cache ----------------------------------------------------------------------------------------
async def test_fresh_quotes_come_from_the_cache_and_the_poller_skips_them() -> None:
    market = {"AAPL": [(T0, 189.3, 10)], "MSFT": [(T0, 370.1, 20)], "NVDA": [(T0, 480.5, 30)]}
    async with YahooServer(market) as server:
        feed = make_feed(server, ["AAPL", "MSFT"], interval=30.0)
        start = time.time_ns()
        first = await feed.quote("AAPL")  # a panel asks before the stream runs: one request
        assert first is not None and first == Quote("AAPL", 189.3, T0 * SEC, 10.0, "USD", first.received_ns)
        assert await feed.quote("AAPL") is first  # fresh: no request
        assert server.requests == [("AAPL",)]
        items: Items = []
        async with asyncio.timeout(10), contextlib.aclosing(feed.stream()) as stream:
            async for item in stream:
                items.append(item)
                if n_ticks(items) == 2:
                    break
            assert server.requests == [("AAPL",), ("MSFT",)]  # the poller skipped the fresh AAPL
            assert (await feed.quote("MSFT")).price == 370.1  # type: ignore[union-attr]
            both = await asyncio.gather(feed.quote("NVDA"), feed.quote("NVDA"))  # one request for both
            assert both[0] is both[1] and both[0] is not None and both[0].price == 480.5
            assert await feed.quote("NOPE") is None  # Yahoo leaves unknown symbols out
            items += [await anext(stream), await anext(stream)]  # the budget left; the NVDA tick
        assert server.requests == [("AAPL",), ("MSFT",), ("NVDA",), ("NOPE",)]
        assert kinds(items) == ["connecting", "live", "ticks:1", "ticks:1", "live", "ticks:1"]
        assert ticks(feed, items, start) == [("AAPL", T0 * SEC, 189.3, 0.0, 0, -1),
                                             ("MSFT", T0 * SEC, 370.1, 0.0, 0, -1),
                                             ("NVDA", T0 * SEC, 480.5, 0.0, 0, -1)]
        assert statuses(items) == [CONNECTING, live(9997), live(9994)]
        assert server.calls == ["cookie", "crumb", *["quote"] * 4]  # quote() made the handshake
        assert feed.counters.as_dict() == counters(
            feed, messages=4, ticks=3, requests=6, cache_hits=2, fresh_skips=1,
            bad={"symbol not in result": 1}, budget_left=9994)


# --- the cookie and the crumb -------------------------------------------------------------------------
async def test_one_handshake_serves_every_request_and_its_cookie_and_crumb_go_with_each() -> None:
    async with YahooServer(two_symbols(3)) as server:
        feed = make_feed(server, ["AAPL", "MSFT"])
        start = time.time_ns()
        aapl, msft = await asyncio.gather(feed.quote("AAPL"), feed.quote("MSFT"))  # one handshake for both
        assert aapl is not None and msft is not None and (aapl.price, msft.price) == (100.0, 200.0)
        items = await run(feed, lambda it: n_ticks(it) == 6)
        assert server.calls == ["cookie", "crumb", "quote", "quote", "quote", "quote"]
        assert sorted(server.requests[:2]) == [("AAPL",), ("MSFT",)]
        assert server.requests[2:] == [("AAPL", "MSFT")] * 2
        assert server.cookies == [COOKIE_1] and server.crumbs == {COOKIE_1: CRUMB_1}
        # the cookie exactly as set ('=' and '&' unquoted), the crumb ('.' and '/') decoded to itself
        assert server.credentials == [(COOKIE_1, CRUMB_1)] * 4
        assert kinds(items) == ["connecting", "live", "ticks:2", "ticks:2", "live", "ticks:2"]
        assert ticks(feed, items, start) == [
            (name, (T0 + i) * SEC, base + i, float(i > 0), 0, -1)
            for i in range(3) for name, base in (("AAPL", 100.0), ("MSFT", 200.0))]
        # both ad-hoc requests were paid for before the first answer: the waiting one ran at the
        # handshake's end, while the first was still on the wire
        assert statuses(items) == [CONNECTING, live(9996), live(9995)]
        assert feed.counters.as_dict() == counters(feed, messages=4, ticks=6, requests=6, budget_left=9994)


async def test_an_expired_crumb_is_replaced_without_the_quotes_going_stale() -> None:
    async with YahooServer(two_symbols(3)) as server:
        feed = make_feed(server, ["AAPL"])
        start = time.time_ns()
        expired: list[int] = []

        def until(items: Items) -> bool:
            if n_ticks(items) == 1 and not expired:
                server.expire_crumbs()  # between two polls: the next quote request is refused
                expired.append(len(server.calls))
            return n_ticks(items) == 3

        items = await run(feed, until)
        assert expired == [3]
        assert server.calls == ["cookie", "crumb", "quote", "quote", "cookie", "crumb", "quote", "quote"]
        cookie_2 = server.cookies[1]
        assert server.credentials == [(COOKIE_1, CRUMB_1), (COOKIE_1, CRUMB_1), (cookie_2, "zLoP.Fp/002"),
                                      (cookie_2, "zLoP.Fp/002")]
        assert server.requests == [("AAPL",)] * 4
        assert kinds(items) == ["connecting", "live", "ticks:1", "ticks:1", "live", "ticks:1"]
        assert ticks(feed, items, start) == [("AAPL", (T0 + i) * SEC, 100.0 + i, float(i > 0), 0, -1)
                                             for i in range(3)]
        assert statuses(items) == [CONNECTING, live(9997), live(9993)]
        assert feed.stale == {}
        assert feed.counters.as_dict() == counters(feed, messages=3, ticks=3, requests=8, handshakes=2,
                                                   http_errors={401: 1}, budget_left=9992)


async def test_a_crumb_refused_again_after_its_refresh_goes_stale_with_yahoos_reason() -> None:
    async with YahooServer(two_symbols(2)) as server:
        server.ok()
        server.fail(401, body=INVALID_CRUMB)  # the refreshed crumb is refused too
        feed = make_feed(server, ["AAPL"])
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        host = server.url.removeprefix("http://")
        seen: list[dict[str, str]] = []
        expired: list[bool] = []

        def until(items: Items) -> bool:
            if n_ticks(items) == 1 and not expired:
                server.expire_crumbs()
                expired.append(True)
            if isinstance(items[-1], FeedStatus) and items[-1].state == "stale":
                seen.append(dict(feed.stale))
            return n_ticks(items) == 2

        items = await run(feed, until)
        why = f"HTTP 401 from {host}: Unauthorized: Invalid Crumb"
        assert statuses(items) == [CONNECTING, live(9997),
                                   ("stale", f"AAPL: {why}, retrying in {secs(d1)}", d1, ("AAPL",)),
                                   live(9990)]
        assert kinds(items) == ["connecting", "live", "ticks:1", "stale", "live", "ticks:1"]
        assert seen == [{"AAPL": why}] and feed.stale == {}
        # one refresh, then the backoff; after it, a handshake again rather than the refused crumb
        assert server.calls == ["cookie", "crumb", "quote", "quote", "cookie", "crumb", "quote",
                                "cookie", "crumb", "quote"]
        assert [crumb for _, crumb in server.credentials] == [CRUMB_1, CRUMB_1, "zLoP.Fp/002", "zLoP.Fp/003"]
        assert feed.counters.as_dict() == counters(feed, messages=2, ticks=2, requests=10, handshakes=3,
                                                   reconnects=1, http_errors={401: 2}, budget_left=9990)


async def test_a_broken_handshake_says_why_and_the_feed_recovers() -> None:
    async with YahooServer(two_symbols(1)) as server:
        server.fail(502, at="cookie")  # answers, but sets no cookie
        server.fail(429, retry_after="0.05", at="crumb")
        server.fail(500, at="crumb")
        server.body(b"", at="crumb")
        server.body(b"<html><body>Will be right back...</body></html>", at="crumb")
        feed = make_feed(server, ["AAPL"])
        twin = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED))
        d1, d2, d3, d4 = twin.next(), twin.next(), twin.next(), twin.next()
        host, cookie_host = (u.removeprefix("http://") for u in (server.url, server.cookie_url))
        items = await run(feed, lambda it: n_ticks(it) == 1)
        assert statuses(items) == [
            CONNECTING,
            ("reconnecting", f"no cookie from {cookie_host} (HTTP 502)", d1, ()),
            ("reconnecting", f"no crumb from {host}: HTTP 429", 0.05, ()),
            ("reconnecting", f"no crumb from {host}: HTTP 500", d2, ()),
            ("reconnecting", f"no crumb from {host} (empty answer)", d3, ()),
            ("reconnecting", f"no crumb from {host} (not a crumb)", d4, ()),
            live(9988)]
        assert kinds(items) == ["connecting", *["reconnecting"] * 5, "live", "ticks:1"]
        assert server.calls == ["cookie", *["cookie", "crumb"] * 5, "quote"]
        assert server.credentials == [(server.cookies[-1], "zLoP.Fp/001")]
        assert feed.counters.as_dict() == counters(
            feed, messages=1, ticks=1, requests=12, handshakes=6, reconnects=5,
            http_errors={429: 1, 500: 1}, bad={"empty crumb": 1, "not a crumb": 1}, budget_left=9988)


# --- pacing: rate limit and hourly budget ------------------------------------------------------------
def test_token_bucket_allows_a_burst_then_spaces_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock)  # one a second
    assert [bucket.delay(), bucket.delay(), bucket.delay()] == [0.0, 0.0, 1.0]
    clock.now = 0.25
    assert bucket.delay() == pytest.approx(0.75)
    clock.now = 100.0  # a long pause refills only up to the burst
    assert [bucket.delay(), bucket.delay(), bucket.delay()] == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_budget_is_a_sliding_hour() -> None:
    clock = FakeClock()
    budget = RequestBudget(2, clock=clock)
    assert (budget.left, str(budget), budget.resets_in()) == (2, "2/2 requests left this hour", 0.0)
    budget.spend()
    clock.now = 600.0
    budget.spend()
    assert (budget.left, str(budget), budget.resets_in()) == (0, "0/2 requests left this hour", 3000.0)
    clock.now = 3600.0  # the first request has left the window
    assert (budget.left, budget.resets_in()) == (1, 0.0)
    with pytest.raises(ValueError):
        RequestBudget(0)


async def test_requests_wait_for_the_rate_limiter() -> None:
    names = ["A", "B", "C", "D", "E"]
    async with YahooServer({n: [(T0, 1.0 + i, 5)] for i, n in enumerate(names)}) as server:
        clock = FakeClock()
        feed = make_feed(server, names, batch_size=1, limiter=TokenBucket(120, 2, clock, clock.sleep))
        items = await run(feed, lambda it: n_ticks(it) == 5)
        # the handshake's two requests take the burst, then one request every half second
        assert clock.sleeps == [0.5] * 5
        assert server.requests == [(n,) for n in names]
        assert statuses(items) == [CONNECTING, live(9997)]
        assert feed.counters.as_dict() == counters(feed, messages=5, ticks=5, requests=7, rate_waits=5,
                                                   budget_left=9993)


async def test_a_spent_budget_stops_requests_and_says_until_when() -> None:
    names = ["A", "B", "C", "D", "E"]
    async with YahooServer({n: [(T0, 1.0 + i, 5)] for i, n in enumerate(names)}) as server:
        feed = make_feed(server, names, batch_size=1, interval=30.0, budget=RequestBudget(5))
        items: Items = []
        async with asyncio.timeout(10), contextlib.aclosing(feed.stream()) as stream:
            async for item in stream:
                items.append(item)
                if isinstance(item, FeedStatus) and item.state == "stale":
                    break
            assert (await feed.quote("A")) is not None  # fresh, from the cache
            assert await feed.quote("D") is None  # not fetched: no budget left
        assert kinds(items) == ["connecting", "live", "ticks:1", "ticks:1", "ticks:1", "stale"]
        *head, (state, reason, retry_in, symbols) = statuses(items)
        assert head == [CONNECTING, live(2, 5)]
        assert (state, reason) == ("stale", "D, E: 0/5 requests left this hour, next request in 3600 s")
        assert retry_in == pytest.approx(3600, abs=5) and symbols == ("D", "E")
        assert feed.stale == {"D": "0/5 requests left this hour", "E": "0/5 requests left this hour"}
        assert server.requests == [("A",), ("B",), ("C",)]
        assert server.calls == ["cookie", "crumb", "quote", "quote", "quote"]
        assert feed.counters.as_dict() == counters(feed, messages=3, ticks=3, requests=5, cache_hits=1,
                                                   budget_left=0)


async def test_the_handshake_is_paid_for_from_the_budget() -> None:
    async with YahooServer(two_symbols(1)) as server:
        feed = make_feed(server, ["AAPL"], budget=RequestBudget(1))
        items = await run(feed, lambda it: len(it) == 2)
        [connecting, (state, reason, retry_in, symbols)] = statuses(items)
        assert connecting == CONNECTING
        assert (state, reason, symbols) == ("reconnecting", "0/1 requests left this hour", ())
        assert retry_in == pytest.approx(3600, abs=5)
        assert server.calls == ["cookie"]  # the cookie spent the budget; the crumb waits for the next hour
        assert feed.stale == {"AAPL": "0/1 requests left this hour"}
        assert feed.counters.as_dict() == counters(feed, requests=1, budget_left=0)


# --- failures, backoff, recovery ----------------------------------------------------------------------
def two_symbols(n: int) -> dict[str, list[tuple[int, float, int]]]:
    return {"AAPL": [(T0 + i, 100.0 + i, 1000 + i) for i in range(n)],
            "MSFT": [(T0 + i, 200.0 + i, 2000 + i) for i in range(n)]}


async def test_429_honours_retry_after_then_goes_live_again() -> None:
    async with YahooServer(two_symbols(2)) as server:
        server.ok()
        server.fail(429, retry_after="1")
        feed = make_feed(server, ["AAPL", "MSFT"])
        host = server.url.removeprefix("http://")
        seen: list[dict[str, str]] = []

        def until(items: Items) -> bool:
            if isinstance(items[-1], FeedStatus) and items[-1].state == "stale":
                seen.append(dict(feed.stale))
            return n_ticks(items) == 4

        start = time.time_ns()
        items = await run(feed, until)
        why = f"HTTP 429 from {host}"
        assert statuses(items) == [CONNECTING, live(9997),
                                   ("stale", f"AAPL, MSFT: {why}, retrying in 1 s", 1.0, ("AAPL", "MSFT")),
                                   live(9995)]
        assert kinds(items) == ["connecting", "live", "ticks:2", "stale", "live", "ticks:2"]
        assert seen == [{"AAPL": why, "MSFT": why}] and feed.stale == {}
        assert ticks(feed, items, start) == [
            ("AAPL", T0 * SEC, 100.0, 0.0, 0, -1), ("MSFT", T0 * SEC, 200.0, 0.0, 0, -1),
            ("AAPL", (T0 + 1) * SEC, 101.0, 1.0, 0, -1), ("MSFT", (T0 + 1) * SEC, 201.0, 1.0, 0, -1)]
        assert server.requests == [("AAPL", "MSFT")] * 3
        assert server.calls == ["cookie", "crumb", "quote", "quote", "quote"]  # a 429 keeps the crumb
        assert feed.counters.as_dict() == counters(feed, messages=2, ticks=4, requests=5, reconnects=1,
                                                   http_errors={429: 1}, budget_left=9995)


async def test_5xx_backs_off_exponentially_and_recovers() -> None:
    async with YahooServer(two_symbols(2)) as server:
        server.ok()
        server.fail(500)
        server.fail(503)
        feed = make_feed(server, ["AAPL", "MSFT"])
        twin = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED))
        d1, d2 = twin.next(), twin.next()
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 4)
        both = ("AAPL", "MSFT")
        assert statuses(items) == [
            CONNECTING, live(9997),
            ("stale", f"AAPL, MSFT: HTTP 500 from {host}, retrying in {secs(d1)}", d1, both),
            ("stale", f"AAPL, MSFT: HTTP 503 from {host}, retrying in {secs(d2)}", d2, both),
            live(9994)]
        assert kinds(items) == ["connecting", "live", "ticks:2", "stale", "stale", "live", "ticks:2"]
        assert feed.backoff.attempt == 0  # reset by the success
        assert server.requests == [("AAPL", "MSFT")] * 4
        assert feed.counters.as_dict() == counters(feed, messages=2, ticks=4, requests=6, reconnects=2,
                                                   http_errors={500: 1, 503: 1}, budget_left=9994)


async def test_a_refusal_of_a_fresh_crumb_is_reported_and_the_retry_starts_a_new_handshake() -> None:
    async with YahooServer(two_symbols(1)) as server:
        server.fail(401)  # Yahoo refuses the crumb it has just issued (a region it does not serve)
        feed = make_feed(server, ["AAPL"])
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 1)
        assert statuses(items) == [
            CONNECTING,
            ("reconnecting", f"HTTP 401 from {host}: Unauthorized: User is unable to access this feature"
                             " - https://bit.ly/yahoo-finance-api-feedback", d1, ()),
            live(9994)]
        assert kinds(items) == ["connecting", "reconnecting", "live", "ticks:1"]
        # no second handshake at once: the refusal waited out the backoff, then a new cookie and crumb
        assert server.calls == ["cookie", "crumb", "quote"] * 2
        assert server.credentials == [(COOKIE_1, CRUMB_1), (server.cookies[1], "zLoP.Fp/002")]
        assert feed.counters.as_dict() == counters(feed, messages=1, ticks=1, requests=6, reconnects=1,
                                                   handshakes=2, http_errors={401: 1}, budget_left=9994)


async def test_a_partial_recovery_names_the_symbols_still_stale() -> None:
    async with YahooServer(two_symbols(1)) as server:
        server.fail(500)
        feed = make_feed(server, ["AAPL", "MSFT"], batch_size=1)
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 2)
        why = f"HTTP 500 from {host}"
        assert statuses(items) == [CONNECTING, ("reconnecting", why, d1, ()),
                                   ("stale", f"MSFT: {why}", 0.0, ("MSFT",)), live(9995)]
        assert kinds(items) == ["connecting", "reconnecting", "stale", "ticks:1", "live", "ticks:1"]
        assert server.requests == [("AAPL",), ("AAPL",), ("MSFT",)]
        assert feed.counters.as_dict() == counters(feed, messages=2, ticks=2, requests=5, reconnects=1,
                                                   http_errors={500: 1}, budget_left=9995)


async def test_a_stalled_request_times_out_and_the_symbol_recovers() -> None:
    async with YahooServer(two_symbols(2)) as server:
        server.ok()
        server.stall(10.0)
        feed = make_feed(server, ["AAPL"], timeout=0.5)
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 2)
        assert statuses(items) == [
            CONNECTING, live(9997),
            ("stale", f"AAPL: no answer from {host} within 0.5 s, retrying in {secs(d1)}", d1, ("AAPL",)),
            live(9995)]
        assert kinds(items) == ["connecting", "live", "ticks:1", "stale", "live", "ticks:1"]
        assert server.requests == [("AAPL",)] * 3
        assert len(server.peers) == 2  # the timed-out connection was dropped, the session lived on
        assert server.credentials == [(COOKIE_1, CRUMB_1)] * 3  # and its cookie jar with it
        assert feed.counters.as_dict() == counters(feed, messages=2, ticks=2, requests=5, reconnects=1,
                                                   timeouts=1, budget_left=9995)


async def test_a_refused_connection_says_so_and_keeps_retrying() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    feed = make_feed(f"http://127.0.0.1:{port}", ["AAPL"])
    twin = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED))
    d1, d2 = twin.next(), twin.next()
    items = await run(feed, lambda it: len(it) == 3)
    why = f"connection refused by 127.0.0.1:{port}"  # the first request, for the cookie, says so
    assert statuses(items) == [CONNECTING, ("reconnecting", why, d1, ()), ("reconnecting", why, d2, ())]
    assert feed.stale == {"AAPL": why}
    assert feed.counters.as_dict() == counters(feed, requests=2, handshakes=2, reconnects=2,
                                               connection_errors=2, budget_left=9998)


async def test_a_tls_failure_says_so() -> None:
    async with YahooServer(two_symbols(1)) as server:  # plain HTTP where the feed expects TLS
        feed = make_feed(server.url.replace("http://", "https://"), ["AAPL"])
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        items = await run(feed, lambda it: len(it) == 2)
        host = server.url.removeprefix("http://")
        assert statuses(items) == [CONNECTING,
                                   ("reconnecting", f"TLS error with {host}: WRONG_VERSION_NUMBER", d1, ())]
        assert feed.counters.as_dict() == counters(feed, requests=1, reconnects=1, connection_errors=1,
                                                   budget_left=9999)


def test_dns_failures_and_retry_after_values() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("nowhere.invalid", 443, True, True, None, None, None)
    dns = aiohttp.ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known"))
    assert describe_failure(dns, "https://nowhere.invalid", 10) == (
        "DNS lookup failed for nowhere.invalid: Name or service not known")
    assert retry_after("30") == 30.0
    assert retry_after("1e9") == 3600.0  # capped
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert retry_after(later) == pytest.approx(120, abs=2)
    assert [retry_after(v) for v in (None, "", "soon", "nan")] == [None, None, None, None]


# --- bad answers ------------------------------------------------------------------------------------
def edit(key: str, value: object) -> Callable[[list[Record]], None]:
    def apply(records: list[Record]) -> None:
        records[0][key] = value  # AAPL, the first record

    return apply


def drop(key: str) -> Callable[[list[Record]], None]:
    def apply(records: list[Record]) -> None:
        del records[0][key]

    return apply


async def test_every_bad_quote_is_counted_and_skipped_while_the_rest_flow() -> None:
    async with YahooServer(two_symbols(12)) as server:
        server.ok()
        server.mutate(drop("regularMarketPrice"))
        server.mutate(edit("regularMarketPrice", None))
        server.mutate(edit("regularMarketPrice", -1.0))
        server.mutate(edit("regularMarketPrice", float("nan")))  # sent as the bare token NaN
        server.mutate(edit("regularMarketPrice", "189.3"))
        server.mutate(edit("regularMarketTime", None))
        server.mutate(edit("regularMarketVolume", -5))
        server.mutate(lambda records: records.append({**records[0], "symbol": "ZZZZ"}))
        server.partial("AAPL")
        server.mutate(lambda records: ["AAPL", *records[1:]])
        feed = make_feed(server, ["AAPL", "MSFT"])
        start = time.time_ns()
        items = await run(feed, lambda it: n_ticks(it) == 15)
        msft = [("MSFT", (T0 + i) * SEC, 200.0 + i, float(i > 0), 0, -1) for i in range(12)]
        expected = [("AAPL", T0 * SEC, 100.0, 0.0, 0, -1), *msft[:8],
                    ("AAPL", (T0 + 8) * SEC, 108.0, 8.0, 0, -1), *msft[8:11],
                    ("AAPL", (T0 + 10) * SEC, 110.0, 2.0, 0, -1), msft[11]]
        assert ticks(feed, items, start) == expected
        assert statuses(items) == [CONNECTING, *[live(10_000 - k) for k in range(3, 14)]]
        assert server.requests == [("AAPL", "MSFT")] * 12
        assert feed.counters.as_dict() == counters(
            feed, messages=12, ticks=15, requests=14, budget_left=9986,
            bad={"missing field": 1, "bad price": 3, "bad field type": 2, "bad time": 1, "bad volume": 1,
                 "unknown symbol": 1, "symbol not in result": 2})  # left out; then a string, not AAPL


async def test_unusable_answers_are_counted_and_make_the_symbols_stale() -> None:
    async with YahooServer(two_symbols(2)) as server:
        server.ok()
        server.body(b'{"quoteResponse":{"result":[{"symbol":"AAPL",')
        server.body(b'{"finance":{"result":null,"error":null}}')
        server.body(b'{"quoteResponse":{"result":{"symbol":"AAPL"},"error":null}}')
        server.body(b'{"quoteResponse":{"result":null,"error":{"code":"argument-error",'
                    b'"description":"Invalid symbols"}}}')
        feed = make_feed(server, ["AAPL"])
        twin = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED))
        delays = [twin.next() for _ in range(4)]
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 2)
        whys = ["malformed json", "unexpected shape", "result not a list",
                "error: argument-error: Invalid symbols"]
        assert statuses(items) == [
            CONNECTING, live(9997),
            *[("stale", f"AAPL: unusable answer from {host} ({why}), retrying in {secs(d)}", d, ("AAPL",))
              for why, d in zip(whys, delays, strict=True)],
            live(9992)]
        assert feed.counters.as_dict() == counters(
            feed, messages=6, ticks=2, requests=8, reconnects=4, budget_left=9992,
            bad={"malformed json": 1, "unexpected shape": 1, "result not a list": 1, "error in answer": 1})


@pytest.mark.parametrize(("compress", "chunked"), [(False, False), (True, False), (False, True)],
                         ids=["with its length", "compressed", "in chunks"])
async def test_an_answer_over_the_size_cap_is_a_bad_message_and_the_symbols_go_stale(
        compress: bool, chunked: bool) -> None:
    """A body is read up to the cap, whatever the headers announce: its length, a compressed one
    (measured as it decompresses: a few kB on the wire), one in chunks of unknown length."""
    async with YahooServer(two_symbols(2)) as server:
        limit = MAX_BODY_BYTES + MAX_QUOTE_BYTES  # one symbol requested
        server.ok()
        server.oversize(limit + 1, compress=compress, chunked=chunked)
        feed = make_feed(server, ["AAPL"])
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 2)
        why = f"answer from {host} over {limit:,} bytes"
        assert statuses(items) == [CONNECTING, live(9997),
                                   ("stale", f"AAPL: {why}, retrying in {secs(d1)}", d1, ("AAPL",)),
                                   live(9995)]
        assert feed.counters.as_dict() == counters(feed, messages=3, ticks=2, requests=5, reconnects=1,
                                                   budget_left=9995, bad={"answer too large": 1})
        assert feed.counters.samples["answer too large"] == f"HTTP 200 from {host}: over {limit:,} bytes"


async def test_an_answer_at_the_size_cap_is_read_and_a_crumb_page_over_it_is_refused() -> None:
    async with YahooServer(two_symbols(1)) as server:
        server.oversize(MAX_BODY_BYTES + 1, at="crumb")
        limit = MAX_BODY_BYTES + 2 * MAX_QUOTE_BYTES  # two symbols requested
        server.oversize(limit)  # exactly the cap: a good answer (with no quotes in it)
        feed = make_feed(server, ["AAPL", "MSFT"])
        d1 = Backoff(base=0.02, cap=0.08, rng=random.Random(SEED)).next()
        host = server.url.removeprefix("http://")
        items = await run(feed, lambda it: n_ticks(it) == 2)
        assert statuses(items) == [
            CONNECTING, ("reconnecting", f"answer from {host} over {MAX_BODY_BYTES:,} bytes", d1, ()),
            live(9995)]
        assert server.calls == ["cookie", "crumb", "cookie", "crumb", "quote", "quote"]
        assert feed.counters.as_dict() == counters(
            feed, messages=3, ticks=2, requests=6, reconnects=1, handshakes=2, budget_left=9994,
            bad={"answer too large": 1, "symbol not in result": 2})


# --- subscriptions ------------------------------------------------------------------------------------
async def test_a_new_symbol_is_fetched_at_once_and_a_dropped_one_no_more() -> None:
    async with YahooServer(two_symbols(1)) as server:
        feed = make_feed(server, ["AAPL"], interval=30.0)
        items: Items = []
        async with asyncio.timeout(10), contextlib.aclosing(feed.stream()) as stream:
            async for item in stream:
                items.append(item)
                if n_ticks(items) == 1:
                    await feed.subscribe(["MSFT", "AAPL"])
                if n_ticks(items) == 2:
                    break
            await feed.unsubscribe(["AAPL"])
        assert feed.universe() == ("MSFT",)
        assert kinds(items) == ["connecting", "live", "ticks:1", "ticks:1"]
        assert server.requests == [("AAPL",), ("MSFT",)]
        assert feed.counters.as_dict() == counters(feed, messages=2, ticks=2, requests=4, fresh_skips=1,
                                                   budget_left=9996)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        YahooFeed(SymbolTable(4), ["AAPL"], interval=0)
    with pytest.raises(ValueError, match="batch_size"):
        YahooFeed(SymbolTable(4), ["AAPL"], batch_size=0)

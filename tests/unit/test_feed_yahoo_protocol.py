"""What Yahoo asks of a client, against local stand-ins that ask the same: a browser's fingerprint (else
429), ``formatted=false`` (else formatted numbers), the EU consent form when the cookie request lands on
it, and the streamer's subscribe message and base64 protobuf pushes, with polling as the fallback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import Callable

import aiohttp
import pytest

from engine.feeds.yahoo import YahooFeed
from engine.feeds.yahoo_auth import consent_form
from engine.feeds.yahoo_http import RequestFailed, YahooSession
from engine.feeds.yahoo_stream import BadPricing, Pricing, decode_pricing
from tests.servers.yahoo import CONSENT_PAGE, YahooServer
from tests.servers.yahoo_stream import YahooStreamer, pricing_data
from tests.unit.test_feed_yahoo import (
    CONNECTING,
    SEC,
    T0,
    Items,
    make_feed,
    n_ticks,
    run,
    statuses,
    ticks,
    two_symbols,
)

# yfinance's own sample (tests/test_live.py): BTC-USD at 94745.08, 2025-01-10 11:39 UTC
YFINANCE_SAMPLE = ("CgdCVEMtVVNEFYoMuUcYwLCVgIplIgNVU0QqA0NDQzApOAFFPWrEP0iAgOrxvANVx/25R12csrRHZYD8skR9/"
                   "7i0R7ABgIDq8bwD2AEE4AGAgOrxvAPoAYCA6vG8A/IBA0JUQ4ECAAAAwPrjckGJAgAA2P5ZT3tC")


def live(left: int) -> tuple[str, str, float, tuple[str, ...]]:
    return ("live", f"{left}/10000 requests left this hour", 0.0, ())


# --- the requests -----------------------------------------------------------------------------------------
async def test_requests_look_like_a_browsers_and_ask_for_plain_numbers() -> None:
    async with YahooServer(two_symbols(2)) as server:
        feed = make_feed(server, ["AAPL"])
        items = await run(feed, lambda it: n_ticks(it) == 2)
        assert statuses(items)[:2] == [CONNECTING, live(9997)]
        assert server.formatted == ["false", "false"]  # else {"raw", "fmt"} pairs, which are no prices
        assert server.user_agents and all("Chrome/" in ua for ua in server.user_agents)
        assert feed.counters.bad_total == 0 and dict(feed.counters.http_errors) == {}


async def test_the_stand_in_refuses_a_script_and_formats_numbers_unless_told_not_to() -> None:
    """The two rules above, shown to bite: what a plain client gets."""
    async with (YahooServer(two_symbols(1)) as server, aiohttp.ClientSession() as plain,
                plain.get(server.url + "/v1/test/getcrumb") as resp):
        assert resp.status == 429
    jar = aiohttp.CookieJar(unsafe=True, quote_cookie=False)
    async with (YahooServer(two_symbols(1), browser_check=False) as server,
                aiohttp.ClientSession(cookie_jar=jar) as plain):
        async with plain.get(server.cookie_url) as resp:
            assert resp.status == 404
        async with plain.get(server.url + "/v1/test/getcrumb") as resp:
            crumb = await resp.text()
        query = {"symbols": "AAPL", "crumb": crumb}
        async with plain.get(server.url + "/v7/finance/quote", params=query) as resp:
            price = (await resp.json())["quoteResponse"]["result"][0]["regularMarketPrice"]
        assert price == {"raw": 100.0, "fmt": "100.00"}


async def test_a_failed_request_says_why_in_one_line() -> None:
    session = YahooSession()
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(RequestFailed) as refused:
            await session.request("GET", f"http://127.0.0.1:{port}/x", limit=100, timeout=2)
        assert refused.value.reason == f"connection refused by 127.0.0.1:{port}" and not refused.value.timeout
    finally:
        await session.close()


async def test_no_yahoo_request_leaves_this_machine_in_the_tests() -> None:
    """libcurl resolves names itself, past the suite's getaddrinfo guard; tests/conftest.py guards it too."""
    session = YahooSession()
    try:
        with pytest.raises(RequestFailed, match=r"DNS lookup failed for fc\.yahoo\.com: tests may not"):
            await session.request("GET", "https://fc.yahoo.com", limit=100, timeout=2)
    finally:
        await session.close()


# --- the consent form ------------------------------------------------------------------------------------
async def test_a_cookie_request_redirected_to_the_consent_form_accepts_it_and_goes_on() -> None:
    async with YahooServer(two_symbols(2), consent="redirect") as server:
        feed = make_feed(server, ["AAPL", "MSFT"])
        start = time.time_ns()
        items = await run(feed, lambda it: n_ticks(it) == 4)
        # paid for: the cookie request (redirected to the form), the form posted, the crumb, the quotes
        assert statuses(items)[:2] == [CONNECTING, live(9996)]
        assert server.consent_posts == 1 and len(server.agreed) == 1
        # the redirects: to the consent start, to the form; the post, then copyConsent (which sets A3)
        assert server.calls[:7] == ["cookie", "consent", "consent", "consent", "consent", "crumb", "quote"]
        assert ticks(feed, items, start)[:2] == [("AAPL", T0 * SEC, 100.0, 0.0, 0, -1),
                                                 ("MSFT", T0 * SEC, 200.0, 0.0, 0, -1)]
        assert feed.handshake.consents == 1


async def test_with_no_cookie_and_no_redirect_the_consent_form_is_fetched_from_consent_url() -> None:
    async with YahooServer(two_symbols(1), consent="form") as server:
        feed = make_feed(server, ["AAPL"], consent_url=server.consent_url + "/consent")
        items = await run(feed, lambda it: n_ticks(it) == 1)
        assert statuses(items) == [CONNECTING, live(9995)]  # cookie, consent page, post, crumb, quote
        assert server.consent_posts == 1 and feed.handshake.consents == 1


async def test_with_no_cookie_and_no_consent_url_the_reason_is_shown() -> None:
    async with YahooServer(two_symbols(1), consent="form") as server:
        feed = make_feed(server, ["AAPL"])
        items = await run(feed, lambda it: len(it) == 2)
        host = server.cookie_url.removeprefix("http://")
        assert statuses(items)[1][:2] == ("reconnecting", f"no cookie from {host} (HTTP 404)")


def test_the_consent_form_is_read_from_the_page() -> None:
    form = consent_form(CONSENT_PAGE.format(session="S1", token="T1").encode())
    assert form is not None
    assert form.action == "/v2/collectConsent?sessionId=S1" and form.method == "post"
    assert form.fields == {"csrfToken": "T1", "sessionId": "S1", "namespace": "yahoo",
                           "originalDoneUrl": "https://finance.yahoo.com/?guccounter=1"}
    assert form.agree == ("agree", "agree")  # not the reject button before it
    assert consent_form(b"<html><form><input name=q></form></html>") is None
    assert consent_form(b"\xff<form <input") is None


# --- the streamer ----------------------------------------------------------------------------------------
def test_pricing_data_decodes_as_yfinance_decodes_it() -> None:
    pricing = decode_pricing(base64.b64decode(YFINANCE_SAMPLE))
    assert pricing == Pricing("BTC-USD", 94745.08, 1736509140000, "USD", 59712028672)
    mine = decode_pricing(pricing_data("AAPL", 178.1, 1_717_185_603_000, day_volume=67_314_602))
    assert mine == Pricing("AAPL", 178.1, 1_717_185_603_000, "USD", 67_314_602)  # float32, read back


@pytest.mark.parametrize(("data", "why"), [
    (b"", "no symbol"), (b"\x0a\x05AAPL", "truncated length-delimited field"),
    (b"\x0a\x04AAPL\x15\x00\x00", "truncated 32-bit field"), (b"\x0a\x04AAPL\x18\xff", "truncated varint"),
    (b"\x0b", "wire type 3"), (b"\x0a\x04AAPL", "no price"),
    (b"\x0a\x04AAPL\x15\x00\x00\xc0\x7f\x18\x02", "bad price"),  # NaN
    (b"\x0a\x04AAPL\x15\x00\x00\x80\x3f", "no time"), (b"\x0a\x02\xff\xfe", "a string that is not UTF-8"),
])
def test_bad_pricing_data_says_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(BadPricing, match=why):
        decode_pricing(data)


class Running:
    """A feed's stream consumed in a task, every item kept."""

    def __init__(self, feed: YahooFeed) -> None:
        self.feed = feed
        self.items: Items = []
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async with contextlib.aclosing(self.feed.stream()) as stream:
            async for item in stream:
                self.items.append(item)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_streamed_prices_are_ticks_and_a_streamed_symbol_is_not_polled() -> None:
    async with YahooServer(two_symbols(400)) as server, YahooStreamer() as streamer:
        feed = make_feed(server, ["AAPL", "MSFT"], stream_url=streamer.url)
        running = Running(feed)
        try:
            await streamer.until(lambda: streamer.subscribed("AAPL"))
            # a push holds polling off once a poll gave the day's previous close (pushes carry none):
            # the first poll's answer first, as it comes when the streamer starts after the feed
            await running.until(lambda: "AAPL" in feed.previous_closes)
            await streamer.push("AAPL", 178.1, (T0 + 1000) * 1000 + 250, day_volume=67_314_602)
            pushed = ("AAPL", (T0 + 1000) * SEC + 250_000_000, 178.1)
            await running.until(lambda: pushed in [t[:3] for t in ticks(feed, running.items, 0)])
            polled = server.requested("AAPL")
            msft = server.requested("MSFT")
            await running.until(lambda: server.requested("MSFT") >= msft + 5)  # MSFT: polled on
            assert server.requested("AAPL") == polled  # AAPL: left to the streamer
        finally:
            await running.stop()
        assert streamer.received[0] == {"subscribe": ["AAPL", "MSFT"]}
        assert feed.streamer is not None and feed.streamer.pushes == 1
        assert feed.streamer.counters.bad_total == 0 and feed.counters.bad_total == 0


async def test_a_poll_in_flight_when_a_price_is_pushed_does_not_bring_the_symbol_back_to_polling() -> None:
    """The answer to a poll sent before the push must not move the pushed symbol's next poll closer."""
    async with YahooServer(two_symbols(400)) as server, YahooStreamer() as streamer:
        feed = make_feed(server, ["AAPL", "MSFT"], stream_url=streamer.url)
        running = Running(feed)
        try:
            await streamer.until(lambda: streamer.subscribed("AAPL"))
            await running.until(lambda: server.requested("AAPL") >= 1)
            sent = len(server.requests)
            server.stall(0.3)  # the next poll (both symbols) is answered after the push
            await running.until(lambda: len(server.requests) > sent)
            assert "AAPL" in server.requests[sent]
            await streamer.push("AAPL", 178.1, (T0 + 1000) * 1000 + 250)
            pushed = ("AAPL", (T0 + 1000) * SEC + 250_000_000, 178.1)
            await running.until(lambda: pushed in [t[:3] for t in ticks(feed, running.items, 0)])
            polled = server.requested("AAPL")
            msft = server.requested("MSFT")
            await running.until(lambda: server.requested("MSFT") >= msft + 5)
            assert server.requested("AAPL") == polled
        finally:
            await running.stop()


async def test_the_streamer_subscribes_again_every_interval() -> None:
    async with YahooServer(two_symbols(2)) as server, YahooStreamer() as streamer:
        feed = make_feed(server, ["AAPL"], stream_url=streamer.url, interval=5.0)
        assert feed.streamer is not None
        feed.streamer.resubscribe_s = 0.02
        await run(feed, lambda it: len([m for m in streamer.received if m == {"subscribe": ["AAPL"]}]) >= 3)


async def test_with_the_streamer_down_polling_carries_on() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"ws://127.0.0.1:{probe.getsockname()[1]}/?version=2"
    async with YahooServer(two_symbols(3)) as server:
        feed = make_feed(server, ["AAPL"], stream_url=closed)
        items = await run(feed, lambda it: n_ticks(it) == 3 and feed.stream_state == "reconnecting")
        assert statuses(items)[:2] == [CONNECTING, live(9997)]  # the feed's state is the polling's
        assert server.requested("AAPL") >= 3

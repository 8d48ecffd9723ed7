"""Fuzzing every live feed's decoder: whatever a server sends, the feed counts it or uses it, never raises.

Each example is a short run of frames into a fresh feed, through ``WsFeed._take`` (what the read loop
calls) or ``YahooFeed._decode`` (what the poller calls), followed by ``batcher.flush()`` (what the read
loop does next: a tick whose time or id does not fit ``TICK_DTYPE`` would raise there and end the feed).
The frames are random bytes and text, random JSON, JSON nested past the recursion limit, and valid frames
of each protocol with one field replaced, removed or added: the last kind reaches the code behind the
decoder (sequencing, numbers, times), which random JSON almost never does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import random
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bench.servers.binance import BinanceServer
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.feeds.binance import BinanceFeed
from engine.feeds.coinbase import CoinbaseFeed
from engine.feeds.ws import WsFeed
from engine.feeds.yahoo import YahooFeed, _error_text
from engine.feeds.yahoo_stream import Pricing, YahooStream
from engine.ticks import SymbolTable
from tests.fuzz_settings import INT64_MAX, deep_json, dumps, fuzz, invalid_utf8, json_values, mutated, tried
from tests.servers.yahoo_stream import pricing_data


def frames(templates: list[dict[str, Any]]) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.binary(max_size=200), st.text(max_size=200), json_values.map(dumps), deep_json,
        st.sampled_from(templates).flatmap(mutated), st.sampled_from(templates).map(dumps),
        st.sampled_from(templates).flatmap(invalid_utf8),
    )


def _malformed(raw: str | bytes) -> bool:
    """Not a JSON document at all, decided independently of the feed's own classification: not UTF-8
    (by Python's codec; JSON between systems must be UTF-8, RFC 8259 8.1) or not JSON (by msgspec)."""
    try:
        raw.decode() if isinstance(raw, bytes) else raw.encode()
    except UnicodeError:
        return True
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return True
    return False


def check_batch(feed: WsFeed | YahooFeed) -> None:
    """What the read loop does after a frame: build the batch. Every tick in it must be usable."""
    batch = feed.batcher.flush()
    if batch is None:
        return
    assert np.isfinite(batch["price"]).all() and (batch["price"] > 0).all()
    assert np.isfinite(batch["size"]).all() and (batch["size"] >= 0).all()
    assert (batch["ts"] >= 0).all()
    assert np.isin(batch["side"], (-1, 0, 1)).all()
    assert ((batch["sym"] >= 0) & (batch["sym"] < len(feed.symbols))).all()


def feed_frames(feed: WsFeed, raws: list[str | bytes]) -> None:
    for raw in raws:
        bad_before, messages_before = feed.counters.bad_total, feed.counters.messages
        feed._take(raw)  # what the read loop calls for every frame
        assert feed.counters.messages == messages_before + 1
        if _malformed(raw):
            assert feed.counters.bad_total == bad_before + 1, raw
        check_batch(feed)


# --- Binance ---------------------------------------------------------------------------------------------

BINANCE_TRADE: dict[str, Any] = {
    "stream": "btcusdt@trade", "data": {"e": "trade", "E": 1_700_000_000_003, "s": "BTCUSDT", "t": 7,
                                        "p": "43250.10", "q": "0.015", "T": 1_700_000_000_001, "m": True,
                                        "M": True}}
BINANCE_KLINE: dict[str, Any] = {
    "stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1_700_000_030_000, "s": "BTCUSDT", "k": {
        "t": 1_700_000_000_000, "T": 1_700_000_059_999, "s": "BTCUSDT", "i": "1m", "o": "1", "c": "43000.5",
        "h": "1", "l": "1", "v": "12.5", "n": 1, "x": False}}}
BINANCE_ANSWERS: list[dict[str, Any]] = [
    {"result": None, "id": 1}, {"error": {"code": 2, "msg": "Invalid request"}, "id": 1},
    {"e": "serverShutdown", "E": 1}]


def binance(stream: str = "trade") -> BinanceFeed:
    return BinanceFeed(SymbolTable(8), "ws://127.0.0.1:9", ("BTCUSDT", "ETHUSDT"), stream=stream)


@fuzz(400)
@given(raws=st.lists(frames([BINANCE_TRADE, *BINANCE_ANSWERS]), min_size=1, max_size=4))
def test_fuzz_binance_trade_frames(raws: list[str | bytes]) -> None:
    tried("test_fuzz_binance_trade_frames")
    feed_frames(binance(), raws)


@fuzz(300)
@given(raws=st.lists(frames([BINANCE_KLINE, *BINANCE_ANSWERS]), min_size=1, max_size=4))
def test_fuzz_binance_kline_frames(raws: list[str | bytes]) -> None:
    tried("test_fuzz_binance_kline_frames")
    feed_frames(binance("kline_1m"), raws)


def test_binance_times_and_ids_beyond_int64_are_invalid_events_not_a_crash() -> None:
    """Regression: a trade id or time whose ns overflow int64 made ``flush`` raise OverflowError (and
    stay poisoned: the row was never removed), which ended the feed."""
    feed = binance()
    for field, value in (("t", 2**64 - 1), ("T", 2**62), ("E", -5), ("T", 2**63)):
        frame = json.loads(json.dumps(BINANCE_TRADE))
        frame["data"][field] = value
        feed._take(json.dumps(frame))
        assert feed.batcher.flush() is None
    assert feed.counters.bad == {"invalid event": 4}
    feed._take(json.dumps(BINANCE_TRADE))
    batch = feed.batcher.flush()
    assert batch is not None and batch["ts"].tolist() == [1_700_000_000_001 * 1_000_000]
    kline = binance("kline_1m")
    frame = json.loads(json.dumps(BINANCE_KLINE))
    frame["data"]["k"]["T"] = frame["data"]["E"] = 2**62
    kline._take(json.dumps(frame))
    assert kline.batcher.flush() is None and kline.counters.bad == {"invalid event": 1}


def test_binance_deeply_nested_json_is_malformed_not_a_crash() -> None:
    """Regression: msgspec raises RecursionError (not DecodeError) past its depth limit."""
    feed = binance()
    feed._take("[" * 5000 + "]" * 5000)
    feed._take('{"stream": 5, "data": ' + "[" * 5000 + "]" * 5000 + "}")  # the slow path decodes it again
    assert feed.counters.bad == {"malformed json": 2}


async def test_binance_feed_survives_hostile_frames_over_a_real_connection() -> None:
    """The frames that used to end the feed, sent by a local Binance-protocol server: the stream stays
    live and delivers the next good trade."""
    async with BinanceServer() as server:
        feed = BinanceFeed(SymbolTable(8), server.url, ("BTCUSDT",), backoff=Backoff(0.01, 0.02))
        seen: list[np.ndarray | FeedStatus] = []

        async def pump() -> None:
            async for item in feed.stream():
                seen.append(item)

        task = asyncio.create_task(pump())
        try:
            await server.wait_subscribed("btcusdt@trade")
            huge = json.loads(json.dumps(BINANCE_TRADE))
            huge["data"]["t"] = 2**64 - 1
            await server.send_raw(json.dumps(huge))
            await server.send_raw("[" * 5000 + "]" * 5000)
            good = await server.trade("BTCUSDT", "43000", "0.25")
            async with asyncio.timeout(5):
                while not any(isinstance(b, np.ndarray) for b in seen):
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    ticks = [row for b in seen if isinstance(b, np.ndarray) for row in b.tolist()]
    assert [(t[1], t[3], t[6]) for t in ticks] == [(good["T"] * 1_000_000, 43000.0, good["t"])]
    assert feed.counters.bad == {"invalid event": 1, "malformed json": 1}
    assert [s.state for s in seen if isinstance(s, FeedStatus)] == ["connecting", "live"]


# --- Coinbase --------------------------------------------------------------------------------------------

COINBASE_TRADES: dict[str, Any] = {
    "channel": "market_trades", "client_id": "", "timestamp": "2023-06-23T20:31:26.5Z", "sequence_num": 0,
    "events": [{"type": "update", "trades": [
        {"trade_id": "1001", "product_id": "BTC-USD", "price": "30000.5", "size": "0.01", "side": "BUY",
         "time": "2023-06-23T20:31:26.122969572Z"},
        {"trade_id": "1002", "product_id": "BTC-USD", "price": "30001", "size": "0.5", "side": "SELL",
         "time": "2023-06-23T20:31:26.2Z"}]}]}
COINBASE_TICKER: dict[str, Any] = {
    "channel": "ticker", "sequence_num": 1, "events": [{"type": "update", "tickers": [
        {"type": "ticker", "product_id": "BTC-USD", "price": "30000.5", "volume_24_h": "1000",
         "best_bid": "30000", "best_ask": "30001"}]}]}
COINBASE_OTHER: list[dict[str, Any]] = [
    {"channel": "heartbeats", "sequence_num": 2, "events": [{"current_time": "x", "heartbeat_counter": 3}]},
    {"channel": "subscriptions", "sequence_num": 3, "events": [{"subscriptions": {"ticker": ["BTC-USD"]}}]},
    {"type": "error", "message": "Failed to subscribe"},
]


def coinbase() -> CoinbaseFeed:
    return CoinbaseFeed(SymbolTable(8), "ws://127.0.0.1:9", ("BTC-USD", "ETH-USD"))


@fuzz(400)
@given(raws=st.lists(frames([COINBASE_TRADES, COINBASE_TICKER, *COINBASE_OTHER]), min_size=1, max_size=4))
def test_fuzz_coinbase_frames(raws: list[str | bytes]) -> None:
    tried("test_fuzz_coinbase_frames")
    feed = coinbase()
    feed_frames(feed, raws)
    for state in feed.tickers.values():
        assert state.price > 0 and math.isfinite(state.price)


def test_coinbase_trade_ids_and_times_beyond_int64_are_bad_trades_not_a_crash() -> None:
    """Regression: a trade id above int64 or a time past 2262 (or before 1970) reached the batch and made
    ``flush`` raise OverflowError, ending the feed."""
    feed = coinbase()
    cases = (("trade_id", "99999999999999999999"), ("trade_id", "-5"), ("time", "9999-12-31T23:59:59Z"),
             ("time", "0001-01-01T00:00:00Z"))
    for seq, (field, value) in enumerate(cases):
        frame = json.loads(json.dumps(COINBASE_TRADES))
        frame["sequence_num"] = seq
        frame["events"][0]["trades"] = frame["events"][0]["trades"][:1]
        frame["events"][0]["trades"][0][field] = value
        feed._take(json.dumps(frame))
        assert feed.batcher.flush() is None
    assert feed.counters.bad == {"bad trade id": 2, "bad time": 2}


# --- Yahoo -----------------------------------------------------------------------------------------------

YAHOO_QUOTES: dict[str, Any] = {"quoteResponse": {"result": [
    {"symbol": "AAPL", "regularMarketPrice": 190.5, "regularMarketTime": 1_700_000_000,
     "regularMarketVolume": 1000, "currency": "USD", "shortName": "Apple"},
    {"symbol": "MSFT", "regularMarketPrice": 370.25, "regularMarketTime": 1_700_000_001.5,
     "regularMarketVolume": None}], "error": None}}
YAHOO_ERROR: dict[str, Any] = {
    "finance": {"result": None, "error": {"code": "Unauthorized", "description": "Invalid Crumb"}}}


def yahoo() -> YahooFeed:
    return YahooFeed(SymbolTable(8), ("AAPL", "MSFT"), "http://127.0.0.1:9")


def _bytes(raw: str | bytes) -> bytes:
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw


@fuzz(400)
@given(bodies=st.lists(frames([YAHOO_QUOTES, YAHOO_ERROR]), min_size=1, max_size=3))
def test_fuzz_yahoo_answers(bodies: list[str | bytes]) -> None:
    tried("test_fuzz_yahoo_answers")
    feed = yahoo()
    for i, raw in enumerate(bodies):
        body = _bytes(raw)
        bad_before = feed.counters.bad_total
        why = feed._decode(body, ["AAPL", "MSFT"], 1_700_000_000_000_000_000 + i)
        assert isinstance(why, str)
        if why:
            assert feed.counters.bad_total > bad_before
        check_batch(feed)
        for quote in feed.latest.values():
            assert 0 < quote.price < math.inf and 0 < quote.time_ns <= INT64_MAX
        # an error answer's body is explained to the user from the same bytes: that must not raise either
        assert isinstance(_error_text(body), str)


# --- Yahoo's streamer: JSON frames around base64 around protobuf ------------------------------------------

YAHOO_PUSH = pricing_data("AAPL", 178.1, 1_717_185_603_000, day_volume=67_314_602, last_size=100)


def _protobufs() -> st.SearchStrategy[bytes]:
    """A valid PricingData cut, extended, or with bytes overwritten: reaches every branch of the decoder
    (wire types, lengths, varints, strings, the field checks) that random bytes rarely do."""
    valid = st.just(YAHOO_PUSH)
    cut = st.integers(0, len(YAHOO_PUSH)).map(lambda n: YAHOO_PUSH[:n])
    spliced = st.tuples(st.integers(0, len(YAHOO_PUSH) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda p: YAHOO_PUSH[:p[0]] + p[1] + YAHOO_PUSH[p[0] + len(p[1]):])
    return st.one_of(valid, cut, spliced, st.binary(max_size=64), st.binary(max_size=64).map(
        lambda b: YAHOO_PUSH + b))


def _push(data: bytes) -> str:
    return json.dumps({"type": "pricing", "message": base64.b64encode(data).decode()})


@fuzz(400)
@given(raws=st.lists(st.one_of(_protobufs().map(_push), frames([json.loads(_push(YAHOO_PUSH))])),
                     min_size=1, max_size=4))
def test_fuzz_yahoo_stream_frames(raws: list[str | bytes]) -> None:
    tried("test_fuzz_yahoo_stream_frames")
    prices: list[Pricing] = []
    stream = YahooStream(SymbolTable(8), "ws://127.0.0.1:9/?version=2", ("AAPL",),
                         lambda name, p, recv_ns: prices.append(p))
    for raw in raws:
        before = stream.counters.bad_total + len(prices)
        feed_frames(stream, [raw])
        assert stream.counters.bad_total + len(prices) == before + 1  # used or counted, never both
    for p in prices:
        assert p.symbol == "AAPL" and 0 < p.price < math.inf and 0 < p.time_ms * 1_000_000 <= INT64_MAX
        assert p.day_volume is None or p.day_volume >= 0


def test_yahoo_times_beyond_int64_are_bad_quotes_not_a_crash() -> None:
    """Regression: regularMarketTime 1e300 raised OverflowError in ``round``; 10**30 passed the check and
    made ``flush`` raise. Either ended the poller."""
    feed = yahoo()
    for t in (1e300, 10**30, 2**62):
        body = json.loads(json.dumps(YAHOO_QUOTES))
        quote = {"symbol": "AAPL", "regularMarketPrice": 1.0, "regularMarketTime": t}
        body["quoteResponse"]["result"] = [quote]
        assert feed._decode(json.dumps(body).encode(), ["AAPL"], 1) == ""
        assert feed.batcher.flush() is None
    assert feed.counters.bad == {"bad time": 3}


def test_yahoo_deeply_nested_answers_are_malformed_not_a_crash() -> None:
    """Regression: RecursionError from msgspec, then from the ``json`` fallback, escaped ``_decode``;
    ``_error_text`` (which reads any HTTP error body) raised it too."""
    feed = yahoo()
    body = ('{"quoteResponse":' * 3000).encode()
    assert feed._decode(body, ["AAPL"], 1) == "malformed json"
    deep = b'{"quoteResponse": {"result": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    assert feed._decode(deep, ["AAPL"], 1) == "malformed json"
    assert _error_text(b"[" * 5000 + b"]" * 5000) == ""


def test_invalid_utf8_in_a_binary_frame_or_body_is_malformed_not_a_crash() -> None:
    """Regression: msgspec raises UnicodeDecodeError (before 0.23) or DecodeError (0.23) for a string that
    is not UTF-8, which a binary WebSocket frame or an HTTP body can hold; it escaped every decoder. And
    0.23 skips an unknown field's bytes unread, so the same frame was good or bad by msgspec's version
    and by which field held the byte: invalid UTF-8 anywhere is now a malformed frame."""
    feed = binance()
    feed._take(b'{"stream": "\x81btcusdt@trade", "data": null}')
    feed._take(b'{"\x80":null,"id":0}')  # the frame that turned main red with msgspec 0.23
    feed._take(b'{"result":null,"id":0,"x":"\xff"}')
    assert feed.counters.bad == {"malformed json": 3}
    cb = coinbase()
    cb._take(b'{"channel": "\x81"}')
    cb._take(b'{"channel": "market_trades", "events": [{"type": "\x81", "trades": []}]}')
    cb._take(b'{"channel": "heartbeats", "\xc3": 1}')
    assert cb.counters.bad == {"malformed json": 3}
    yh = yahoo()
    assert yh._decode(b'{"quoteResponse": {"result": [{"symbol": "\x81"}]}}', ["AAPL"], 1) == "malformed json"
    assert yh._decode(b'{"quoteResponse": {"result": [], "\x81": 0}}', ["AAPL"], 1) == "malformed json"
    # valid UTF-8 beyond ASCII is fine, as bytes and as text
    assert feed.counters.messages == 3
    feed._take('{"result":null,"id":0,"x":"é"}'.encode())
    feed._take('{"result":null,"id":0,"x":"é"}')
    assert feed.counters.bad_total == 3


# --- the feeds' run-time budget: a long run of garbage costs the log one line per reason -----------------

def test_a_garbage_flood_is_counted_and_logged_once_per_reason(caplog: Any) -> None:
    rng = random.Random(5)
    feed = binance()
    raws: list[Callable[[], str | bytes]] = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(40))),
        lambda: "[" * rng.randrange(1000, 3000),
        lambda: dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "t": rng.random()}}),
    ]
    for i in range(600):
        feed._take(raws[i % 3]())
    assert feed.counters.bad_total == 600
    assert len(caplog.records) == len(feed.counters.bad)

"""The broadcast frames (``engine.sinks.frames``): every frame type the sink sends decodes back to what
was encoded, with exactly the fields ``FRAMES`` names, through the JSON text that goes on the wire."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from engine.feeds.base import FeedStatus
from engine.signals.events import Signal
from engine.sinks import frames
from engine.sinks.frames import (
    FRAMES,
    HEALTH_FIELDS,
    QUOTE_FIELDS,
    Error,
    FrameError,
    Hello,
    Pong,
    Snapshot,
    SnapshotFrames,
    Subscription,
    SymbolsChanged,
    Unknown,
    decode,
    dumps,
)
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote

T0 = 1_800_000_000_000_000_000


def quote(symbol: str, decimals: int | None = 2, previous_close: float = 99.75) -> Quote:
    closes = np.array([100.0, 101.25, 102.5])
    closes.flags.writeable = False
    return Quote(symbol=symbol, last=102.5, change=2.5, change_pct=2.5, volume=12.0, closes=closes,
                 values={"rsi_14": 55.5, "ema_20": 101.0}, bar_time=T0, decimals=decimals,
                 previous_close=previous_close)


HEALTH = PipelineHealth(lag_p50_ms=1.5, lag_p99_ms=4.0, queue_depth=2, queue_depth_max=7, coalesced=1,
                        bad_messages=3, reconnects=1, gaps=4, duplicates=5, feed="binance", batches=9,
                        ticks_in=100, ticks_processed=98, engine_p50_us=12.5, engine_p99_us=40.0,
                        signal_p50_ms=2.0, signal_p99_ms=3.0, refills=1, history_done=2, history_total=3)
MARKET = MarketSnapshot(at_ns=T0 + 5, quotes=(quote("AAA"), quote("BBB", None, math.nan)), ticks=100, bars=4)
SIGNAL = Signal("AAA", "rsi_oversold", "up", T0, 101.5, {"rsi_14": 29.5, "level": 30.0}, T0 + 7, warmup=True,
                position={"quantity": -2.5, "average_cost": 100.0, "unrealized": -3.75,
                          "unrealized_pct": -1.5, "stop": 103.0, "target": math.nan})  # every field present
STATUS = FeedStatus("binance", "reconnecting", "closed by the server", retry_in=1.5, at_ns=T0 + 9,
                    symbols=("AAA",))

# every frame type: (the object it carries, its encoding)
SAMPLES: dict[str, tuple[Any, dict[str, Any]]] = {
    "hello": (Hello("binance", ("AAA", "BBB"), ("rsi_14", "ema_20"), "1m", 10.0),
              frames.hello_frame(Hello("binance", ("AAA", "BBB"), ("rsi_14", "ema_20"), "1m", 10.0))),
    "signal": (SIGNAL, frames.signal_frame(SIGNAL)),
    "snapshot": (Snapshot(MARKET, HEALTH), frames.snapshot_frame(MARKET, HEALTH)),
    "status": (STATUS, frames.status_frame(STATUS)),
    "symbols": (SymbolsChanged(("AAA", "CCC"), ("CCC",), ("BBB",)),
                frames.symbols_frame(SymbolsChanged(("AAA", "CCC"), ("CCC",), ("BBB",)))),
    "subscribed": (Subscription(frozenset({"AAA"}), None, True),
                   frames.subscribed_frame(Subscription(frozenset({"AAA"}), None, True))),
    "pong": (Pong({"n": 4}), frames.pong_frame({"n": 4})),
    "error": (Error("bad_message", "not JSON"), frames.error_frame("bad_message", "not JSON")),
}


def same_quote(a: Quote, b: Quote) -> bool:
    return (a.symbol, a.last, a.change, a.change_pct, a.volume, a.values, a.bar_time, a.decimals) == (
        b.symbol, b.last, b.change, b.change_pct, b.volume, b.values, b.bar_time, b.decimals) and (
        np.array_equal(a.closes, b.closes, equal_nan=True))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, Snapshot) and isinstance(b, Snapshot):
        m, n = a.market, b.market
        return ((m.at_ns, m.ticks, m.bars, a.health) == (n.at_ns, n.ticks, n.bars, b.health)
                and len(m.quotes) == len(n.quotes) and all(map(same_quote, m.quotes, n.quotes)))
    return bool(a == b)


def test_there_is_a_sample_of_every_frame_type() -> None:
    assert set(SAMPLES) == set(FRAMES)


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_every_frame_type_goes_through_json_and_back(kind: str) -> None:
    sent, frame = SAMPLES[kind]
    assert tuple(frame) == ("type", *FRAMES[kind])  # the fields FRAMES names, in its order
    assert frame["type"] == kind
    got = decode(dumps(frame))
    assert same(got, sent), (got, sent)
    assert same(decode(dumps(frame).encode()), sent)  # a binary frame of the same text too


def test_the_fields_inside_a_snapshot_are_the_ones_named() -> None:
    frame = frames.snapshot_frame(MARKET, HEALTH)
    assert tuple(frame["quotes"][0]) == QUOTE_FIELDS
    unknown = ("decimals", "previous_close")  # unknown: absent
    assert tuple(frame["quotes"][1]) == tuple(f for f in QUOTE_FIELDS if f not in unknown)
    assert tuple(frame["health"]) == HEALTH_FIELDS


def test_shared_snapshot_frames_decode_as_the_plain_encoding() -> None:
    cache = SnapshotFrames()
    cache.reset(MARKET, HEALTH)
    got = decode(cache.frame(frozenset({"BBB"})))
    assert isinstance(got, Snapshot)
    assert [q.symbol for q in got.market.quotes] == ["BBB"] and got.health == HEALTH
    assert same_quote(got.market.quotes[0], MARKET.quotes[1])


def test_non_finite_numbers_go_as_null_and_come_back_as_nan() -> None:
    nan = Signal("AAA", "r", "down", T0, math.nan, {"x": math.inf}, T0)
    text = dumps(frames.signal_frame(nan))
    assert json.loads(text)["price"] is None  # strict JSON: no NaN literal
    got = decode(text)
    assert isinstance(got, Signal) and math.isnan(got.price) and math.isnan(got.values["x"])
    unknown = FeedStatus("sim", "reconnecting", retry_in=math.nan, at_ns=T0)
    status = decode(dumps(frames.status_frame(unknown)))
    assert isinstance(status, FeedStatus) and status.retry_in == 0.0  # no delay known: as if none


def test_an_older_or_newer_publisher_still_decodes() -> None:
    old_quote = {k: v for k, v in frames.quote_frame(quote("AAA")).items() if k != "decimals"}
    got = decode(dumps({"type": "snapshot", "at_ns": 1, "quotes": [old_quote],
                        "health": {"queue_depth": 3, "a_newer_figure": 1}}))
    assert isinstance(got, Snapshot) and got.market.quotes[0].decimals is None
    assert got.health == PipelineHealth(queue_depth=3)
    assert decode('{"type": "hello", "symbols": ["AAA"]}') == Hello("", ("AAA",))
    assert decode('{"type": "a_newer_frame", "x": 1}') == Unknown("a_newer_frame")


@pytest.mark.parametrize(("raw", "kind"), [
    ("[1, 2]", "?"),
    ("not json", "?"),
    ('{"type": "hello", "symbols": "AAA"}', "hello"),  # a string is not a list of symbols
    ('{"type": "status", "feed": "x", "state": "sleeping"}', "status"),
    ('{"type": "snapshot", "at_ns": true, "quotes": []}', "snapshot"),
    ('{"type": "subscribed", "symbols": null, "rules": null, "snapshots": "yes"}', "subscribed"),
    ('{"type": "signal", "symbol": "A"}', "signal"),
])
def test_a_malformed_frame_is_a_frame_error_naming_its_type(raw: str, kind: str) -> None:
    with pytest.raises(FrameError) as error:
        decode(raw)
    assert error.value.kind == kind
    assert str(error.value) == (f"bad {kind} frame" if kind != "?" else "not a JSON object")


def test_the_subscribe_message_is_what_the_server_reads() -> None:
    from engine.sinks import clients

    sub = Subscription(frozenset({"AAA", "BBB"}), frozenset({"r1"}), True)
    msg = json.loads(dumps(frames.subscribe_message(sub)))
    assert tuple(msg) == ("op", *frames.CLIENT_MESSAGES["subscribe"])
    assert clients.subscription(clients.parse(json.dumps(msg)), Subscription()) == sub


def test_a_snapshot_frame_as_written_is_decoded_without_the_json_module(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SnapshotFrames()
    cache.reset(MARKET, HEALTH)
    texts = [dumps(frames.snapshot_frame(MARKET, HEALTH)), cache.frame(None)]
    monkeypatch.setattr(frames.json, "loads", None)  # the typed msgspec way only
    for raw in [*texts, texts[0].encode()]:
        got = decode(raw)
        assert same(got, Snapshot(MARKET, HEALTH)), got
        assert isinstance(got, Snapshot) and got.market.quotes[0].previous_close == 99.75
        assert math.isnan(got.market.quotes[1].previous_close)
        assert not got.market.quotes[0].closes.flags.writeable


def snapshot_text(**quote_fields: Any) -> str:
    q = {**frames.quote_frame(quote("AAA")), **quote_fields}
    return dumps({"type": "snapshot", "at_ns": 1, "ticks": 2, "bars": 3, "quotes": [q], "health": None})


@pytest.mark.parametrize("raw", [
    snapshot_text(),
    snapshot_text(last=None, closes=[None, 1, 2.5], values={"a": None, "b": 3}),  # nulls, ints
    snapshot_text(bar_time=1.8e18),  # a float where an int goes: truncated, as ever
    snapshot_text(symbol=5),  # a number for a name: its text
    snapshot_text(decimals=True, previous_close=-1),  # unusable: unknown
    snapshot_text(closes=[1.0, True]),  # a bool for a number: refused
    snapshot_text(volume="1"),
    snapshot_text(values=[]),
    snapshot_text(bar_time=10**30),  # beyond 64 bits
    snapshot_text().replace('"last":102.5', '"last":NaN'),  # json.loads takes NaN
    snapshot_text()[:-1] + ',"type":"pong","id":1}',  # a later key wins
    snapshot_text().replace('"health":null', '"health":{"queue_depth":"x"}'),
    snapshot_text()[:-3],  # cut short
])
def test_the_typed_way_decides_nothing_the_lenient_way_would_not(
        raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def outcome() -> Any:
        try:
            return decode(raw)
        except FrameError as exc:
            return (exc.kind, str(exc))

    fast = outcome()
    monkeypatch.setattr(frames, "_fast_snapshot", lambda raw: None)
    slow = outcome()
    assert same(fast, slow) and type(fast) is type(slow), (fast, slow)
    if isinstance(fast, Snapshot) and isinstance(slow, Snapshot):
        assert [q.symbol for q in fast.market.quotes] == [q.symbol for q in slow.market.quotes]
        assert str(fast.market.quotes[0].values) == str(slow.market.quotes[0].values)

"""The fleet console's merge (``engine.bus.merge``): engines' snapshots into one watchlist, one row per
engine, gone after a silence and back when it publishes again. Times are given, never read."""

from __future__ import annotations

import math

import numpy as np

from engine.bus.merge import FleetHealth, FleetMerge
from engine.feeds.base import FeedStatus
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote


def quote(symbol: str, last: float, bar_time: int = 0) -> Quote:
    return Quote(symbol, last, 0.0, 0.0, 1.0, np.array([last]), {"rsi_14": 50.0}, bar_time)


def snap(at_ns: int, *quotes: Quote, ticks: int = 10) -> MarketSnapshot:
    return MarketSnapshot(at_ns, tuple(quotes), ticks, 1)


def lasts(merge: FleetMerge) -> dict[str, float]:
    merged = merge.snapshot()
    assert merged is not None
    return {q.symbol: q.last for q in merged.quotes}


def test_the_watchlist_is_the_union_and_the_newest_quote_of_each_symbol() -> None:
    m = FleetMerge()
    assert m.snapshot() is None
    m.take_snapshot("sim", "1m", "a", snap(100, quote("AAA", 1.0), quote("BBB", 2.0), ticks=5), None, 0.0)
    m.take_snapshot("sim", "1m", "b", snap(200, quote("BBB", 2.5), quote("CCC", 3.0), ticks=7), None, 0.1)
    assert lasts(m) == {"AAA": 1.0, "BBB": 2.5, "CCC": 3.0}
    assert m.symbols == ("AAA", "BBB", "CCC")
    merged = m.snapshot()
    assert merged is not None and merged.at_ns == 200 and merged.ticks == 12
    # a's newer snapshot makes its BBB the newest again
    m.take_snapshot("sim", "1m", "a", snap(300, quote("AAA", 1.1), quote("BBB", 2.2)), None, 0.2)
    assert lasts(m) == {"AAA": 1.1, "BBB": 2.2, "CCC": 3.0}


def test_the_parts_of_one_snapshot_each_replace_their_own_quotes() -> None:
    m = FleetMerge()
    m.take_snapshot("sim", "1m", "a", snap(100, quote("AAA", 1.0)), None, 0.0)
    m.take_snapshot("sim", "1m", "a", snap(100, quote("BBB", 2.0)), None, 0.0)  # the second part
    assert lasts(m) == {"AAA": 1.0, "BBB": 2.0}
    (row,) = m.views(0.0)
    assert row.symbols == 2


def test_an_engine_silent_past_the_threshold_is_gone_and_comes_back() -> None:
    m = FleetMerge(gone_s=5.0)
    health = PipelineHealth(lag_p99_ms=12.0, signal_p99_ms=40.0, queue_depth=3)
    m.take_snapshot("sim", "1m", "a", snap(1, quote("AAA", 1.0)), health, 0.0)
    m.take_snapshot("sim", "1m", "b", snap(1, quote("BBB", 1.0)), None, 0.0)
    m.take_snapshot("sim", "1m", "b", snap(2, quote("BBB", 1.0)), None, 4.0)
    a, b = m.views(4.9)
    assert (a.name, a.state, a.lag_p99_ms, a.signal_p99_ms, a.queue_depth) == ("a", "live", 12.0, 40.0, 3)
    assert b.state == "live" and math.isnan(b.lag_p99_ms)
    a, b = m.views(5.0)
    assert a.gone and a.seen_s == 5.0 and not b.gone
    assert m.summary(5.0) == (1, ["a"])
    assert lasts(m) == {"AAA": 1.0, "BBB": 1.0}  # the last known quote stays
    m.take_snapshot("sim", "1m", "a", snap(3, quote("AAA", 1.5)), None, 6.0)
    assert [v.state for v in m.views(6.0)] == ["live", "live"]


def test_statuses_set_the_engines_state_and_a_new_engine_appears_by_its_status() -> None:
    m = FleetMerge(gone_s=5.0)
    m.take_snapshot("binance", "1m", "a", snap(1, quote("BTC", 1.0)), None, 0.0)
    m.take_status("binance", "a", FeedStatus("binance", "reconnecting", "HTTP 503"), 1.0)
    (a,) = m.views(1.0)
    assert (a.state, a.reason) == ("reconnecting", "HTTP 503")
    m.take_snapshot("binance", "1m", "a", snap(2, quote("BTC", 1.0)), None, 2.0)
    assert m.views(2.0)[0].state == "reconnecting"  # snapshots go on while the feed reconnects
    m.take_status("binance", "a", FeedStatus("binance", "stale", "quiet", symbols=("BTC",)), 3.0)
    assert m.views(3.0)[0].state == "reconnecting"  # a note on some symbols is not the engine's state
    m.take_status("coinbase", "c", FeedStatus("coinbase", "live"), 3.0)
    assert [(v.feed, v.name, v.state, v.symbols) for v in m.views(3.0)] == [
        ("binance", "a", "reconnecting", 1), ("coinbase", "c", "live", 0)]
    assert m.feeds == ("binance", "coinbase")
    m.take_snapshot("coinbase", "5m", "c", snap(4, quote("ETH", 2.0)), None, 4.0)  # its row, not a second
    assert [(v.feed, v.interval, v.name, v.state, v.symbols) for v in m.views(4.0)] == [
        ("binance", "1m", "a", "reconnecting", 1), ("coinbase", "5m", "c", "live", 1)]


def test_the_health_is_the_worst_of_the_engines_present_and_carries_the_rows() -> None:
    m = FleetMerge(gone_s=5.0)
    m.take_snapshot("sim", "1m", "a", snap(1, quote("A", 1.0)),
                    PipelineHealth(lag_p99_ms=10.0, queue_depth=1, ticks_in=100, signal_p99_ms=math.nan), 0.0)
    m.take_snapshot("sim", "1m", "b", snap(1, quote("B", 1.0)),
                    PipelineHealth(lag_p99_ms=30.0, queue_depth=2, ticks_in=50, signal_p99_ms=7.0), 3.0)
    h = m.health(4.0)
    assert isinstance(h, FleetHealth) and h.feed == "fleet"
    assert (h.lag_p99_ms, h.queue_depth, h.ticks_in, h.signal_p99_ms) == (30.0, 3, 150, 7.0)
    assert [v.name for v in h.engines] == ["a", "b"]
    h = m.health(6.0)  # a is gone: its figures leave the fleet's
    assert (h.lag_p99_ms, h.queue_depth, h.ticks_in) == (30.0, 2, 50)


def test_engines_are_bounded_and_the_long_silent_forgotten() -> None:
    m = FleetMerge(gone_s=1.0, forget_s=10.0, max_engines=2)
    m.take_snapshot("sim", "1m", "a", snap(1, quote("A", 1.0)), None, 0.0)
    m.take_snapshot("sim", "1m", "b", snap(1, quote("B", 1.0)), None, 1.0)
    m.take_snapshot("sim", "1m", "c", snap(1, quote("C", 1.0)), None, 2.0)  # a, silent longest, goes
    assert [v.name for v in m.views(2.0)] == ["b", "c"] and m.symbols == ("B", "C")
    assert not m.forget_old(10.5)
    assert m.forget_old(11.0) and [v.name for v in m.views(11.0)] == ["c"] and m.symbols == ("C",)


def test_new_symbols_are_told_once_and_again_after_their_engine_was_forgotten() -> None:
    m = FleetMerge(gone_s=1.0, forget_s=10.0)
    m.take_snapshot("sim", "1m", "a", snap(1, quote("A", 1.0), quote("B", 1.0)), None, 0.0)
    assert m.take_new_symbols() == ("A", "B") and m.take_new_symbols() == ()
    m.take_snapshot("sim", "1m", "b", snap(1, quote("B", 1.0), quote("C", 1.0)), None, 5.0)
    m.take_snapshot("sim", "1m", "a", snap(2, quote("A", 1.0), quote("B", 1.0)), None, 5.0)
    assert m.take_new_symbols() == ("C",)  # B was told already, by a
    m.take_snapshot("sim", "1m", "c", snap(1, quote("D", 1.0)), None, 6.0)
    assert m.forget_old(16.0) and m.symbols == ()  # forgotten before being taken: not told
    assert m.take_new_symbols() == ()
    m.take_snapshot("sim", "1m", "a", snap(3, quote("A", 1.0)), None, 20.0)
    assert m.take_new_symbols() == ("A",)  # a forgotten symbol is new again


def test_the_fleet_runtime_is_a_view_only_console_runtime() -> None:
    from engine.bus.attach import FleetRuntime
    from engine.bus.connection import settings_from
    from engine.console_runtime import ConsoleRuntime

    runtime = FleetRuntime(settings_from("nats://127.0.0.1:4222"), feed="binance", interval="1m")
    assert isinstance(runtime, ConsoleRuntime)
    assert not (runtime.implements_subscribe or runtime.implements_watch or runtime.implements_history
                or runtime.implements_alerts)
    assert runtime.feed.name == "fleet" and runtime.watch == () and runtime.interval == ""
    assert (runtime.snapshot_subject, runtime.status_subject, runtime.signal_subject) == (
        "tickdeck.snapshots.binance.1m.*", "tickdeck.status.binance.*", "tickdeck.signals.binance.1m.*")
    assert FleetRuntime(settings_from("nats://127.0.0.1:4222")).signal_subject == "tickdeck.signals.*.*.*"

"""The engine keeps in memory only the bars the chart and the indicators need; a longer timeframe reads
older bars from the bar store, and where there is no store the chart says what it shows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.backfill.sizing import ring_bars
from engine.chart_data import CHART_BARS, SERIES, chart_data
from engine.config import load_config
from engine.config_model import Config
from engine.store import BarStore
from engine.stored_bars import READ_MAX, OlderBars, StoredBars
from engine.tick_engine import Engine
from engine.ticks import BAR_DTYPE
from tests.data import Bars, random_walk
from tests.unit.oracle import TALIB, assert_matches, scale_for

MIN = 60_000_000_000
OUTPUTS = ("rsi_14", "sma_20", "macd_hist_12_26_9", "atr_14")
KEEP = 90 * 86_400 * 10**9  # the default retention
BARS = 2_400  # more than the ring holds; at one hour, 40 bars
NOW = time.time_ns() // MIN * MIN  # the store keeps 90 days: bars from the last two days


def store_config(tmp_path: Path) -> Config:
    return load_config(overrides={"feed.name": "binance", "history.store": str(tmp_path / "store")}, env={})


def bar_rows(n: int = BARS) -> np.ndarray:
    walk = random_walk(n, seed=3)
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["t"], bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"] = (
        NOW - np.arange(n, 0, -1, dtype=np.int64) * MIN, walk.o, walk.h, walk.l, walk.c, walk.v)
    bars["trades"] = 1
    return bars


def fed(depth: int, bars: np.ndarray) -> Engine:
    """An engine of ``depth`` ring bars that took ``bars`` as history (the last one stays forming)."""
    engine = Engine(OUTPUTS, MIN, capacity=2, depth=depth)
    engine.add_symbol("BTCUSDT")
    rows = bars.copy()
    rows["sym"] = 0
    engine.ingest_history(rows)
    return engine


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def test_the_widest_timeframe_shows_the_same_bars_as_a_ring_of_2000_when_the_store_has_them(
        tmp_path: Path) -> None:
    config = store_config(tmp_path)
    depth = ring_bars(config)
    assert depth < 2_000
    bars = bar_rows()
    before = fed(BARS, bars)  # a ring that holds every bar, as 2,000 held a few days of history
    after = fed(depth, bars)
    with BarStore(tmp_path / "store", KEEP) as store:  # the bars the engine closed, as the writer keeps them
        store.append("binance", "BTCUSDT", MIN, bars[:-1])
    stored = StoredBars(config, "binance", MIN)
    for factor in (60, 15, 5):
        want = chart_data(before, "BTCUSDT", factor, CHART_BARS)
        got = chart_data(after, "BTCUSDT", factor, CHART_BARS, stored.newest("BTCUSDT", NOW, depth * factor))
        assert want is not None and got is not None
        assert len(got) == len(want) >= BARS // factor  # every bar
        assert same(got.t, want.t) and same(got.ohlcv, want.ohlcv), factor
        for name in SERIES:
            assert same(got.series[name], want.series[name]), (factor, name)
        assert got.values == pytest.approx(want.values, nan_ok=True) and got.forming == want.forming
        # fewer bars than the chart can show: it says where they came from
        older = BARS - 1 - depth  # the bars the engine closed and its ring no longer holds
        assert got.note == f"{len(got)} bars: {depth} in memory, {older:,} older from the bar store"
    # the same, equal to TA-Lib over the hour bars (warm-up taken from the store, not the ring)
    got = chart_data(after, "BTCUSDT", 60, CHART_BARS, stored.newest("BTCUSDT", NOW, depth * 60))
    assert got is not None
    closed = slice(0, len(got) - 1)  # the last hour is still forming
    hour = Bars(got.t[closed], *(got.ohlcv[closed, k] for k in range(5)))
    for name in ("rsi_14", "sma_20"):
        assert_matches(name, got.series[name][closed], TALIB[name](hour), scale_for(name, hour))
    stored.close()


def test_a_timeframe_beyond_the_ring_without_a_store_says_what_the_chart_shows() -> None:
    config = load_config(overrides={"feed.name": "sim"}, env={})
    depth = ring_bars(config)
    engine = fed(depth, bar_rows())
    stored = StoredBars(config, "sim", MIN)
    older = stored.newest("BTCUSDT", NOW, depth * 60)
    assert not len(older) and older.missing == "the sim feed keeps no bar store"
    data = chart_data(engine, "BTCUSDT", 60, CHART_BARS, older)
    assert data is not None and len(data) <= depth // 60 + 2  # part hours at both ends
    assert data.note == f"{len(data)} bars: {depth} in memory, the sim feed keeps no bar store"
    # at the engine's own interval the ring holds the whole chart: nothing to say
    data = chart_data(engine, "BTCUSDT", 1, CHART_BARS)
    assert data is not None and len(data) == CHART_BARS and data.note == ""


def test_a_store_without_older_bars_is_said_too(tmp_path: Path) -> None:
    config = store_config(tmp_path)
    depth = ring_bars(config)
    engine = fed(depth, bar_rows())
    stored = StoredBars(config, "binance", MIN)
    data = chart_data(engine, "BTCUSDT", 5, CHART_BARS, stored.newest("BTCUSDT", NOW, depth * 5))
    assert data is not None
    assert data.note == f"{len(data)} bars: {depth} in memory, the bar store has no older bars"
    stored.close()


def test_reads_are_bounded_and_a_later_read_asks_only_for_newer_bars(tmp_path: Path) -> None:
    config = store_config(tmp_path)
    bars = bar_rows()
    with BarStore(tmp_path / "store", KEEP) as store:
        store.append("binance", "BTCUSDT", MIN, bars[:1000])
    stored = StoredBars(config, "binance", MIN)
    first = stored.newest("BTCUSDT", NOW, 300)
    assert same(first.t, bars["t"][700:1000]) and stored.reads == 1
    with BarStore(tmp_path / "store", KEEP) as store:  # two more bars closed meanwhile
        store.append("binance", "BTCUSDT", MIN, bars[1000:1002])
    second = stored.newest("BTCUSDT", NOW, 300)
    assert same(second.t, bars["t"][702:1002]) and stored.reads == 1  # from the cache, plus the new ones
    assert same(second.ohlcv[:, 3], bars["close"][702:1002])
    assert len(stored.newest("BTCUSDT", NOW, 10 * READ_MAX)) == 1002 and stored.reads == 2  # asked more
    stored.close()


def test_a_read_for_an_earlier_time_never_returns_the_cached_newer_bars(tmp_path: Path) -> None:
    config = store_config(tmp_path)
    bars = bar_rows()
    with BarStore(tmp_path / "store", KEEP) as store:
        store.append("binance", "BTCUSDT", MIN, bars[:1000])
    stored = StoredBars(config, "binance", MIN)
    assert same(stored.newest("BTCUSDT", NOW, 300).t, bars["t"][700:1000])
    earlier = stored.newest("BTCUSDT", int(bars["t"][500]), 300)  # e.g. a chart scrolled back
    assert same(earlier.t, bars["t"][200:500])
    stored.close()


def test_older_bars_go_before_the_ring_and_never_repeat_its_bars() -> None:
    from engine.stored_bars import merge

    t = np.array([5, 6, 7]) * MIN
    ring = np.ones((3, 5))
    older = OlderBars(np.array([2, 3, 4, 5, 6]) * MIN, np.zeros((5, 5)))
    mt, mbars, n = merge(older, t, ring)
    assert list(mt // MIN) == [2, 3, 4, 5, 6, 7] and n == 3
    assert mbars[:3].sum() == 0 and (mbars[3:] == 1).all()

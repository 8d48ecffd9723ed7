"""The detail pane's data: bars resampled to a timeframe, the chart's series (equal to TA-Lib on those
bars), every output's current value at that timeframe, and the forming bar, read from a real Engine fed
with ticks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from engine.chart_data import SERIES, ChartData, chart_data, resample
from engine.tick_engine import Engine
from engine.ticks import make_ticks
from tests.data import Bars, random_walk
from tests.unit.oracle import TALIB, assert_matches, scale_for

MIN = 60_000_000_000
T0 = 5_666_666 * 5 * MIN  # on the five-minute grid
OUTPUTS = ["rsi_14", "sma_20", "macd_hist_12_26_9", "atr_14"]

# (minute, open, high, low, close, volume); minute 10 is still forming
HAND = [
    (3, 10.0, 12.0, 9.0, 11.0, 1.0),
    (4, 11.0, 13.0, 10.0, 12.0, 2.0),
    (5, 12.0, 12.5, 11.0, 11.5, 3.0),
    (6, 11.5, 14.0, 11.5, 13.0, 4.0),
    (9, 13.0, 13.0, 12.0, 12.5, 5.0),
    (10, 12.5, 15.0, 12.5, 14.0, 6.0),
]
# worked by hand: five-minute periods 0, 5 and 10
HAND_5M = [
    (0, 10.0, 13.0, 9.0, 12.0, 3.0),
    (5, 12.0, 14.0, 11.0, 12.5, 12.0),
    (10, 12.5, 15.0, 12.5, 14.0, 6.0),
]


def bar_ticks(slot: int, times: np.ndarray, ohlcv: np.ndarray) -> np.ndarray:
    """Four ticks per bar (open, high, low, close; all the volume on the first) that build exactly it."""
    n = len(times)
    ticks = make_ticks(4 * n)
    ticks["sym"] = slot
    ticks["ts"] = np.repeat(times, 4) + np.tile(np.arange(1, 5) * 1_000_000_000, n)
    ticks["price"] = ohlcv[:, :4].reshape(-1)
    size = np.zeros((n, 4))
    size[:, 0] = ohlcv[:, 4]
    ticks["size"] = size.reshape(-1)
    return ticks


def fed_engine(rows: Sequence[tuple[float, ...]], symbol: str = "AAA") -> tuple[Engine, int]:
    engine = Engine(OUTPUTS, MIN, capacity=4, depth=2000)
    engine.add_symbol("OTHER")
    slot = engine.add_symbol(symbol)
    table = np.array(rows, dtype=np.float64)
    engine.ingest(bar_ticks(slot, T0 + table[:, 0].astype(np.int64) * MIN, table[:, 1:]))
    return engine, slot


def as_rows(data: ChartData) -> list[tuple[float, ...]]:
    rows = zip(data.t.tolist(), data.ohlcv.tolist(), strict=True)
    return [(float((t - T0) // MIN), *bar) for t, bar in rows]


# --- resampling --------------------------------------------------------------------------------------

def test_resampling_equals_the_hand_worked_example_with_the_forming_bar_last() -> None:
    engine, _ = fed_engine(HAND)
    data = chart_data(engine, "AAA", 5, 100)
    assert data is not None
    assert as_rows(data) == HAND_5M
    assert data.timeframe_ns == 5 * MIN and data.symbol == "AAA"
    assert data.forming  # minute 10 has not closed

    one = chart_data(engine, "AAA", 1, 100)
    assert one is not None and as_rows(one) == HAND and one.forming
    assert engine.forming_bar(engine.symbols.get("AAA") or 0) is not None  # reading changed nothing


def test_bars_keeps_the_newest_and_the_resample_function_alone() -> None:
    engine, _ = fed_engine(HAND)
    data = chart_data(engine, "AAA", 5, 2)
    assert data is not None and as_rows(data) == HAND_5M[1:]
    table = np.array(HAND)
    t, bars = resample(T0 + table[:, 0].astype(np.int64) * MIN, table[:, 1:], 5 * MIN)
    assert [(float((ti - T0) // MIN), *b) for ti, b in zip(t.tolist(), bars.tolist(), strict=True)] == HAND_5M
    t0, b0 = resample(np.zeros(0, np.int64), np.zeros((0, 5)), MIN)
    assert t0.shape == (0,) and b0.shape == (0, 5)


def test_a_period_is_forming_until_its_last_interval_closes() -> None:
    engine, slot = fed_engine(HAND)
    engine.close_due(T0 + 11 * MIN)  # minute 10 closes; nothing forms
    assert engine.forming_bar(slot) is None
    one = chart_data(engine, "AAA", 1, 100)
    five = chart_data(engine, "AAA", 5, 100)
    assert one is not None and not one.forming and as_rows(one) == HAND
    assert five is not None and five.forming  # minutes 11-14 of that period may still trade

    engine.ingest(bar_ticks(slot, np.array([T0 + 14 * MIN]), np.array([[14.0, 14.5, 13.5, 14.2, 1.0]])))
    engine.close_due(T0 + 15 * MIN)
    five = chart_data(engine, "AAA", 5, 100)
    assert five is not None and not five.forming
    assert as_rows(five)[-1] == (10.0, 12.5, 15.0, 12.5, 14.2, 7.0)


# --- series ------------------------------------------------------------------------------------------

def pandas_resample(bars: Bars, rule: str) -> Bars:
    """The oracle's resample: pandas on the epoch grid, empty periods dropped."""
    frame = pd.DataFrame({"o": bars.o, "h": bars.h, "l": bars.l, "c": bars.c, "v": bars.v},
                         index=pd.to_datetime(bars.t, unit="ns"))
    out = frame.resample(rule, origin="epoch").agg({"o": "first", "h": "max", "l": "min", "c": "last",
                                                    "v": "sum"}).dropna()
    return Bars(out.index.asi8, *(out[k].to_numpy() for k in "ohlcv"))


@pytest.mark.parametrize(("factor", "rule"), [(1, "1min"), (5, "5min"), (15, "15min")])
def test_series_equal_talib_on_the_resampled_bars_warmed_up_over_all_bars(factor: int, rule: str) -> None:
    walk = random_walk(900, seed=11)
    walk = Bars(T0 + 7 * MIN + (walk.t - walk.t[0]), walk.o, walk.h, walk.l, walk.c, walk.v)  # off the grid
    engine = Engine(OUTPUTS, MIN, capacity=2, depth=2000)
    slot = engine.add_symbol("AAA")
    engine.ingest(bar_ticks(slot, walk.t, np.column_stack([walk.o, walk.h, walk.l, walk.c, walk.v])))
    engine.close_due(int(walk.t[-1]) + MIN)

    want_bars = pandas_resample(walk, rule)
    keep = 40
    data = chart_data(engine, "AAA", factor, keep)
    assert data is not None and len(data) == keep
    assert data.forming == (factor > 1)  # the last bar opens minute 906: its 5 and 15 minute periods are open
    assert data.t.tolist() == want_bars.t[-keep:].tolist()
    np.testing.assert_array_equal(data.ohlcv, np.column_stack(
        [want_bars.o, want_bars.h, want_bars.l, want_bars.c, want_bars.v])[-keep:])
    assert set(data.series) == set(SERIES)
    for name in SERIES:
        want = TALIB[name](want_bars)[-keep:]
        assert_matches(name, data.series[name], want, scale_for(name, want_bars))
    if factor == 5:  # 180 bars: everything is past its warm-up in the kept window
        assert all(np.isfinite(data.series[name]).all() for name in SERIES)


def test_the_forming_bar_is_in_the_series_as_the_engine_previews_it() -> None:
    walk = random_walk(120, seed=3)
    engine = Engine(OUTPUTS, MIN, capacity=2, depth=500)
    slot = engine.add_symbol("AAA")
    engine.ingest(bar_ticks(slot, walk.t, np.column_stack([walk.o, walk.h, walk.l, walk.c, walk.v])))
    data = chart_data(engine, "AAA", 1, 500)
    assert data is not None and data.forming and len(data) == 120  # 119 closed + the forming one
    last = [walk.o[-1], walk.h[-1], walk.l[-1], walk.c[-1], walk.v[-1]]
    np.testing.assert_array_equal(data.ohlcv[-1], last)
    want = TALIB["rsi_14"](walk)
    assert_matches("rsi_14", data.series["rsi_14"], want, scale_for("rsi_14", walk))
    # the engine's own provisional RSI for that forming bar is the chart's last value
    provisional = engine.bank.provisional[engine.bank.row("rsi_14"), slot]
    assert data.series["rsi_14"][-1] == pytest.approx(provisional, rel=1e-12)


# --- values, missing symbols, copies -----------------------------------------------------------------

def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_values_are_the_engines_current_values_for_every_configured_output() -> None:
    walk = random_walk(60, seed=5)
    engine = Engine(OUTPUTS, MIN, capacity=2, depth=500)
    slot = engine.add_symbol("AAA")
    engine.ingest(bar_ticks(slot, walk.t, np.column_stack([walk.o, walk.h, walk.l, walk.c, walk.v])))
    bank = engine.bank
    data = chart_data(engine, "AAA", 1, 10)
    assert data is not None and set(data.values) == set(bank.names) == set(OUTPUTS)
    assert all(same(data.values[n], float(bank.provisional[bank.row(n), slot])) for n in OUTPUTS)
    assert not same(float(bank.provisional[bank.row("rsi_14"), slot]),
                    float(bank.committed[bank.row("rsi_14"), slot]))  # so the test tells them apart

    engine.close_due(int(walk.t[-1]) + MIN)
    data = chart_data(engine, "AAA", 1, 10)
    assert data is not None
    assert all(same(data.values[n], float(bank.committed[bank.row(n), slot])) for n in OUTPUTS)
    assert data.values["rsi_14"] == pytest.approx(TALIB["rsi_14"](walk)[-1], rel=1e-8)


@pytest.mark.parametrize("closed", [False, True], ids=["forming", "closed"])
def test_values_at_a_larger_timeframe_are_that_timeframes_equal_to_talib(closed: bool) -> None:
    walk = random_walk(600, seed=8)
    start = T0 - T0 % (15 * MIN)  # on the 15-minute grid
    walk = Bars(start + (walk.t - walk.t[0]), walk.o, walk.h, walk.l, walk.c, walk.v)
    engine = Engine(OUTPUTS, MIN, capacity=2, depth=2000)
    slot = engine.add_symbol("AAA")
    engine.ingest(bar_ticks(slot, walk.t, np.column_stack([walk.o, walk.h, walk.l, walk.c, walk.v])))
    if closed:  # 600 minutes from the grid: the last 15-minute period closes with the last bar
        engine.close_due(int(walk.t[-1]) + MIN)
    data = chart_data(engine, "AAA", 15, 10)
    assert data is not None and data.forming == (not closed) and set(data.values) == set(OUTPUTS)
    want_bars = pandas_resample(walk, "15min")
    for name in OUTPUTS:
        want = TALIB[name](want_bars)[-1:]  # the forming period's value is what it would be if it closed now
        assert_matches(name, np.array([data.values[name]]), want, scale_for(name, want_bars))
        engine_value = float(engine.bank.committed[engine.bank.row(name), slot])
        assert not same(data.values[name], engine_value)  # not the one-minute value


def test_unknown_symbol_or_no_bars_gives_none_and_bad_arguments_say_which() -> None:
    engine, _ = fed_engine(HAND)
    assert chart_data(engine, "NOPE", 1, 10) is None
    assert chart_data(engine, "OTHER", 1, 10) is None  # registered, never traded
    with pytest.raises(ValueError, match="timeframe factor must be at least 1, got 0"):
        chart_data(engine, "AAA", 0, 10)
    with pytest.raises(ValueError, match="bars to keep must be at least 1, got 0"):
        chart_data(engine, "AAA", 1, 0)


def test_everything_returned_is_a_read_only_copy() -> None:
    engine, slot = fed_engine(HAND)
    data = chart_data(engine, "AAA", 1, 10)
    assert data is not None
    for array in (data.t, data.ohlcv, *data.series.values()):
        assert not array.flags.writeable
        for engine_array in (engine.history.bars, engine.history.t, engine.forming):
            assert not np.shares_memory(array, engine_array)
    with pytest.raises(ValueError):
        data.ohlcv[0, 0] = 0.0
    engine.ingest(bar_ticks(slot, np.array([T0 + 20 * MIN]), np.array([[1.0, 1.0, 1.0, 1.0, 1.0]])))
    assert as_rows(data) == HAND  # the engine moved on; the copy did not

"""Ticks to bars through the Engine: OHLCV per interval, late and bad ticks, quiet symbols, batching."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.indicators.bank import IndicatorBank
from engine.tick_engine import Engine
from engine.ticks import make_ticks

SEC = 1_000_000_000
MIN = 60 * SEC
T0 = 1_700_000_000 * SEC - (1_700_000_000 * SEC) % (86_400 * SEC)  # a UTC midnight
OUTS = ["sma_5", "ema_5", "rsi_3"]


def ticks(rows: list[tuple[int, int, float, float]]) -> np.ndarray:
    out = make_ticks(len(rows))
    for i, (sym, ts, px, qty) in enumerate(rows):
        out[i]["sym"], out[i]["ts"], out[i]["price"], out[i]["size"] = sym, ts, px, qty
    return out


def engine(interval: int = MIN, capacity: int = 4) -> Engine:
    e = Engine(OUTS, interval, capacity=capacity, depth=50)
    for name in ("AAA", "BBB", "CCC", "DDD")[:capacity]:
        e.add_symbol(name)
    return e


def test_forming_bar_then_close_on_next_interval() -> None:
    e = engine()
    e.ingest(ticks([(0, T0 + 1 * SEC, 10.0, 1), (0, T0 + 5 * SEC, 12.0, 2), (0, T0 + 59 * SEC, 9.0, 3),
                    (0, T0 + 30 * SEC, 11.0, 4)]))
    start, bar = e.forming_bar(0)
    assert start == T0
    assert bar.tolist() == [10.0, 12.0, 9.0, 11.0, 10.0]
    assert e.history.size(0) == 0
    e.ingest(ticks([(0, T0 + MIN + 2 * SEC, 13.0, 1)]))
    t, bars = e.history.tail(0)
    assert t.tolist() == [T0]
    assert bars.tolist() == [[10.0, 12.0, 9.0, 11.0, 10.0]]
    start, bar = e.forming_bar(0)
    assert start == T0 + MIN and bar.tolist() == [13.0, 13.0, 13.0, 13.0, 1.0]
    assert e.stats.bars == 1 and e.stats.ticks == 5


def test_late_tick_keeps_volume_not_price_and_bad_ticks_are_counted() -> None:
    e = engine()
    e.ingest(ticks([(1, T0 + MIN + SEC, 20.0, 1), (1, T0 + 10 * SEC, 99.0, 5),
                    (1, T0 + MIN + 3 * SEC, float("nan"), 1), (1, T0 + MIN + 4 * SEC, -1.0, 1),
                    (1, T0 + MIN + 5 * SEC, 21.0, -2.0), (1, T0 + MIN + 6 * SEC, float("inf"), 1)]))
    _, bar = e.forming_bar(1)
    assert bar.tolist() == [20.0, 20.0, 20.0, 20.0, 6.0]
    s = e.stats
    assert (s.ticks, s.late_ticks, s.bad_ticks) == (2, 1, 4)


def test_quiet_symbol_closes_on_time() -> None:
    e = engine()
    e.ingest(ticks([(2, T0 + 5 * SEC, 7.0, 1)]))
    e.close_due(T0 + MIN - 1)
    assert e.history.size(2) == 0
    e.close_due(T0 + MIN)
    assert e.history.size(2) == 1 and e.forming_bar(2) is None


def test_daily_and_one_second_bars_align_to_utc() -> None:
    d = engine(86_400 * SEC)
    d.ingest(ticks([(0, T0 + 3_600 * SEC, 5.0, 1), (0, T0 + 86_399 * SEC, 6.0, 1),
                    (0, T0 + 86_400 * SEC, 7.0, 1)]))
    assert d.history.tail(0)[0].tolist() == [T0]
    s = engine(SEC)
    s.ingest(ticks([(0, T0 + 1_500_000_000, 5.0, 1), (0, T0 + 1_999_999_999, 6.0, 1),
                    (0, T0 + 2 * SEC, 7.0, 1)]))
    t, bars = s.history.tail(0)
    assert t.tolist() == [T0 + SEC] and bars[0, 3] == 6.0


def random_ticks(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = make_ticks(n)
    out["sym"] = rng.integers(0, 3, n)
    out["ts"] = T0 + np.sort(rng.integers(0, 40 * MIN, n))
    out["price"] = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.002, n))), 2)
    out["size"] = rng.integers(1, 50, n)
    return out


def test_bars_and_indicators_equal_pandas_resample_then_streaming() -> None:
    tk = random_ticks(5000, 1)
    e = engine()
    e.ingest(tk)
    df = pd.DataFrame({"sym": tk["sym"], "ts": tk["ts"], "p": tk["price"], "q": tk["size"]})
    df["bucket"] = df["ts"] // MIN * MIN
    for sym, g in df.groupby("sym"):
        agg = g.groupby("bucket").agg(o=("p", "first"), h=("p", "max"), l=("p", "min"), c=("p", "last"),
                                      v=("q", "sum"))
        closed = agg.iloc[:-1]  # the last bucket is still forming
        t, bars = e.history.tail(int(sym))
        assert t.tolist() == closed.index.tolist()
        np.testing.assert_array_equal(bars, closed[["o", "h", "l", "c", "v"]].to_numpy())
        bank = IndicatorBank(OUTS, 1)
        for ts, row in closed.iterrows():
            bank.commit(0, int(ts), *row.to_numpy())
        np.testing.assert_array_equal(e.bank.committed[:, int(sym)], bank.committed[:, 0])
        last = agg.iloc[-1]
        bank.preview(0, int(agg.index[-1]), *last.to_numpy())
        np.testing.assert_array_equal(e.bank.provisional[:, int(sym)], bank.provisional[:, 0])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=10))
def test_any_batching_gives_identical_state(sizes: list[int]) -> None:
    tk = random_ticks(1500, 2)
    whole = engine()
    whole.ingest(tk)
    split = engine()
    i = 0
    k = 0
    while i < len(tk):
        j = i + sizes[k % len(sizes)]
        split.ingest(tk[i:j])
        i = j
        k += 1
    np.testing.assert_array_equal(split.bank.state, whole.bank.state)
    np.testing.assert_array_equal(split.bank.committed, whole.bank.committed)
    np.testing.assert_array_equal(split.bank.provisional, whole.bank.provisional)
    np.testing.assert_array_equal(split.history.bars, whole.history.bars)
    assert split.stats == whole.stats


def test_small_batch_capacity_splits_transparently() -> None:
    tk = random_ticks(3000, 3)
    a = engine()
    a.ingest(tk)
    b = Engine(OUTS, MIN, capacity=4, depth=50, batch_capacity=7)
    for name in ("AAA", "BBB", "CCC", "DDD"):
        b.add_symbol(name)
    b.ingest(tk)
    np.testing.assert_array_equal(a.bank.committed, b.bank.committed)
    np.testing.assert_array_equal(a.history.bars, b.history.bars)


def test_a_late_tick_after_a_clock_close_does_not_reopen_the_bar() -> None:
    """close_due closed the bar; a tick for it arriving later is late: counted, its volume carried into
    the next bar, and no second bar with the same time reaches history or the indicators."""
    e = engine(SEC)
    e.ingest(ticks([(0, T0 + SEC // 2, 100.0, 1)]))
    e.close_due(T0 + SEC)
    e.ingest(ticks([(0, T0 + SEC // 2, 101.0, 4)]))
    assert e.forming_bar(0) is None and e.stats.late_ticks == 1
    e.ingest(ticks([(0, T0 + 3 * SEC, 102.0, 2)]))
    e.close_due(T0 + 4 * SEC)
    t, bars = e.history.tail(0)
    assert t.tolist() == [T0, T0 + 3 * SEC]
    assert bars[:, 3].tolist() == [100.0, 102.0]
    assert bars[:, 4].tolist() == [1.0, 6.0]  # the late tick's 4 arrive with the next bar
    assert e.bank.counts[0] == 2

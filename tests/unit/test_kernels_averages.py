"""Averages and bands kernels: WMA DEMA TEMA KAMA TRIX MACD, Bollinger, z-scores, Donchian.

Streaming contract (provisional values never touch committed state, a preview equals the commit of
the same bar, reset is a fresh start, instances do not overlap), TA-Lib parity at parameters other
than the defaults the parity suite uses, and hand-worked values for the outputs TA-Lib lacks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from engine.indicators import dispatch
from engine.indicators.bank import IndicatorBank
from tests.data import Bars, random_walk, scaled, scenarios, with_flats, zero_volume
from tests.unit.oracle import assert_matches
from tests.unit.streaming import stream

NAMES = [
    "wma_20", "wma_2", "dema_20", "dema_3", "tema_20", "tema_2", "kama_10", "kama_2", "trix_15",
    "trix_2", "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9", "macd_2_3_1",
    "macd_signal_2_3_1", "macd_hist_2_3_1", "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2",
    "bb_upper_5_0.5", "bb_lower_5_0.5", "zscore_20", "zscore_3", "volume_zscore_20",
    "volume_zscore_4", "donchian_upper_20", "donchian_lower_20", "donchian_middle_20",
    "donchian_upper_1", "donchian_middle_3",
]
BARS = with_flats(seed=21, n=300)


def _series(bank: IndicatorBank, slot: int = 0) -> np.ndarray:
    return bank.committed[:, slot].copy()


def _reference(bars: Bars) -> np.ndarray:
    bank = IndicatorBank(NAMES, 1)
    hist = np.empty((len(bars), bank.committed.shape[0]))
    for i, row in enumerate(bars.rows()):
        bank.commit(0, *row)
        hist[i] = _series(bank)
    return hist


REFERENCE = _reference(BARS)


# --- streaming contract -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_previews_leave_state_and_committed_series_untouched(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bank = IndicatorBank(NAMES, 2)
    for i, (t, o, h, l, c, v) in enumerate(BARS.rows()):
        for _ in range(int(rng.integers(0, 3))):
            state = bank.state.tobytes()
            committed = bank.committed.tobytes()
            px = c * float(np.exp(rng.normal(0.0, 0.03)))
            if rng.random() < 0.2:
                px = c  # a forming bar that repeats the close exercises the flat-window paths
            bank.preview(0, t, o, max(h, px), min(l, px), px, v * 2.0 * float(rng.random()))
            assert bank.state.tobytes() == state, f"preview changed state at bar {i}"
            assert bank.committed.tobytes() == committed
        bank.commit(0, t, o, h, l, c, v)
        np.testing.assert_array_equal(_series(bank), REFERENCE[i])


def test_preview_equals_commit_of_the_same_bar() -> None:
    bank = IndicatorBank(NAMES, 1)
    for t, o, h, l, c, v in BARS.rows():
        bank.preview(0, t, o, h, l, c, v)
        preview = bank.provisional[:, 0].copy()
        bank.commit(0, t, o, h, l, c, v)
        np.testing.assert_array_equal(preview, bank.committed[:, 0])


def test_reset_is_fresh_and_slots_are_independent() -> None:
    bank = IndicatorBank(NAMES, 3)
    other = random_walk(n=len(BARS), seed=5)
    for a, b in zip(BARS.rows(), other.rows(), strict=True):
        bank.commit(1, *a)
        bank.commit(0, *b)
    np.testing.assert_array_equal(_series(bank, 1), REFERENCE[-1])
    bank.reset(1)
    assert np.all(bank.state[:, 1] == 0.0)
    assert np.all(np.isnan(bank.committed[:, 1]))
    for i, row in enumerate(BARS.rows()):
        bank.commit(1, *row)
        np.testing.assert_array_equal(_series(bank, 1), REFERENCE[i])


def test_instances_sharing_a_bank_do_not_overlap() -> None:
    """Each output alone equals the same output among all the others: no kind writes outside the
    state rows its catalogue entry reserves."""
    together = stream(NAMES, BARS)
    for name in NAMES:
        alone = stream([name], BARS)[name]
        np.testing.assert_array_equal(alone, together[name], err_msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_kind_stays_inside_its_catalogue_rows(name: str) -> None:
    """Run one instance on a state array padded with sentinel rows: the padding must survive, so
    ``rows(params)`` covers every row the kernel touches."""
    bank = IndicatorBank([name], 1)
    rows = bank.state.shape[0]
    padded = np.full((rows + 64, 1), -7.25)
    padded[:rows] = 0.0
    out = np.full_like(bank.committed, np.nan)
    counts = np.zeros(1, dtype=np.int64)
    for t, o, h, l, c, v in BARS.rows():
        dispatch.preview_one(bank.plan_i, bank.plan_f, padded, out.copy(), 0, t, o, h, l, c * 1.01, v)
        dispatch.commit_one(bank.plan_i, bank.plan_f, padded, out, counts, 0, t, o, h, l, c, v)
        bank.commit(0, t, o, h, l, c, v)
    assert np.all(padded[rows:] == -7.25)
    np.testing.assert_array_equal(padded[:rows], bank.state)


def test_warm_up_matches_lookback() -> None:
    bank = IndicatorBank(NAMES, 1)
    bars = random_walk(n=80, seed=3)
    for i, row in enumerate(bars.rows()):
        bank.commit(0, *row)
        for name in NAMES:
            value = bank.committed[bank.row(name), 0]
            assert math.isnan(value) == (i < bank.lookback(name)), (name, i)


# --- TA-Lib parity away from the default parameters -------------------------------------------
ORACLE = {
    "wma_2": lambda b: talib.WMA(b.c, 2),
    "wma_7": lambda b: talib.WMA(b.c, 7),
    "dema_3": lambda b: talib.DEMA(b.c, 3),
    "tema_2": lambda b: talib.TEMA(b.c, 2),
    "kama_2": lambda b: talib.KAMA(b.c, 2),
    "kama_30": lambda b: talib.KAMA(b.c, 30),
    "trix_2": lambda b: talib.TRIX(b.c, 2),
    "macd_2_3_1": lambda b: talib.MACD(b.c, 2, 3, 1)[0],
    "macd_signal_2_3_1": lambda b: talib.MACD(b.c, 2, 3, 1)[1],
    "macd_hist_5_35_5": lambda b: talib.MACD(b.c, 5, 35, 5)[2],
    "macd_signal_12_26_1": lambda b: talib.MACD(b.c, 12, 26, 1)[1],
    "bb_upper_2_0.5": lambda b: talib.BBANDS(b.c, 2, 0.5, 0.5, 0)[0],
    "bb_lower_50_3": lambda b: talib.BBANDS(b.c, 50, 3, 3, 0)[2],
    "bb_middle_7_0": lambda b: talib.BBANDS(b.c, 7, 0, 0, 0)[1],
    "bb_upper_7_0": lambda b: talib.BBANDS(b.c, 7, 0, 0, 0)[0],
    "donchian_upper_2": lambda b: talib.MAX(b.h, 2),
    "donchian_lower_3": lambda b: talib.MIN(b.l, 3),
}
SCENARIOS = scenarios()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_equals_talib_at_other_parameters(scenario: str) -> None:
    bars = SCENARIOS[scenario]
    got = stream(list(ORACLE), bars)
    for name, oracle in ORACLE.items():
        scale = 1e-3 if name.startswith("trix") else float(np.median(np.abs(bars.c)))
        assert_matches(name, got[name], oracle(bars), scale)


def test_long_stream_with_flats_equals_talib() -> None:
    """Long enough that the moments' anchor is renewed hundreds of times and flat windows (exact
    zero variance, KAMA's all-zero change window) recur."""
    bars = with_flats(seed=8, n=20_000)
    names = ["kama_10", "bb_upper_20_2", "bb_lower_20_2", "wma_20", "trix_15", "macd_hist_12_26_9"]
    got = stream(names, bars)
    want = {
        "kama_10": talib.KAMA(bars.c, 10),
        "bb_upper_20_2": talib.BBANDS(bars.c, 20, 2, 2, 0)[0],
        "bb_lower_20_2": talib.BBANDS(bars.c, 20, 2, 2, 0)[2],
        "wma_20": talib.WMA(bars.c, 20),
        "trix_15": talib.TRIX(bars.c, 15),
        "macd_hist_12_26_9": talib.MACD(bars.c, 12, 26, 9)[2],
    }
    for name in names:
        scale = 1e-3 if name.startswith("trix") else float(np.median(bars.c))
        assert_matches(name, got[name], want[name], scale)


# --- hand-worked values (TA-Lib has no z-score and no Donchian middle) -------------------------
def _bars(close: list[float], high: list[float] | None = None, low: list[float] | None = None,
          volume: list[float] | None = None) -> Bars:
    c = np.array(close, dtype=float)
    h = np.array(high, dtype=float) if high is not None else c.copy()
    lo = np.array(low, dtype=float) if low is not None else c.copy()
    v = np.array(volume, dtype=float) if volume is not None else np.ones_like(c)
    t = np.arange(len(c), dtype=np.int64) * 60_000_000_000
    return Bars(t, c.copy(), h, lo, c, v)


def test_zscore_by_hand() -> None:
    # windows of 3: [1,2,3] mean 2, var 2/3 -> z = 1/sqrt(2/3) = sqrt(1.5); [2,3,4] likewise;
    # [3,4,4] mean 11/3, var 2/9 -> z = (1/3)/(sqrt(2)/3) = 1/sqrt(2); [4,4,4] flat -> NaN twice;
    # [4,4,10] mean 6, var (4+4+16)/3 = 8 -> z = 4/sqrt(8) = 1/sqrt(0.5) = sqrt(2).
    got = stream(["zscore_3"], _bars([1, 2, 3, 4, 4, 4, 4, 10]))["zscore_3"]
    want = [math.nan, math.nan, math.sqrt(1.5), math.sqrt(1.5), 1 / math.sqrt(2), math.nan, math.nan,
            math.sqrt(2)]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_zscore_is_shift_and_scale_invariant_at_extreme_prices() -> None:
    """The same shape at 1e-6 and at 1e7 (plus a 1e9 offset) gives the same z-scores: the anchored
    sums keep the variance free of cancellation at any price level."""
    base = [1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 10.0, 7.0, 1.0]
    ref = stream(["zscore_3"], _bars(base))["zscore_3"]
    for scale_, offset in ((1e-6, 0.0), (1e7, 0.0), (1.0, 1e9), (0.25, 1e7)):
        got = stream(["zscore_3"], _bars([offset + scale_ * x for x in base]))["zscore_3"]
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9, equal_nan=True)


def test_volume_zscore_by_hand() -> None:
    # windows of 4: [0,0,0,0] flat -> NaN; [0,0,0,30] mean 7.5, var (3*7.5^2 + 22.5^2)/4 = 168.75
    # -> z = 22.5/sqrt(168.75) = sqrt(3); [0,0,30,10] mean 10, var (100+100+400+0)/4 = 150 -> z = 0;
    # [0,30,10,0] mean 10, var (100+400+0+100)/4 = 150 -> z = -10/sqrt(150) = -sqrt(2/3).
    volume = [0, 0, 0, 0, 30, 10, 0]
    got = stream(["volume_zscore_4"], _bars([5.0] * 7, volume=volume))["volume_zscore_4"]
    want = [math.nan, math.nan, math.nan, math.nan, math.sqrt(3), 0.0, -math.sqrt(2 / 3)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, equal_nan=True)


def _numpy_zscore(x: np.ndarray, p: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(p - 1, len(x)):
        w = x[i - p + 1 : i + 1]
        if np.ptp(w) == 0.0:
            continue
        mean = math.fsum(w) / p
        std = math.sqrt(math.fsum((w - mean) ** 2) / p)
        out[i] = (x[i] - mean) / std
    return out


@pytest.mark.parametrize("bars", [with_flats(seed=4, n=600), zero_volume(seed=6), scaled(1e7, n=600),
                                  scaled(1e-6, n=600)], ids=["flats", "zero_volume", "huge", "tiny"])
def test_zscores_equal_a_two_pass_numpy_computation(bars: Bars) -> None:
    got = stream(["zscore_20", "volume_zscore_20"], bars)
    np.testing.assert_allclose(got["zscore_20"], _numpy_zscore(bars.c, 20), rtol=1e-9, atol=1e-9,
                               equal_nan=True)
    np.testing.assert_allclose(got["volume_zscore_20"], _numpy_zscore(bars.v, 20), rtol=1e-9,
                               atol=1e-9, equal_nan=True)


def test_donchian_by_hand() -> None:
    high = [10, 12, 11, 9, 9, 15, 8]
    low = [8, 9, 7, 6, 8, 10, 5]
    got = stream(["donchian_upper_3", "donchian_lower_3", "donchian_middle_3", "donchian_upper_1",
                  "donchian_middle_1"], _bars([9] * 7, high=high, low=low))
    nan = math.nan
    np.testing.assert_array_equal(got["donchian_upper_3"], [nan, nan, 12, 12, 11, 15, 15])
    np.testing.assert_array_equal(got["donchian_lower_3"], [nan, nan, 7, 6, 6, 6, 5])
    np.testing.assert_array_equal(got["donchian_middle_3"], [nan, nan, 9.5, 9, 8.5, 10.5, 10])
    np.testing.assert_array_equal(got["donchian_upper_1"], high)
    np.testing.assert_array_equal(got["donchian_middle_1"], [9, 10.5, 9, 7.5, 8.5, 12.5, 6.5])


def test_bollinger_flat_window_collapses_and_k_zero_is_the_sma() -> None:
    got = stream(["bb_upper_3_2", "bb_middle_3_2", "bb_lower_3_2", "bb_upper_3_0"],
                 _bars([1, 2, 3, 5, 5, 5]))
    # [1,2,3]: mean 2, population std sqrt(2/3)
    assert got["bb_middle_3_2"][2] == pytest.approx(2.0, rel=1e-15)
    assert got["bb_upper_3_2"][2] == pytest.approx(2.0 + 2 * math.sqrt(2 / 3), rel=1e-14)
    assert got["bb_lower_3_2"][2] == pytest.approx(2.0 - 2 * math.sqrt(2 / 3), rel=1e-14)
    # [5,5,5]: exactly flat, all three bands equal the price
    assert got["bb_upper_3_2"][5] == got["bb_middle_3_2"][5] == got["bb_lower_3_2"][5] == 5.0
    np.testing.assert_array_equal(got["bb_upper_3_0"], got["bb_middle_3_2"])

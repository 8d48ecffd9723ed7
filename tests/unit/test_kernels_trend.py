"""Trend kernels (ATR NATR ADX/DI SAR Supertrend OBV VWAP Keltner): streaming contract and the
indicators TA-Lib lacks, checked against hand-worked numbers and plain reference loops.

TA-Lib parity of ATR, NATR, ADX/DI, SAR and OBV lives in test_parity.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.indicators.bank import IndicatorBank
from tests.data import MINUTE_NS, Bars, random_walk, with_flats, with_gaps
from tests.unit.streaming import stream

NAMES = [
    "atr_14", "atr_1", "natr_14", "natr_1",
    "adx_14", "plus_di_14", "minus_di_14", "adx_3", "plus_di_3", "minus_di_3",
    "sar", "sar_0.05_0.3",
    "supertrend_10_3", "supertrend_dir_10_3", "supertrend_3_1.5", "supertrend_dir_3_1.5",
    "obv", "vwap",
    "keltner_upper_20_2", "keltner_middle_20_2", "keltner_lower_20_2",
    "keltner_upper_5_0.5", "keltner_middle_5_0.5", "keltner_lower_5_0.5",
]

DAY_NS = 86_400_000_000_000
MIDNIGHT = 19_676 * DAY_NS  # 2023-11-15 00:00 UTC


def _bars(rows: list[tuple[float, float, float]], volume: float = 1.0) -> Bars:
    """Bars from (high, low, close) rows; open = close, one minute apart."""
    a = np.array(rows, dtype=float)
    n = len(rows)
    t = MIDNIGHT + np.arange(n, dtype=np.int64) * MINUTE_NS
    return Bars(t, a[:, 2].copy(), a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), np.full(n, volume))


Row = tuple[int, float, float, float, float, float]


def _random_bar(rng: np.random.Generator, t: int, level: float) -> Row:
    o = level * math.exp(rng.normal(0.0, 0.05))
    c = level * math.exp(rng.normal(0.0, 0.05))
    h = max(o, c) * (1.0 + abs(rng.normal(0.0, 0.02)))
    l = min(o, c) * (1.0 - abs(rng.normal(0.0, 0.02)))
    dt = int(rng.integers(0, 2)) * DAY_NS  # sometimes a forming bar in the next session
    return t + dt, o, h, l, c, float(rng.gamma(2.0, 500.0) * rng.integers(0, 2))


# --- streaming contract ------------------------------------------------------------------------


@pytest.mark.parametrize("bars", [random_walk(600, seed=21), with_flats(seed=22, n=600)],
                         ids=["walk", "flats"])
def test_preview_never_changes_committed_state(bars: Bars) -> None:
    plain = stream(NAMES, bars)
    bank = IndicatorBank(NAMES, 2)
    rows = {n: bank.row(n) for n in NAMES}
    got = {n: np.empty(len(bars)) for n in NAMES}
    rng = np.random.default_rng(5)
    for i, (t, o, h, l, c, v) in enumerate(bars.rows()):
        for _ in range(3):
            before = bank.state.copy()
            committed = bank.committed.copy()
            bank.preview(0, *_random_bar(rng, t, c))
            np.testing.assert_array_equal(bank.state, before)
            np.testing.assert_array_equal(bank.committed, committed)
        bank.commit(0, t, o, h, l, c, v)
        for n, r in rows.items():
            got[n][i] = bank.committed[r, 0]
    for n in NAMES:
        np.testing.assert_array_equal(got[n], plain[n], err_msg=n)


@pytest.mark.parametrize("bars", [random_walk(500, seed=31), with_gaps(seed=32, n=500)], ids=["walk", "gaps"])
def test_preview_equals_commit_of_same_bar(bars: Bars) -> None:
    bank = IndicatorBank(NAMES, 1)
    for t, o, h, l, c, v in bars.rows():
        bank.preview(0, t, o, h, l, c, v)
        bank.commit(0, t, o, h, l, c, v)
        np.testing.assert_array_equal(bank.provisional[:, 0], bank.committed[:, 0])


def test_reset_returns_to_fresh_and_slots_are_independent() -> None:
    a = random_walk(400, seed=41)
    b = with_flats(seed=42, n=400)
    fresh = stream(NAMES, a)
    bank = IndicatorBank(NAMES, 3)
    for ra, rb in zip(a.rows(), b.rows(), strict=True):
        bank.commit(0, *ra)
        bank.commit(2, *rb)
        bank.preview(1, *rb)
    other = bank.state[:, 2].copy()
    bank.reset(0)
    assert not bank.state[:, 0].any()
    assert np.isnan(bank.committed[:, 0]).all()
    np.testing.assert_array_equal(bank.state[:, 2], other)
    for i, row in enumerate(a.rows()):
        bank.commit(0, *row)
        for n in NAMES:
            np.testing.assert_array_equal(bank.committed[bank.row(n), 0], fresh[n][i], err_msg=n)
    alone_b = stream(NAMES, b)
    for n in NAMES:
        np.testing.assert_array_equal(bank.committed[bank.row(n), 2], alone_b[n][-1], err_msg=n)


@pytest.mark.parametrize("name", NAMES)
def test_sharing_a_bank_equals_running_alone(name: str) -> None:
    """An instance whose kernel wrote past its ``rows`` would corrupt its neighbour here."""
    bars = with_flats(seed=51, n=300)
    together = stream(NAMES, bars)[name]
    np.testing.assert_array_equal(together, stream([name], bars)[name])


# --- plain reference loops (textbook definitions) ----------------------------------------------


def ref_atr(h: np.ndarray, l: np.ndarray, c: np.ndarray, p: int) -> np.ndarray:
    out = np.full(len(c), np.nan)
    trs = [max(h[i] - l[i], abs(h[i] - c[i - 1]), abs(l[i] - c[i - 1])) for i in range(1, len(c))]
    for i in range(p, len(c)):
        out[i] = sum(trs[:p]) / p if i == p else (out[i - 1] * (p - 1) + trs[i - 1]) / p
    return out


def ref_ema(x: np.ndarray, p: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(p - 1, len(x)):
        out[i] = sum(x[:p]) / p if i == p - 1 else out[i - 1] + 2.0 / (p + 1) * (x[i] - out[i - 1])
    return out


def ref_supertrend(h: np.ndarray, l: np.ndarray, c: np.ndarray, p: int, k: float):
    atr = ref_atr(h, l, c, p)
    st = np.full(len(c), np.nan)
    dirn = np.full(len(c), np.nan)
    fu = fl = 0.0
    for i in range(p, len(c)):
        bu = (h[i] + l[i]) / 2 + k * atr[i]
        bl = (h[i] + l[i]) / 2 - k * atr[i]
        if i == p:
            fu, fl, d = bu, bl, 1.0
        else:
            pu, pl, d = fu, fl, dirn[i - 1]
            fu = bu if bu < pu or c[i - 1] > pu else pu
            fl = bl if bl > pl or c[i - 1] < pl else pl
            if d == 1.0 and c[i] < pl:
                d = -1.0
            elif d == -1.0 and c[i] > pu:
                d = 1.0
        dirn[i] = d
        st[i] = fl if d == 1.0 else fu
    return st, dirn


def ref_vwap(b: Bars) -> np.ndarray:
    out = np.full(len(b), np.nan)
    day = None
    pv = vol = 0.0
    for i in range(len(b)):
        d = int(b.t[i]) // DAY_NS
        if d != day:
            day, pv, vol = d, 0.0, 0.0
        pv += (b.h[i] + b.l[i] + b.c[i]) / 3 * b.v[i]
        vol += b.v[i]
        if vol > 0:
            out[i] = pv / vol
    return out


# --- Supertrend --------------------------------------------------------------------------------

# p=2, k=1, worked by hand. True ranges from bar 1: 2, 2, 1, 2.5, 2.5, 2, 2.1, 1.5; ATR (Wilder,
# seeded with the mean of the first two): -, -, 2, 1.5, 2, 2.25, 2.125, 2.1125, 1.80625.
ST_BARS = [(10, 8, 9), (11, 9, 10), (12, 10, 11), (12, 11, 11.5), (11, 9, 9.5), (9, 7, 7.2),
           (8, 6, 7.9), (10, 8, 9.9), (11, 9.5, 10.5)]
# bar 2: basic bands 11 -/+ 2 -> 9 / 13, starts up-trend: 9.
# bar 3: upper 13 held (13 is not below 13); lower rises to 10; close 11.5 >= 9: up, 10.
# bar 4: upper falls to 12; lower 8 < 10 held at 10; close 9.5 < previous lower 10: flips down, 12.
# bar 5: upper falls to 10.25; previous close 9.5 < 10 so the lower resets to 5.75; down, 10.25.
# bar 6: upper falls to 9.125; lower 4.875 held at 5.75; close 7.9 <= 10.25: down, 9.125.
# bar 7: upper 11.1125 held at 9.125; lower rises to 6.8875; close 9.9 > 9.125: flips up, 6.8875.
# bar 8: previous close 9.9 > 9.125 so the upper resets to 12.05625; lower 8.44375; up, 8.44375.
ST_EXPECTED = [math.nan, math.nan, 9.0, 10.0, 12.0, 10.25, 9.125, 6.8875, 8.44375]
ST_DIR_EXPECTED = [math.nan, math.nan, 1, 1, -1, -1, -1, 1, 1]


def test_supertrend_hand_worked() -> None:
    got = stream(["supertrend_2_1", "supertrend_dir_2_1"], _bars(ST_BARS))
    np.testing.assert_allclose(got["supertrend_2_1"], ST_EXPECTED, rtol=1e-12)
    np.testing.assert_array_equal(got["supertrend_dir_2_1"], ST_DIR_EXPECTED)


@pytest.mark.parametrize(("p", "k"), [(10, 3.0), (3, 1.5), (1, 2.0), (7, 0.0)])
@pytest.mark.parametrize("bars", [random_walk(800, seed=61, vol=0.03), with_flats(seed=62, n=800)],
                         ids=["walk", "flats"])
def test_supertrend_matches_reference(bars: Bars, p: int, k: float) -> None:
    name = f"supertrend_{p}_{k}"
    dname = f"supertrend_dir_{p}_{k}"
    got = stream([name, dname], bars)
    want, want_dir = ref_supertrend(bars.h, bars.l, bars.c, p, k)
    np.testing.assert_array_equal(got[dname], want_dir)
    np.testing.assert_allclose(got[name], want, rtol=1e-9)
    assert np.isnan(got[name][:p]).all() and not np.isnan(got[name][p:]).any()
    flips = np.count_nonzero(np.diff(want_dir[p:]))
    assert flips > 3  # the series exercises both directions


# --- session VWAP ------------------------------------------------------------------------------


def test_vwap_hand_worked() -> None:
    t = np.array([-2, -1, 0, 1, 2, 3, 60 * 24 - 1, 60 * 24], dtype=np.int64) * MINUTE_NS + MIDNIGHT
    h = np.array([11.0, 13.0, 6.0, 7.0, 9.0, 9.0, 10.0, 5.0])
    l = np.array([9.0, 11.0, 3.0, 5.0, 6.0, 8.0, 10.0, 4.0])
    c = np.array([10.0, 12.0, 3.0, 6.0, 6.0, 7.0, 10.0, 3.0])
    v = np.array([2.0, 3.0, 0.0, 4.0, 0.0, 1.0, 5.0, 2.0])
    # typical prices: 10, 12 | 4, 6, 7, 8, 10 | 4
    expected = [
        10.0,                      # first bar of 2023-11-14
        (10 * 2 + 12 * 3) / 5,     # 11.2
        math.nan,                  # 2023-11-15 starts with no volume
        6.0,
        6.0,                       # a zero-volume bar leaves it unchanged
        (6 * 4 + 8 * 1) / 5,       # 6.4
        (6 * 4 + 8 * 1 + 10 * 5) / 10,  # 23:59 is still the same session: 8.2
        4.0,                       # 2023-11-16
    ]
    bars = Bars(t, c.copy(), h, l, c, v)
    np.testing.assert_allclose(stream(["vwap"], bars)["vwap"], expected, rtol=1e-12)


def test_vwap_starts_nan_until_volume_trades() -> None:
    bars = _bars([(10, 8, 9), (11, 9, 10), (12, 9, 12)], volume=0.0)
    bars.v[2] = 5.0
    got = stream(["vwap"], bars)["vwap"]
    np.testing.assert_allclose(got, [math.nan, math.nan, 11.0], rtol=1e-12)


def test_vwap_matches_reference_across_days() -> None:
    bars = random_walk(3000, seed=71)  # 50 hours of minute bars: three sessions
    bars.v[::7] = 0.0
    second_day = np.flatnonzero(bars.t // DAY_NS == bars.t[0] // DAY_NS + 1)
    bars.v[second_day[:30]] = 0.0  # the second session opens with no volume
    np.testing.assert_allclose(stream(["vwap"], bars)["vwap"], ref_vwap(bars), rtol=1e-12)


def test_vwap_compensated_sums_do_not_drift() -> None:
    """One huge trade, then 200,000 small ones in the same session. Each small price*volume is below
    half an ulp of the running sum, so a plain sum would drop every one of them (relative error
    2e-12); the compensated sum keeps them all."""
    n = 200_001
    price = np.ones(n)
    vol = np.ones(n)
    price[0] = 1e10
    vol[0] = 1e7
    t = MIDNIGHT + np.arange(n, dtype=np.int64) * 1000  # microsecond bars, all in one day
    bars = Bars(t, price, price, price, price, vol)
    got = stream(["vwap"], bars)["vwap"][-1]
    assert got == pytest.approx((1e17 + (n - 1)) / (1e7 + (n - 1)), rel=1e-15, abs=0.0)


# --- Keltner -----------------------------------------------------------------------------------

# p=3, k=2. EMA(3) of close (k=0.5, seeded with the mean of the first three): bar 2 = 10,
# bar 3 = 10 + 0.5*(11.5-10) = 10.75, bar 4 = 10.75 + 0.5*(9.5-10.75) = 10.125.
# True ranges from bar 1: 2, 2, 1, 2.5; ATR(3): bar 3 = 5/3, bar 4 = (5/3*2 + 2.5)/3 = 35/18.
KC_BARS = [(10, 8, 9), (11, 9, 10), (12, 10, 11), (12, 11, 11.5), (11, 9, 9.5)]


def test_keltner_hand_worked() -> None:
    got = stream(["keltner_upper_3_2", "keltner_middle_3_2", "keltner_lower_3_2"], _bars(KC_BARS))
    nan = math.nan
    np.testing.assert_allclose(got["keltner_middle_3_2"], [nan, nan, nan, 10.75, 10.125], rtol=1e-12)
    np.testing.assert_allclose(got["keltner_upper_3_2"],
                               [nan, nan, nan, 10.75 + 10 / 3, 10.125 + 35 / 9], rtol=1e-12)
    np.testing.assert_allclose(got["keltner_lower_3_2"],
                               [nan, nan, nan, 10.75 - 10 / 3, 10.125 - 35 / 9], rtol=1e-12)


@pytest.mark.parametrize(("p", "k"), [(20, 2.0), (5, 0.5), (2, 1.0), (9, 0.0)])
def test_keltner_matches_reference(p: int, k: float) -> None:
    bars = with_gaps(seed=91, n=700)
    names = [f"keltner_{side}_{p}_{k}" for side in ("upper", "middle", "lower")]
    got = stream(names, bars)
    mid = ref_ema(bars.c, p)
    atr = ref_atr(bars.h, bars.l, bars.c, p)
    mid[:p] = np.nan  # NaN until both the EMA (bar p-1) and the ATR (bar p) exist
    np.testing.assert_allclose(got[names[1]], mid, rtol=1e-9)
    np.testing.assert_allclose(got[names[0]], mid + k * atr, rtol=1e-9)
    np.testing.assert_allclose(got[names[2]], mid - k * atr, rtol=1e-9)
    assert IndicatorBank(names, 1).lookback(names[0]) == p

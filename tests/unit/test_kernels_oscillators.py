"""Oscillator kernels (RSI STOCH CCI WILLR MFI ROC MOM ULTOSC AROON): streaming contract and values.

TA-Lib parity for the default parameters lives in test_parity.py; here: previews never disturb the
committed state, a preview equals the commit of the same bar, reset is a fresh start, TA-Lib parity
for other parameters (period 1, unsorted ULTOSC periods, ...) on tie-heavy data, the 0/0 guards,
long-stream drift, and a few values worked out by hand from the textbook definitions.
"""

from __future__ import annotations

import numpy as np
import pytest
import talib

from engine.indicators.bank import IndicatorBank
from tests.data import Bars, random_walk, scaled, with_flats, zero_volume
from tests.unit.oracle import assert_matches
from tests.unit.streaming import stream

NAMES = (
    "rsi_14", "stoch_k_14_3_3", "stoch_d_14_3_3", "cci_20", "willr_14", "mfi_14", "roc_10", "mom_10",
    "ultosc_7_14_28", "aroon_up_14", "aroon_down_14",
    "rsi_2", "stoch_k_1_1_1", "stoch_d_5_1_3", "cci_3", "willr_2", "mfi_2", "roc_1", "mom_1",
    "ultosc_28_7_14", "ultosc_1_1_1", "aroon_up_2", "aroon_down_2",
)


def _random_bar(rng: np.random.Generator, ref: float) -> tuple[float, float, float, float, float]:
    c = ref * np.exp(rng.normal(0.0, 0.05))
    o = ref * np.exp(rng.normal(0.0, 0.02))
    h = max(o, c) * (1.0 + abs(rng.normal(0.0, 0.02)))
    lo = min(o, c) * (1.0 - abs(rng.normal(0.0, 0.02)))
    return o, h, lo, c, float(rng.gamma(2.0, 500.0))


def _quantised(seed: int, n: int = 500, level: float = 100.0) -> Bars:
    """Prices on a tick grid: many equal highs and lows (Aroon ties), flats and zero volume."""
    rng = np.random.default_rng(seed)
    tick = level * 1e-4
    c = np.round(level * np.exp(np.cumsum(rng.normal(0.0, 0.003, n))) / tick) * tick
    o = np.concatenate([[c[0]], c[:-1]])
    h = np.maximum(o, c) + tick * rng.integers(0, 3, n)
    lo = np.minimum(o, c) - tick * rng.integers(0, 3, n)
    for start in rng.choice(n - 40, 6, replace=False):
        sl = slice(start, start + int(rng.integers(3, 35)))
        o[sl] = h[sl] = lo[sl] = c[sl] = c[start]
    v = np.round(rng.gamma(2.0, 500.0, n))
    v[rng.random(n) < 0.3] = 0.0
    return Bars(np.arange(n, dtype=np.int64), o, h, lo, c, v)


# --- provisional / commit / reset ------------------------------------------------------------------
def test_previews_leave_committed_state_untouched() -> None:
    bars = with_flats(n=400)
    plain = IndicatorBank(NAMES, 2)
    probed = IndicatorBank(NAMES, 2)
    rng = np.random.default_rng(1)
    for t, o, h, lo, c, v in bars.rows():
        for _ in range(3):
            before = probed.state.copy()
            probed.preview(0, t, *_random_bar(rng, c))
            assert np.array_equal(probed.state, before)
        plain.commit(0, t, o, h, lo, c, v)
        probed.commit(0, t, o, h, lo, c, v)
        np.testing.assert_array_equal(probed.committed, plain.committed)
    np.testing.assert_array_equal(probed.state, plain.state)


def test_preview_equals_commit_of_the_same_bar() -> None:
    bank = IndicatorBank(NAMES, 1)
    for bars in (with_flats(n=400), zero_volume(n=300), _quantised(3, 300)):
        bank.reset(0)
        for t, o, h, lo, c, v in bars.rows():
            bank.preview(0, t, o, h, lo, c, v)
            want = bank.provisional[:, 0].copy()
            bank.commit(0, t, o, h, lo, c, v)
            np.testing.assert_array_equal(bank.committed[:, 0], want)


def test_reset_is_a_fresh_start_and_spares_other_slots() -> None:
    a, b = random_walk(300, seed=5), random_walk(300, seed=6)
    bank = IndicatorBank(NAMES, 2)
    for ra, rb in zip(a.rows(), b.rows(), strict=True):
        bank.commit(0, *ra)
        bank.commit(1, *rb)
    other = bank.state[:, 1].copy()
    bank.reset(0)
    assert not bank.state[:, 0].any()
    assert np.isnan(bank.committed[:, 0]).all()
    np.testing.assert_array_equal(bank.state[:, 1], other)
    fresh = IndicatorBank(NAMES, 2)
    for row in b.rows():
        bank.commit(0, *row)
        fresh.commit(0, *row)
    np.testing.assert_array_equal(bank.committed[:, 0], fresh.committed[:, 0])
    np.testing.assert_array_equal(bank.state[:, 0], fresh.state[:, 0])


@pytest.mark.parametrize("name", ["rsi_5", "stoch_k_5_3_2", "cci_5", "willr_5", "mfi_5", "roc_5",
                                  "mom_5", "ultosc_2_3_5", "aroon_up_5"])
def test_kind_stays_inside_its_state_rows(name: str) -> None:
    """The catalogue's ``rows`` covers every row the kernel writes: a neighbour is never touched."""
    bars = with_flats(n=200)
    alone = IndicatorBank(("sma_4",), 1)
    shared = IndicatorBank((name, "sma_4"), 1)
    own = shared.state.shape[0] - alone.state.shape[0]
    for row in bars.rows():
        alone.commit(0, *row)
        shared.commit(0, *row)
        shared.preview(0, *row)
    np.testing.assert_array_equal(shared.state[own:], alone.state)


# --- TA-Lib parity beyond the default parameters ----------------------------------------------------
def _oracle(name: str, b: Bars) -> np.ndarray:
    base, *raw = name.rsplit("_", 3) if name.startswith(("stoch", "ultosc")) else name.rsplit("_", 1)
    p = [int(x) for x in raw]
    if base in ("stoch_k", "stoch_d"):
        k, d = talib.STOCH(b.h, b.l, b.c, p[0], p[1], 0, p[2], 0)
        return k if base == "stoch_k" else d
    if base == "ultosc":
        return talib.ULTOSC(b.h, b.l, b.c, *p)
    if base in ("aroon_up", "aroon_down"):
        down, up = talib.AROON(b.h, b.l, p[0])
        return up if base == "aroon_up" else down
    if base in ("rsi", "roc", "mom"):
        return getattr(talib, base.upper())(b.c, p[0])
    if base == "mfi":
        return talib.MFI(b.h, b.l, b.c, b.v, p[0])
    return getattr(talib, base.upper())(b.h, b.l, b.c, p[0])


SHAPES = {
    "quantised": _quantised(11),
    "quantised_tiny": _quantised(12, level=3e-6),
    "quantised_huge": _quantised(13, level=2e7),
    "flats": with_flats(seed=9, n=600),
    "zero_volume": zero_volume(seed=10, n=400),
    "micro": scaled(1e-18, n=400),  # far below any fixed epsilon band
}


@pytest.fixture(scope="module")
def streamed_shapes() -> dict[str, dict[str, np.ndarray]]:
    return {key: stream(NAMES, bars) for key, bars in SHAPES.items()}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_equals_talib_for_other_parameters(streamed_shapes: dict, shape: str, name: str) -> None:
    bars = SHAPES[shape]
    scale = float(np.median(np.abs(bars.c))) if name.startswith("mom") else 1e-3
    assert_matches(name, streamed_shapes[shape][name], _oracle(name, bars), scale)


def test_long_stream_does_not_drift() -> None:
    """Window sums slide 200,000 times; compensated sums keep the end equal to a fresh TA-Lib run."""
    n = 200_000
    b = random_walk(n, seed=21)
    names = ("mfi_14", "ultosc_7_14_28", "stoch_d_14_3_3", "cci_20", "rsi_14")
    bank = IndicatorBank(names, 1)
    bank.commit_many(np.zeros(n, dtype=np.int64), b.t, b.o, b.h, b.l, b.c, b.v)
    for name in names:
        want = _oracle(name, b)[-1]
        assert abs(bank.committed[bank.row(name), 0] - want) <= 1e-8 * max(abs(want), 1e-3), name


# --- guards and hand-worked values ------------------------------------------------------------------
def _series(names: tuple[str, ...], h, lo, c, v=None) -> dict[str, np.ndarray]:
    h, lo, c = (np.asarray(x, dtype=float) for x in (h, lo, c))
    v = np.ones_like(c) if v is None else np.asarray(v, dtype=float)
    bars = Bars(np.arange(len(c), dtype=np.int64), c.copy(), h, lo, c, v)
    return stream(names, bars)


def test_flat_market_reads_zero_not_nan() -> None:
    n = 40
    flat = np.full(n, 50.0)
    got = _series(("rsi_14", "stoch_k_14_3_3", "stoch_d_14_3_3", "cci_20", "willr_14", "mfi_14",
                   "ultosc_7_14_28", "roc_10", "mom_10"), flat, flat, flat)
    for name, series in got.items():
        assert (series[-5:] == 0.0).all(), name


def test_roc_of_a_zero_close_is_zero() -> None:
    c = [0.0, 1.0, 2.0, 3.0]
    got = _series(("roc_1",), c, c, c)["roc_1"]
    np.testing.assert_array_equal(got, [np.nan, 0.0, 100.0, 50.0])


def test_hand_worked_rsi_roc_mom() -> None:
    c = np.array([10.0, 11.0, 10.5, 12.0, 11.0, 11.5, 11.5, 13.0])
    got = _series(("rsi_3", "roc_2", "mom_2"), c, c, c)
    d = np.diff(c)
    up, down = np.clip(d, 0, None), np.clip(-d, 0, None)
    avg_up, avg_down = up[:3].mean(), down[:3].mean()
    want = [np.nan] * 3 + [100 * avg_up / (avg_up + avg_down)]
    for i in range(3, len(d)):  # Wilder: (previous average * (n - 1) + x) / n
        avg_up = (avg_up * 2 + up[i]) / 3
        avg_down = (avg_down * 2 + down[i]) / 3
        want.append(100 * avg_up / (avg_up + avg_down))
    np.testing.assert_allclose(got["rsi_3"], want, rtol=1e-12)
    np.testing.assert_allclose(got["roc_2"][2:], (c[2:] / c[:-2] - 1) * 100, rtol=1e-12)
    np.testing.assert_allclose(got["mom_2"][2:], c[2:] - c[:-2], rtol=1e-12)
    assert np.isnan(got["roc_2"][:2]).all() and np.isnan(got["mom_2"][:2]).all()


def test_hand_worked_stochastic_williams_cci() -> None:
    h = np.array([10.0, 12.0, 11.0, 13.0, 12.5, 12.0])
    lo = np.array([9.0, 10.0, 9.5, 11.0, 11.5, 10.0])
    c = np.array([9.5, 11.5, 10.0, 12.5, 12.0, 11.0])
    got = _series(("stoch_k_3_2_2", "stoch_d_3_2_2", "willr_3", "cci_3"), h, lo, c)
    hh = np.array([h[i - 2:i + 1].max() for i in range(2, 6)])
    ll = np.array([lo[i - 2:i + 1].min() for i in range(2, 6)])
    fast = 100 * (c[2:] - ll) / (hh - ll)
    slow_k = (fast[1:] + fast[:-1]) / 2
    slow_d = (slow_k[1:] + slow_k[:-1]) / 2
    np.testing.assert_allclose(got["stoch_k_3_2_2"][4:], slow_k[1:], rtol=1e-12)
    np.testing.assert_allclose(got["stoch_d_3_2_2"][4:], slow_d, rtol=1e-12)
    assert np.isnan(got["stoch_k_3_2_2"][:4]).all()
    np.testing.assert_allclose(got["willr_3"][2:], -100 * (hh - c[2:]) / (hh - ll), rtol=1e-12)
    tp = (h + lo + c) / 3
    want = []
    for i in range(2, 6):
        w = tp[i - 2:i + 1]
        want.append((tp[i] - w.mean()) / (0.015 * np.abs(w - w.mean()).mean()))
    np.testing.assert_allclose(got["cci_3"][2:], want, rtol=1e-12)


def test_hand_worked_mfi_and_ultosc() -> None:
    h = np.array([10.0, 11.0, 10.8, 11.5, 11.2])
    lo = np.array([9.0, 10.0, 9.8, 10.5, 10.4])
    c = np.array([9.5, 10.8, 10.0, 11.2, 10.6])
    v = np.array([100.0, 200.0, 150.0, 300.0, 250.0])
    got = _series(("mfi_3", "ultosc_1_2_3"), h, lo, c, v)
    tp = (h + lo + c) / 3
    flow = tp * v
    up = np.where(np.diff(tp) > 0, flow[1:], 0.0)
    down = np.where(np.diff(tp) < 0, flow[1:], 0.0)
    pos = np.array([up[i - 2:i + 1].sum() for i in range(2, 4)])
    neg = np.array([down[i - 2:i + 1].sum() for i in range(2, 4)])
    np.testing.assert_allclose(got["mfi_3"][3:], 100 * pos / (pos + neg), rtol=1e-12)
    bp = c[1:] - np.minimum(lo[1:], c[:-1])  # buying pressure
    tr = np.maximum(h[1:], c[:-1]) - np.minimum(lo[1:], c[:-1])
    want = []
    for i in range(2, 4):
        avg = [bp[i - k + 1:i + 1].sum() / tr[i - k + 1:i + 1].sum() for k in (1, 2, 3)]
        want.append(100 * (4 * avg[0] + 2 * avg[1] + avg[2]) / 7)
    np.testing.assert_allclose(got["ultosc_1_2_3"][3:], want, rtol=1e-12)
    assert np.isnan(got["ultosc_1_2_3"][:3]).all()


def test_aroon_ties_go_to_the_most_recent_bar() -> None:
    # highs: the 12 at bar 1 is equalled at bar 3; lows: the 8 at bar 0 is equalled at bar 2
    h = [11.0, 12.0, 11.0, 12.0, 11.5, 11.0, 11.0]
    lo = [8.0, 9.0, 8.0, 9.0, 9.5, 9.0, 9.0]
    got = _series(("aroon_up_3", "aroon_down_3"), h, lo, h)
    # window of 4 bars ending at i; 100/3 * (3 - bars since the newest extreme)
    up = [np.nan] * 3 + [100.0, 200 / 3, 100 / 3, 0.0]
    down = [np.nan] * 3 + [200 / 3, 100 / 3, 0.0, 100.0]
    np.testing.assert_allclose(got["aroon_up_3"], up, rtol=1e-12)
    np.testing.assert_allclose(got["aroon_down_3"], down, rtol=1e-12)

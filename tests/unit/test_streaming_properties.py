"""Properties of the whole catalogue: batches equal bar-by-bar streaming for any split, provisional
values never disturb committed state, reset is a fresh start, and sums do not drift."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.indicators.bank import IndicatorBank
from engine.indicators.catalogue import DEFAULT_OUTPUTS
from tests.data import random_walk, with_flats

ALL = list(DEFAULT_OUTPUTS)  # the whole catalogue at default parameters
BARS = with_flats(seed=11, n=400)


def _bar_by_bar(slot: int = 0) -> np.ndarray:
    bank = IndicatorBank(ALL, 2)
    hist = np.empty((len(BARS), bank.committed.shape[0]))
    for i, row in enumerate(BARS.rows()):
        bank.commit(slot, *row)
        hist[i] = bank.committed[:, slot]
    return hist


REFERENCE = _bar_by_bar()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=12))
def test_any_split_into_batches_equals_streaming(sizes: list[int]) -> None:
    bank = IndicatorBank(ALL, 2)
    i = 0
    k = 0
    n = len(BARS)
    while i < n:
        j = min(n, i + sizes[k % len(sizes)])
        k += 1
        sl = slice(i, j)
        slots = np.ones(j - i, dtype=np.int64)
        bank.commit_many(slots, BARS.t[sl], BARS.o[sl], BARS.h[sl], BARS.l[sl], BARS.c[sl], BARS.v[sl])
        np.testing.assert_array_equal(bank.committed[:, 1], REFERENCE[j - 1])
        i = j


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.floats(min_value=0.3, max_value=3.0))
def test_provisional_never_changes_committed_state(seed: int, spread: float) -> None:
    rng = np.random.default_rng(seed)
    bank = IndicatorBank(ALL, 2)
    for i, (t, o, h, l, c, v) in enumerate(BARS.rows()):
        if rng.random() < 0.5:
            state = bank.state.copy()
            committed = bank.committed.copy()
            px = c * float(np.exp(rng.normal(0.0, 0.02 * spread)))
            bank.preview(0, t, o, max(h, px), min(l, px), px, v * float(rng.random()))
            np.testing.assert_array_equal(bank.state, state)
            np.testing.assert_array_equal(bank.committed, committed)
        bank.commit(0, t, o, h, l, c, v)
        np.testing.assert_array_equal(bank.committed[:, 0], REFERENCE[i])


def test_preview_equals_the_commit_of_the_same_bar() -> None:
    bank = IndicatorBank(ALL, 1)
    for t, o, h, l, c, v in BARS.rows():
        bank.preview(0, t, o, h, l, c, v)
        preview = bank.provisional[:, 0].copy()
        bank.commit(0, t, o, h, l, c, v)
        np.testing.assert_array_equal(preview, bank.committed[:, 0])


def test_symbols_do_not_interfere_and_reset_is_fresh() -> None:
    bank = IndicatorBank(ALL, 3)
    other = random_walk(n=len(BARS), seed=99)
    for a, b in zip(BARS.rows(), other.rows(), strict=True):
        bank.commit(0, *a)
        bank.commit(2, *b)
    np.testing.assert_array_equal(bank.committed[:, 0], REFERENCE[-1])
    bank.reset(0)
    assert np.all(bank.state[:, 0] == 0.0) and np.all(np.isnan(bank.committed[:, 0]))
    for row in BARS.rows():
        bank.commit(0, *row)
    np.testing.assert_array_equal(bank.committed[:, 0], REFERENCE[-1])


def test_warm_up_flag_matches_nan() -> None:
    bank = IndicatorBank(ALL, 1)
    for i, row in enumerate(BARS.rows()):
        bank.commit(0, *row)
        for name in ("sma_20", "rsi_14", "macd_hist_12_26_9", "adx_14", "plus_di_14", "ultosc_7_14_28"):
            assert bank.is_warm(name, 0) == (i >= bank.lookback(name)), (name, i)
            if i >= bank.lookback(name) + 1:
                assert not math.isnan(bank.committed[bank.row(name), 0]), (name, i)


def test_running_sums_do_not_drift_over_a_million_bars() -> None:
    """A level shift from 10,000 to 1 after a million bars exposes any drift in running sums: a plain
    float sum carries ~1e-8 of error into the small regime; compensated sums stay exact to ~1e-15."""
    n = 1_000_000
    rng = np.random.default_rng(5)
    c = 10_000.0 + np.cumsum(rng.normal(0.0, 1.0, n))
    c[-500:] = 1.0 + np.cumsum(rng.normal(0.0, 0.001, 500))
    h = c + 0.01
    l = c - 0.01
    t = np.arange(n, dtype=np.int64) * 60_000_000_000
    v = np.full(n, 5.0)
    names = ["sma_20", "bb_upper_20_2", "bb_lower_20_2", "zscore_20", "wma_20"]
    bank = IndicatorBank(names, 1)
    bank.commit_many(np.zeros(n, dtype=np.int64), t, c, h, l, c, v)
    w = c[-20:]
    mean = math.fsum(w) / 20
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in w) / 20)
    wma = math.fsum(w[i] * (i + 1) for i in range(20)) / 210
    want = {"sma_20": mean, "bb_upper_20_2": mean + 2 * std, "bb_lower_20_2": mean - 2 * std,
            "zscore_20": (c[-1] - mean) / std, "wma_20": wma}
    for name, expected in want.items():
        got = bank.committed[bank.row(name), 0]
        tol = 1e-9 if name == "zscore_20" else 1e-12
        assert abs(got - expected) <= tol * abs(expected), (name, got, expected)

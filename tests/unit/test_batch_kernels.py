"""A kind's batch function (``Kind.batch``) commits a batch of bars exactly as its step function does bar by
bar: the same state, bit for bit, the same outputs after every bar (``record``), and no write outside the
kind's declared rows. The batches interleave symbols unevenly and carry NaN closes, flat stretches, tiny
and huge prices, so the batch function's own steady-state text and its fall-back to the step both run."""

from __future__ import annotations

import numpy as np
import pytest

from engine.indicators import dispatch
from engine.indicators.bank import IndicatorBank
from engine.indicators.catalogue import KINDS, Kind
from tests.data import Bars, scenarios

BATCHED = [k for k in KINDS if k.batch]
PARAMS = {  # the defaults and a short, unusual set per kind
    "macd": [(12, 26, 9), (3, 7, 2), (2, 3, 1)],
    "bb_upper": [(20, 2.0), (5, 1.5), (2, 0.5)],
}
SLOTS, GUARD, SENTINEL = 3, 6, 9876.5


def _cases() -> list[tuple[Kind, tuple[int | float, ...], str]]:
    return [(k, p, name) for k in BATCHED for p in PARAMS[k.key] for name in scenarios()]


def _with_nans(bars: Bars) -> Bars:
    c = bars.c.copy()
    c[137::211] = np.nan
    return Bars(bars.t, bars.o, bars.h, bars.l, c, bars.v)


def _state(kind: Kind, params: tuple[int | float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rows = kind.rows(*params)
    st = np.zeros((rows + GUARD, SLOTS))
    st[rows:] = SENTINEL
    ip = np.zeros(dispatch.PLAN_INT_WIDTH - dispatch.COL_PARAMS, dtype=np.int64)
    fp = np.zeros(dispatch.PLAN_FLOAT_WIDTH)
    ints = [v for v in params if isinstance(v, int)]
    floats = [v for v in params if isinstance(v, float)]
    ip[: len(ints)] = ints
    fp[: len(floats)] = floats
    return st, ip, fp, rows


def test_every_kind_with_a_batch_function_is_covered_here() -> None:
    assert BATCHED, "no kind declares a batch function"
    assert {k.key for k in BATCHED} == set(PARAMS)


@pytest.mark.parametrize(("kind", "params", "scenario"), _cases(),
                         ids=[f"{k.key}-{'_'.join(map(str, p))}-{n}" for k, p, n in _cases()])
def test_batch_function_equals_the_step_bar_by_bar(kind: Kind, params: tuple[int | float, ...],
                                                   scenario: str) -> None:
    bars = _with_nans(scenarios()[scenario])
    n = len(bars)
    rng = np.random.default_rng(len(scenario))
    slots = rng.integers(0, SLOTS, n).astype(np.int64)
    outs = len(kind.outputs)
    step, batch = kind.step_function(), kind.batch_function()

    ref, ip, fp, rows = _state(kind, params)
    ref_out = np.full((outs, SLOTS), np.nan)
    want = np.empty((n, outs))
    for i in range(n):
        step(ref, slots[i], 0, ip, fp, bars.o[i], bars.h[i], bars.l[i], bars.c[i], bars.v[i], bars.t[i],
             True, ref_out, 0)
        want[i] = ref_out[:, slots[i]]

    st, _, _, _ = _state(kind, params)
    out = np.full((outs, SLOTS), np.nan)
    rec = np.full((n, outs + 2), -1.0)  # two columns before the kind's: rf places it
    lo = 0
    while lo < n:
        hi = min(n, lo + int(rng.integers(1, 400)))
        cols = (a[lo:hi] for a in (bars.o, bars.h, bars.l, bars.c, bars.v, bars.t))
        batch(st, 0, ip, fp, slots[lo:hi], hi - lo, *cols, out, 0, True, rec[lo:hi], 2)
        lo = hi

    assert np.isfinite(want[-SLOTS * 3:]).any(), "never warm: the steady-state text was not exercised"
    np.testing.assert_array_equal(st, ref, err_msg="state after the batches")
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(rec[:, 2:], want, err_msg="outputs recorded after each bar")
    assert (rec[:, :2] == -1.0).all(), "wrote outside its record columns"
    assert (st[rows:] == SENTINEL).all(), f"{kind.key} writes beyond its {rows} declared rows"


@pytest.mark.parametrize("kind", BATCHED, ids=[k.key for k in BATCHED])
def test_the_specialised_kernel_commits_batches_through_the_batch_function(kind: Kind) -> None:
    bank = IndicatorBank([kind.outputs[0]], 2, specialise=False)
    assert f"{kind.batch}(buf, " in bank.kernel_source
    plain = IndicatorBank(["ema_20"], 2, specialise=False)
    assert "ema_step(buf, s, " in plain.kernel_source

"""The interpreter that runs a plan of indicator instances over bars, in one compiled call.

A plan is a table (one row per instance: kind code, state row, output row, integer parameters) plus
a float parameter table. Interpreting it inside numba means any set of indicators, for any number of
symbols, updates in a single call per batch: no Python per bar or per indicator, and one compiled
artefact for every catalogue, so adding a rule never triggers a recompile.

Batches run instance-major: for each instance, one tight loop over the batch's bars. State is
struct-of-arrays (a row per field, a column per symbol), so that loop walks each state row across
symbols, the kind's branch is taken once per batch instead of once per bar, and its parameters are
read once. Instances are independent, so this order gives exactly the bar-major result.
"""

from __future__ import annotations

from engine.indicators.kernels.averages import (
    dema_step,
    ema_step,
    kama_step,
    macd_step,
    sma_step,
    tema_step,
    trix_step,
    wma_step,
)
from engine.indicators.kernels.bands import (
    bb_step,
    donchian_step,
    volume_zscore_step,
    zscore_step,
)
from engine.indicators.kernels.oscillators import (
    aroon_step,
    cci_step,
    mfi_step,
    mom_step,
    roc_step,
    rsi_step,
    stoch_step,
    ultosc_step,
    willr_step,
)
from engine.indicators.kernels.trend import (
    atr_step,
    dmi_step,
    keltner_step,
    natr_step,
    obv_step,
    sar_step,
    supertrend_step,
    vwap_step,
)
from engine.jit import njit

# plan_i columns
COL_CODE, COL_STATE, COL_OUT, COL_PARAMS = 0, 1, 2, 3
PLAN_INT_WIDTH = 8
PLAN_FLOAT_WIDTH = 4


@njit
def apply_bar(plan_i, plan_f, st, s, o, h, l, c, v, t, commit, out):
    """Run every instance of the plan on one bar of symbol column ``s`` (the single-bar path)."""
    for k in range(plan_i.shape[0]):
        code = plan_i[k, COL_CODE]
        b = plan_i[k, COL_STATE]
        ob = plan_i[k, COL_OUT]
        ip = plan_i[k, COL_PARAMS:]
        fp = plan_f[k]
        if code == 1:
            sma_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 2:
            ema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 3:
            wma_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 4:
            dema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 5:
            tema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 6:
            kama_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 7:
            trix_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 8:
            macd_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 9:
            bb_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 10:
            zscore_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 11:
            volume_zscore_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 12:
            donchian_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 13:
            keltner_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 20:
            rsi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 21:
            stoch_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 22:
            cci_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 23:
            willr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 24:
            mfi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 25:
            roc_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 26:
            mom_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 27:
            ultosc_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 28:
            aroon_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 40:
            atr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 41:
            natr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 42:
            dmi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 43:
            sar_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 44:
            supertrend_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 45:
            obv_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)
        elif code == 46:
            vwap_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob)


@njit
def _record(out, rec, i, s, lo, hi):
    for r in range(lo, hi):
        rec[i, r] = out[r, s]


@njit
def apply_bars(plan_i, plan_f, st, slots, t, o, h, l, c, v, commit, out, n_out, record, rec):
    """Run every instance over a batch of bars, instance-major (see the module docstring).

    With ``record``, ``rec[i]`` receives a copy of every output right after bar ``i`` (the values a
    signal rule sees at that close, even when one symbol closes several bars in a batch)."""
    n = slots.shape[0]
    for k in range(plan_i.shape[0]):
        code = plan_i[k, COL_CODE]
        b = plan_i[k, COL_STATE]
        ob = plan_i[k, COL_OUT]
        ip = plan_i[k, COL_PARAMS:]
        fp = plan_f[k]
        end = plan_i[k + 1, COL_OUT] if k + 1 < plan_i.shape[0] else n_out
        if code == 1:
            for i in range(n):
                s = slots[i]
                sma_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 2:
            for i in range(n):
                s = slots[i]
                ema_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 3:
            for i in range(n):
                s = slots[i]
                wma_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 4:
            for i in range(n):
                s = slots[i]
                dema_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 5:
            for i in range(n):
                s = slots[i]
                tema_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 6:
            for i in range(n):
                s = slots[i]
                kama_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 7:
            for i in range(n):
                s = slots[i]
                trix_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 8:
            for i in range(n):
                s = slots[i]
                macd_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 9:
            for i in range(n):
                s = slots[i]
                bb_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 10:
            for i in range(n):
                s = slots[i]
                zscore_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 11:
            for i in range(n):
                s = slots[i]
                volume_zscore_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 12:
            for i in range(n):
                s = slots[i]
                donchian_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 13:
            for i in range(n):
                s = slots[i]
                keltner_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 20:
            for i in range(n):
                s = slots[i]
                rsi_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 21:
            for i in range(n):
                s = slots[i]
                stoch_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 22:
            for i in range(n):
                s = slots[i]
                cci_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 23:
            for i in range(n):
                s = slots[i]
                willr_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 24:
            for i in range(n):
                s = slots[i]
                mfi_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 25:
            for i in range(n):
                s = slots[i]
                roc_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 26:
            for i in range(n):
                s = slots[i]
                mom_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 27:
            for i in range(n):
                s = slots[i]
                ultosc_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 28:
            for i in range(n):
                s = slots[i]
                aroon_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 40:
            for i in range(n):
                s = slots[i]
                atr_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 41:
            for i in range(n):
                s = slots[i]
                natr_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 42:
            for i in range(n):
                s = slots[i]
                dmi_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 43:
            for i in range(n):
                s = slots[i]
                sar_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 44:
            for i in range(n):
                s = slots[i]
                supertrend_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 45:
            for i in range(n):
                s = slots[i]
                obv_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)
        elif code == 46:
            for i in range(n):
                s = slots[i]
                vwap_step(st, s, b, ip, fp, o[i], h[i], l[i], c[i], v[i], t[i], commit, out, ob)
                if record:
                    _record(out, rec, i, s, ob, end)


@njit
def commit_bars(plan_i, plan_f, st, out, counts, slots, t, o, h, l, c, v):
    """Commit a batch of closed bars, in order; bars of many symbols may interleave."""
    apply_bars(plan_i, plan_f, st, slots, t, o, h, l, c, v, True, out, out.shape[0], False, out[:0])
    for i in range(slots.shape[0]):
        counts[slots[i]] += 1


@njit
def commit_one(plan_i, plan_f, st, out, counts, s, t, o, h, l, c, v):
    apply_bar(plan_i, plan_f, st, s, o, h, l, c, v, t, True, out)
    counts[s] += 1


@njit
def preview_one(plan_i, plan_f, st, prov, s, t, o, h, l, c, v):
    apply_bar(plan_i, plan_f, st, s, o, h, l, c, v, t, False, prov)

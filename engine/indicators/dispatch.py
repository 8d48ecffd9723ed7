"""The interpreter that runs a plan of indicator instances over bars, in one compiled call.

A plan is a table (one row per instance: kind code, state row, output row, integer parameters) plus
a float parameter table. Interpreting it inside numba means any set of indicators, for any number of
symbols, updates in a single call per batch: no Python per bar or per indicator, and one compiled
artefact for every catalogue, so adding a rule never triggers a recompile.
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
    """Run every instance of the plan on one bar of symbol column ``s``."""
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
def commit_bars(plan_i, plan_f, st, out, counts, slots, t, o, h, l, c, v):
    """Commit a batch of closed bars, in order; bars of many symbols may interleave."""
    for i in range(slots.shape[0]):
        s = slots[i]
        apply_bar(plan_i, plan_f, st, s, o[i], h[i], l[i], c[i], v[i], t[i], True, out)
        counts[s] += 1


@njit
def commit_one(plan_i, plan_f, st, out, counts, s, t, o, h, l, c, v):
    apply_bar(plan_i, plan_f, st, s, o, h, l, c, v, t, True, out)
    counts[s] += 1


@njit
def preview_one(plan_i, plan_f, st, prov, s, t, o, h, l, c, v):
    apply_bar(plan_i, plan_f, st, s, o, h, l, c, v, t, False, prov)

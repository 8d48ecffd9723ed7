"""Moving averages and the indicators built from them: SMA EMA WMA DEMA TEMA KAMA TRIX MACD.

The EMA-based kinds chain ``ema_update`` stages. Each stage skips NaN inputs, so a later stage only
starts seeding once the stage before it is warm: that is exactly TA-Lib's scheme of seeding every
stage with the SMA of the previous stage's first ``p`` outputs, and it makes the warm-up lengths
come out equal to TA-Lib's lookbacks without any bar counting.
"""

from __future__ import annotations

import math

from engine.indicators.kernels.common import (
    NAN,
    ema_update,
    neumaier,
    record_outputs,
    ring_count,
    ring_get,
    ring_oldest,
    ring_push,
    sma_update,
)
from engine.indicators.layout import EMA_ROWS, KAMA_FIELDS, MACD_FIELDS, WMA_FIELDS
from engine.jit import njit_no_refcounts as njit  # they allocate nothing

INF = math.inf


@njit
def sma_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = sma_update(st, b, s, c, ip[0], commit)


@njit
def ema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    p = ip[0]
    out[ob, s] = ema_update(st, b, s, c, p, 2.0 / (p + 1), commit)


# --- WMA ---------------------------------------------------------------------------------------
# rows: b+0 weighted sum, b+1 its compensation, b+2 plain sum, b+3 its compensation, b+4.. ring of
# the last p inputs. Sliding the window lowers every weight by one, which is subtracting the plain
# sum; the new input enters with weight p. Both sums are compensated so they cannot drift.
_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's splitter for doubles


@njit
def _add_product(total, comp, w, x):
    """Add ``w * x`` to a compensated sum exactly: the product's own rounding error is added too.

    Otherwise every bar would leave ~1 ulp of ``p * x`` in the weighted sum, which a million bars
    turn into a visible drift. Dekker's two-product, since numba has no portable fma.
    """
    prod = w * x
    t = _SPLIT * w
    wh = t - (t - w)
    wl = w - wh
    t = _SPLIT * x
    xh = t - (t - x)
    xl = x - xh
    err = ((wh * xh - prod) + wh * xl + wl * xh) + wl * xl
    total, comp = neumaier(total, comp, prod)
    return neumaier(total, comp, err)


@njit
def wma_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    p = ip[0]
    r = b + WMA_FIELDS
    n = ring_count(st, r, s)
    ws, wc = st[b, s], st[b + 1, s]
    ps, pc = st[b + 2, s], st[b + 3, s]
    if n < p:
        ws, wc = _add_product(ws, wc, n + 1.0, c)
    else:
        ws, wc = neumaier(ws, wc, -ps)
        ws, wc = neumaier(ws, wc, -pc)
        ws, wc = _add_product(ws, wc, float(p), c)
        ps, pc = neumaier(ps, pc, -ring_oldest(st, r, s, p))
    ps, pc = neumaier(ps, pc, c)
    if commit:
        st[b, s] = ws
        st[b + 1, s] = wc
        st[b + 2, s] = ps
        st[b + 3, s] = pc
        ring_push(st, r, s, p, c)
    if n + 1 < p:
        out[ob, s] = NAN
    else:
        out[ob, s] = (ws + wc) / (p * (p + 1) / 2.0)


# --- DEMA / TEMA / TRIX: chains of EMA stages, EMA_ROWS rows each --------------------------------
@njit
def dema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    p = ip[0]
    k = 2.0 / (p + 1)
    e1 = ema_update(st, b, s, c, p, k, commit)
    e2 = ema_update(st, b + EMA_ROWS, s, e1, p, k, commit)
    out[ob, s] = 2.0 * e1 - e2  # NaN while e2 warms up


@njit
def tema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    p = ip[0]
    k = 2.0 / (p + 1)
    e1 = ema_update(st, b, s, c, p, k, commit)
    e2 = ema_update(st, b + EMA_ROWS, s, e1, p, k, commit)
    e3 = ema_update(st, b + 2 * EMA_ROWS, s, e2, p, k, commit)
    out[ob, s] = 3.0 * e1 - 3.0 * e2 + e3


@njit
def trix_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """1-bar percent change of the triple EMA; TA-Lib answers 0.0 when the previous value is 0.

    The previous triple-EMA value is the third stage's own value row, valid once that stage has
    seen ``p`` inputs, so no extra state is needed.
    """
    p = ip[0]
    k = 2.0 / (p + 1)
    b3 = b + 2 * EMA_ROWS
    had_prev = st[b3, s] >= p
    prev = st[b3 + 3, s]
    e1 = ema_update(st, b, s, c, p, k, commit)
    e2 = ema_update(st, b + EMA_ROWS, s, e1, p, k, commit)
    e3 = ema_update(st, b3, s, e2, p, k, commit)
    if not had_prev or math.isnan(e3):
        out[ob, s] = NAN
    elif prev != 0.0:
        out[ob, s] = (e3 / prev - 1.0) * 100.0
    else:
        out[ob, s] = 0.0


# --- KAMA --------------------------------------------------------------------------------------
# rows: b+0 sum of |1-bar changes| over the window, b+1 its compensation, b+2 previous KAMA,
# b+3 consecutive exactly-zero changes (capped at p), b+4.. ring of the last p+1 inputs.
KAMA_FAST = 2.0 / (2.0 + 1.0)
KAMA_SLOW = 2.0 / (30.0 + 1.0)


@njit
def kama_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Kaufman's AMA (fast 2, slow 30) with TA-Lib's seeding: the first value, at bar p, starts
    from the previous close as the prior KAMA.

    The efficiency ratio is 1 when the change sum is zero or does not exceed the signed p-bar
    change (TA-Lib's clamp). A window of only zero changes forces the sum to exactly zero (a run
    counter), as the installed TA-Lib does, instead of letting a rolling sum's rounding residue
    decide between the fastest and the slowest smoothing.
    """
    p = ip[0]
    r = b + KAMA_FIELDS
    cap = p + 1
    n = ring_count(st, r, s)
    total, comp = st[b, s], st[b + 1, s]
    zrun = st[b + 3, s]
    prev_c = 0.0
    if n > 0:
        prev_c = ring_get(st, r, s, cap, 0)
        total, comp = neumaier(total, comp, abs(c - prev_c))
        zrun = min(zrun + 1.0, float(p)) if c == prev_c else 0.0
    if n == cap:
        # the change leaving the window: between the two oldest inputs
        total, comp = neumaier(total, comp, -abs(ring_get(st, r, s, cap, p - 1) - ring_oldest(st, r, s, cap)))
    value = NAN
    if n >= p:
        change_sum = 0.0 if zrun >= p else total + comp
        period_roc = c - ring_get(st, r, s, cap, p - 1)
        clamp = change_sum <= period_roc or change_sum == 0.0
        er = 1.0 if clamp else abs(period_roc / change_sum)
        sc = er * (KAMA_FAST - KAMA_SLOW) + KAMA_SLOW
        sc *= sc
        prev = prev_c if n == p else st[b + 2, s]
        value = (c - prev) * sc + prev
    if commit:
        st[b, s] = total
        st[b + 1, s] = comp
        st[b + 2, s] = value
        st[b + 3, s] = zrun
        ring_push(st, r, s, cap, c)
    out[ob, s] = value


# --- MACD --------------------------------------------------------------------------------------
# rows: b+0 bars seen (capped at slow), then the fast, slow and signal EMA stages.


@njit
def macd_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib's MACD: the fast EMA is seeded over the last ``fast`` bars of the slow EMA's seed
    window, so both first produce at bar slow-1; the signal EMA is seeded with the SMA of the first
    ``signal`` MACD values, and all three outputs start with the signal.
    """
    fast, slow, signal = ip[0], ip[1], ip[2]
    n = st[b, s]
    bf = b + MACD_FIELDS
    bs = bf + EMA_ROWS
    bg = bs + EMA_ROWS
    slow_v = ema_update(st, bs, s, c, slow, 2.0 / (slow + 1), commit)
    fast_v = NAN
    if n >= slow - fast:
        fast_v = ema_update(st, bf, s, c, fast, 2.0 / (fast + 1), commit)
    macd = fast_v - slow_v
    sig = ema_update(st, bg, s, macd, signal, 2.0 / (signal + 1), commit)
    if commit and n < slow:
        st[b, s] = n + 1.0
    if math.isnan(sig):
        out[ob, s] = NAN
        out[ob + 1, s] = NAN
        out[ob + 2, s] = NAN
    else:
        out[ob, s] = macd
        out[ob + 1, s] = sig
        out[ob + 2, s] = macd - sig


@njit
def macd_batch(st, b, ip, fp, slots, n, o, h, l, c, v, t, out, ob, record, rec, rf):
    """``macd_step`` committing bars ``0..n-1`` of the arrays, bit-identical to it bar by bar (the specialised
    kernel's committed batches; ``record`` copies the three outputs to ``rec[i, rf:rf + 3]``).

    Why a second text: three ``ema_update`` stages make ``macd_step`` too large for LLVM to inline, so a
    call per bar passes every argument through the stack. Here the common case is in the loop itself:
    every stage warm (the signal stage counts only MACD values, which need the other two) and a finite
    close, where each stage is ``ema_update``'s steady branch; any other bar goes through ``macd_step``.
    """
    fast, slow, signal = ip[0], ip[1], ip[2]
    bf = b + MACD_FIELDS
    bs = bf + EMA_ROWS
    bg = bs + EMA_ROWS
    kf = 2.0 / (fast + 1)
    ks = 2.0 / (slow + 1)
    kg = 2.0 / (signal + 1)
    for i in range(n):
        s = slots[i]
        x = c[i]
        if st[bg, s] < signal or not abs(x) < INF:
            macd_step(st, s, b, ip, fp, o[i], h[i], l[i], x, v[i], t[i], True, out, ob)
        else:
            prev = st[bs + 3, s]
            slow_v = (x - prev) * ks + prev
            st[bs + 3, s] = slow_v
            prev = st[bf + 3, s]
            fast_v = (x - prev) * kf + prev
            st[bf + 3, s] = fast_v
            macd = fast_v - slow_v
            prev = st[bg + 3, s]
            sig = (macd - prev) * kg + prev
            st[bg + 3, s] = sig
            out[ob, s] = macd
            out[ob + 1, s] = sig
            out[ob + 2, s] = macd - sig
        if record:
            record_outputs(rec, i, rf, out, ob, s, 3)

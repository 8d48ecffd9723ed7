"""Price bands and normalisations: Bollinger, standard deviation, z-score (of close and of volume), Donchian.

Bollinger and the z-scores share one window-moments helper. Population variance from running sums
of x and x^2 cancels catastrophically when the spread is small next to the level (a 1e7 price, a
tight range), so the sums are taken of ``x - K`` for an anchor ``K`` near the data, and every ``p``
inputs they are taken again from the window itself (the ring holds it), anchored at its oldest input:
one loop of ``p`` on one bar in ``p``, O(1) amortised. (That is what a second accumulator, started
empty ``p`` inputs earlier, would hold: the same additions in the same order, without its five rows
written on every bar.) The error therefore depends on how far prices move within about two windows,
never on how long the stream has run. A window whose inputs are all identical is recognised exactly
(a run counter) and has variance 0, which is what TA-Lib reports for a flat window too.
"""

from __future__ import annotations

import math

from engine.indicators.kernels.common import (
    NAN,
    neumaier,
    record_outputs,
    ring_count,
    ring_get,
    ring_oldest,
    ring_push,
    wext_rows,
    wext_update,
)
from engine.indicators.layout import COUNTER, MOM_FIELDS, RING_HEADER
from engine.jit import njit_no_refcounts as njit  # they allocate nothing

INF = math.inf

# --- window moments ----------------------------------------------------------------------------
# rows: b+0 run of identical inputs (capped at p); b+1..b+5 the accumulator (anchor, sum,
# compensation, sum of squares, compensation); b+6 inputs since its sums were last taken from the
# window (layout.MOM_FIELDS in all); then a ring of the last p inputs (layout.moments).


@njit
def _acc_add(st, b, s, x, fresh):
    """Add ``x`` to the accumulator at rows b..b+4 (anchor, s1, c1, s2, c2); returns the new fields."""
    if fresh:
        k, s1, c1, s2, c2 = x, 0.0, 0.0, 0.0, 0.0
    else:
        k, s1, c1, s2, c2 = st[b, s], st[b + 1, s], st[b + 2, s], st[b + 3, s], st[b + 4, s]
    d = x - k
    s1, c1 = neumaier(s1, c1, d)
    s2, c2 = neumaier(s2, c2, d * d)
    return k, s1, c1, s2, c2


@njit
def _acc_write(st, b, s, k, s1, c1, s2, c2):
    st[b, s] = k
    st[b + 1, s] = s1
    st[b + 2, s] = c1
    st[b + 3, s] = s2
    st[b + 4, s] = c2


@njit
def _window_sums(st, r, s, p, x):
    """The accumulator's fields taken afresh from the window (the ring's newest ``p - 1`` inputs, then
    ``x``), anchored at its oldest input, adding oldest first."""
    k = x
    if p > 1:
        k = ring_get(st, r, s, p, p - 2)
    s1, c1, s2, c2 = 0.0, 0.0, 0.0, 0.0
    for back in range(p - 2, -1, -1):
        d = ring_get(st, r, s, p, back) - k
        s1, c1 = neumaier(s1, c1, d)
        s2, c2 = neumaier(s2, c2, d * d)
    d = x - k
    s1, c1 = neumaier(s1, c1, d)
    s2, c2 = neumaier(s2, c2, d * d)
    return k, s1, c1, s2, c2


@njit
def moments_update(st, b, s, x, p, commit):
    """Mean and population variance of the last ``p`` inputs, and ``x - mean``; NaN until warm.

    The deviation is returned alongside because it is computed from anchored sums, so it keeps its
    precision even when ``x`` and the mean are huge and nearly equal.
    """
    r = b + MOM_FIELDS
    n = ring_count(st, r, s)
    run = 1.0
    if n > 0 and ring_get(st, r, s, p, 0) == x:
        run = min(st[b, s] + 1.0, float(p))
    ka, a1, ac1, a2, ac2 = _acc_add(st, b + 1, s, x, n == 0)
    if n == p:
        old = ring_oldest(st, r, s, p) - ka
        a1, ac1 = neumaier(a1, ac1, -old)
        a2, ac2 = neumaier(a2, ac2, -old * old)
    nb = st[b + 6, s] + 1.0
    if nb == p:
        ka, a1, ac1, a2, ac2 = _window_sums(st, r, s, p, x)
        nb = 0.0
    if commit:
        st[b, s] = run
        _acc_write(st, b + 1, s, ka, a1, ac1, a2, ac2)
        st[b + 6, s] = nb
        ring_push(st, r, s, p, x)
    if n + 1 < p:
        return NAN, NAN, NAN
    m1 = (a1 + ac1) / p
    var = (a2 + ac2) / p - m1 * m1
    if run >= p or var < 0.0:
        var = 0.0
    return ka + m1, var, (x - ka) - m1


@njit
def bb_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib BBANDS(p, k, k, SMA): SMA middle band +- k population standard deviations."""
    mean, var, _ = moments_update(st, b, s, c, ip[0], commit)
    width = math.sqrt(var) * fp[0]
    out[ob, s] = mean + width
    out[ob + 1, s] = mean
    out[ob + 2, s] = mean - width


@njit
def bb_batch(st, b, ip, fp, slots, n, o, h, l, c, v, t, out, ob, record, rec, rf):
    """``bb_step`` committing bars ``0..n-1`` of the arrays, bit-identical to it bar by bar (the specialised
    kernel's committed batches; ``record`` copies the three outputs to ``rec[i, rf:rf + 3]``).

    Why a second text of the same update: ``moments_update`` is too large for LLVM to inline, so a call per
    bar passes every argument through the stack (a third of Bollinger's time). Here the common case (a
    full window, a finite close, not the bar that takes the sums again) is written in the loop itself,
    the same operations in the same order as ``moments_update``; any other bar goes through ``bb_step``.
    """
    p = ip[0]
    r = b + MOM_FIELDS
    k = fp[0]
    for i in range(n):
        s = slots[i]
        x = c[i]
        if st[r + 1, s] != p or st[b + 6, s] + 1.0 == p or not abs(x) < INF:
            bb_step(st, s, b, ip, fp, o[i], h[i], l[i], x, v[i], t[i], True, out, ob)
        else:
            pos = int(st[r, s])
            newest = r + RING_HEADER + (pos - 1 if pos > 0 else p - 1)
            oldest = r + RING_HEADER + pos
            run = min(st[b, s] + 1.0, float(p))
            if st[newest, s] != x:
                run = 1.0
            # the active accumulator: add x, take the oldest out
            ka = st[b + 1, s]
            d = x - ka
            a1, ac1 = neumaier(st[b + 2, s], st[b + 3, s], d)
            a2, ac2 = neumaier(st[b + 4, s], st[b + 5, s], d * d)
            old = st[oldest, s] - ka
            a1, ac1 = neumaier(a1, ac1, -old)
            a2, ac2 = neumaier(a2, ac2, -old * old)
            st[b, s] = run
            _acc_write(st, b + 1, s, ka, a1, ac1, a2, ac2)
            st[b + 6, s] += 1.0
            st[oldest, s] = x
            st[r, s] = float(pos + 1 if pos + 1 < p else 0)
            m1 = (a1 + ac1) / p
            var = (a2 + ac2) / p - m1 * m1
            if run >= p or var < 0.0:
                var = 0.0
            mean = ka + m1
            width = math.sqrt(var) * k
            out[ob, s] = mean + width
            out[ob + 1, s] = mean
            out[ob + 2, s] = mean - width
        if record:
            record_outputs(rec, i, rf, out, ob, s, 3)


@njit
def stddev_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib STDDEV(p, 1): the population standard deviation of the last p closes."""
    _, var, _ = moments_update(st, b, s, c, ip[0], commit)
    out[ob, s] = math.sqrt(var)


@njit
def _zscore(st, s, b, x, p, commit):
    """(x - SMA) / population stddev over the last p inputs; NaN where the window is flat."""
    _, var, dev = moments_update(st, b, s, x, p, commit)
    if var > 0.0:
        return dev / math.sqrt(var)
    return NAN


@njit
def zscore_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = _zscore(st, s, b, c, ip[0], commit)


@njit
def volume_zscore_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = _zscore(st, s, b, v, ip[0], commit)


# --- Donchian ----------------------------------------------------------------------------------
# rows: b+0 bars committed, then a window-max deque over highs and a window-min deque over lows
# (2 + 2p rows each).
@njit
def donchian_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Highest high / lowest low of the last p bars (TA-Lib MAX(high, p) / MIN(low, p))."""
    p = ip[0]
    i = int(st[b, s])
    hi, _ = wext_update(st, b + COUNTER, s, i, h, p, 1.0, commit)
    lo, _ = wext_update(st, b + COUNTER + wext_rows(p), s, i, l, p, -1.0, commit)
    if commit:
        st[b, s] = i + 1.0
    if i + 1 < p:
        out[ob, s] = NAN
        out[ob + 1, s] = NAN
        out[ob + 2, s] = NAN
    else:
        out[ob, s] = hi
        out[ob + 1, s] = lo
        out[ob + 2, s] = (hi + lo) / 2.0

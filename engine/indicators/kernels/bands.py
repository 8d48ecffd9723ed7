"""Price bands and normalisations: Bollinger, standard deviation, z-score (of close and of volume), Donchian.

Bollinger and the z-scores share one window-moments helper. Population variance from running sums
of x and x^2 cancels catastrophically when the spread is small next to the level (a 1e7 price, a
tight range), so the sums are taken of ``x - K`` for an anchor ``K`` near the data, and the anchor
is renewed every ``p`` inputs without looping: a second accumulator starts empty with a fresh
anchor, never subtracts, and after exactly ``p`` inputs it holds the whole window, so it replaces
the first. The error therefore depends on how far prices move within about two windows, never on
how long the stream has run. A window whose inputs are all identical is recognised exactly (a run
counter) and has variance 0, which is what TA-Lib reports for a flat window too.
"""

from __future__ import annotations

import math

from engine.indicators.kernels.common import (
    NAN,
    neumaier,
    ring_count,
    ring_get,
    ring_oldest,
    ring_push,
    wext_rows,
    wext_update,
)
from engine.indicators.layout import COUNTER, MOM_FIELDS
from engine.jit import njit_no_refcounts as njit  # they allocate nothing

# --- window moments ----------------------------------------------------------------------------
# rows: b+0 run of identical inputs (capped at p); b+1..b+5 active accumulator (anchor, sum,
# compensation, sum of squares, compensation); b+6..b+10 the accumulator being built, b+11 how many
# inputs it holds (layout.MOM_FIELDS in all); then a ring of the last p inputs (layout.moments).


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
    nb = st[b + 11, s]
    kb, b1, bc1, b2, bc2 = _acc_add(st, b + 6, s, x, nb == 0.0)
    nb += 1.0
    if nb == p:
        # the new accumulator now holds exactly the window: promote it, start another
        ka, a1, ac1, a2, ac2 = kb, b1, bc1, b2, bc2
        nb = 0.0
    if commit:
        st[b, s] = run
        _acc_write(st, b + 1, s, ka, a1, ac1, a2, ac2)
        _acc_write(st, b + 6, s, kb, b1, bc1, b2, bc2)
        st[b + 11, s] = nb
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

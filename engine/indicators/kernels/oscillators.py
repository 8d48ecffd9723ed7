"""Bounded oscillators and momentum: RSI STOCH CCI WILLR MFI ROC MOM ULTOSC AROON.

Every kind matches TA-Lib's output, including its guards: where TA-Lib answers 0.0 for a 0/0 (a flat
window, a window without money flow) so do these kernels, because a console showing NaN or a huge
number where every charting package shows 0 would be wrong in the eyes of its users.
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
    sma_rows,
    sma_update,
    wext_rows,
    wext_update,
)
from engine.indicators.layout import MFI_HEAD, RING_HEADER, ULTOSC_HEAD
from engine.jit import njit_no_refcounts as njit  # they allocate nothing

# TA-Lib's TA_EPSILON, used here as the relative dead-zone of its TA_IS_ZERO_SCALED.
EPSILON = 1e-14


@njit
def _typical(h, l, c):
    return (h + l + c) / 3.0


# --- RSI ---------------------------------------------------------------------------------------
# rows: b+0 bars seen (capped at p+1), b+1 previous close, b+2 gain, b+3 loss (sums while seeding,
# Wilder averages afterwards).


@njit
def rsi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Wilder RSI seeded like TA-Lib: the plain mean of the first p changes, then (avg*(p-1)+x)/p.

    0/0 (no change at all since the seed) reads 0.0. The test is ``total > 0`` and not a fixed
    epsilon: both averages are sums of non-negative terms, so they hold no cancellation residue, and
    a fixed band would zero the index for instruments quoted in tiny units (TA-Lib does the same).

    The seed is a one-off sum of p terms (no window slides), so it is accumulated exactly as TA-Lib
    does rather than compensated: that keeps the seed, and every value after it, bit-identical.
    """
    p = ip[0]
    n = int(st[b, s])
    if n == 0:
        if commit:
            st[b, s] = 1.0
            st[b + 1, s] = c
        out[ob, s] = NAN
        return
    diff = c - st[b + 1, s]
    gain = st[b + 2, s]
    loss = st[b + 3, s]
    if n > p:
        gain *= p - 1.0
        loss *= p - 1.0
    if diff < 0.0:
        loss -= diff
    else:
        gain += diff
    if n >= p:
        gain /= p
        loss /= p
    if commit:
        st[b, s] = min(n + 1, p + 1)
        st[b + 1, s] = c
        st[b + 2, s] = gain
        st[b + 3, s] = loss
    if n < p:
        out[ob, s] = NAN
        return
    total = gain + loss
    out[ob, s] = 100.0 * (gain / total) if total > 0.0 else 0.0


# --- window extremes shared by STOCH, WILLR and AROON ----------------------------------------------
@njit
def _high_low(st, b, s, i, h, l, p, commit):
    """Highest high and lowest low of the last ``p`` bars, with the index of each (ties: newest)."""
    hi, hi_i = wext_update(st, b, s, i, h, p, 1.0, commit)
    lo, lo_i = wext_update(st, b + wext_rows(p), s, i, l, p, -1.0, commit)
    return hi, hi_i, lo, lo_i


# --- STOCH -------------------------------------------------------------------------------------
# rows: b+0 bars seen, then the high and low deques over fastk bars, the slow-%K SMA, the slow-%D SMA.
@njit
def stoch_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib STOCH with SMA smoothing; fast %K is 0 when the window's high equals its low.

    TA-Lib emits slow %K only from the bar where slow %D exists, so %K stays NaN until then too.
    """
    fk = ip[0]
    sk = ip[1]
    sd = ip[2]
    n = int(st[b, s])
    w = wext_rows(fk)
    hi, _, lo, _ = _high_low(st, b + 1, s, n, h, l, fk, commit)
    fast = NAN
    if n + 1 >= fk:
        diff = (hi - lo) / 100.0
        fast = (c - lo) / diff if diff != 0.0 else 0.0
    kb = b + 1 + 2 * w
    slow_k = sma_update(st, kb, s, fast, sk, commit)
    slow_d = sma_update(st, kb + sma_rows(sk), s, slow_k, sd, commit)
    if commit:
        st[b, s] = n + 1
    out[ob, s] = NAN if math.isnan(slow_d) else slow_k
    out[ob + 1, s] = slow_d


# --- CCI ---------------------------------------------------------------------------------------
# rows: a ring of the last p typical prices.
@njit
def cci_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """CCI over the typical price; the one kernel here that is O(period) per bar, by necessity.

    The mean absolute deviation sum(|tp_i - mean|) has no O(1) update: every term depends on the
    window's mean, which moves with each bar, so it is recomputed over the fixed-size ring of the
    last p typical prices (bounded work, never touching history). The mean and the deviation are
    summed in the ring's physical slot order with the same operations as TA-Lib, which fills its
    circular buffer the same way, so the results are bit-identical. That matters on flat stretches:
    the mean of p equal prices can differ from them by an ulp, and TA-Lib answers 0.0 there because
    it treats the numerator and the mean deviation as zero when within 1e-14 of the mean's
    magnitude (TA_IS_ZERO_SCALED, relative so that tiny-priced instruments are not zeroed too).
    """
    p = ip[0]
    x = _typical(h, l, c)
    n = ring_count(st, b, s)
    pos = int(st[b, s])
    if commit:
        ring_push(st, b, s, p, x)
    if n + 1 < p:
        out[ob, s] = NAN
        return
    base = b + RING_HEADER
    mean = 0.0
    for j in range(p):
        mean += x if j == pos else st[base + j, s]
    mean /= p
    dev = 0.0
    for j in range(p):
        dev += abs((x if j == pos else st[base + j, s]) - mean)
    dev /= p
    num = x - mean
    band = EPSILON * abs(mean)
    if abs(num) <= band or abs(dev) <= band:
        out[ob, s] = 0.0
    else:
        out[ob, s] = num / (0.015 * dev)


# --- WILLR -------------------------------------------------------------------------------------
# rows: b+0 bars seen, then the high and low deques over p bars.
@njit
def willr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    p = ip[0]
    n = int(st[b, s])
    hi, _, lo, _ = _high_low(st, b + 1, s, n, h, l, p, commit)
    if commit:
        st[b, s] = n + 1
    if n + 1 < p:
        out[ob, s] = NAN
        return
    diff = (hi - lo) / -100.0
    out[ob, s] = (hi - c) / diff if diff != 0.0 else 0.0


# --- MFI ---------------------------------------------------------------------------------------
# rows: b+0 1 once a bar was seen, b+1 previous typical price, b+2/3 positive flow sum and its
# compensation, b+4/5 negative flow sum and compensation, b+6 run of flow-less bars (capped at p),
# then a ring of the last p positive flows and a ring of the last p negative flows.


@njit
def mfi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Money flow index with TA-Lib's guards.

    A typical-price change within 1e-14 of the prices' magnitude is no move (no flow either way);
    a window in which p consecutive bars carried no flow has exactly zero sums (the residue of the
    running sums is dropped), and a zero total reads 0.0. The ratio is clamped into [0, 100].
    """
    p = ip[0]
    n = int(st[b, s])
    tp = _typical(h, l, c)
    if n == 0:
        if commit:
            st[b, s] = 1.0
            st[b + 1, s] = tp
        out[ob, s] = NAN
        return
    prev = st[b + 1, s]
    change = tp - prev
    flow = tp * v
    if abs(change) <= EPSILON * (abs(tp) + abs(prev)):
        flow = 0.0
    pos_flow = 0.0 if change < 0.0 else flow
    neg_flow = flow if change < 0.0 else 0.0
    rp = b + MFI_HEAD
    rn = rp + RING_HEADER + p
    cnt = ring_count(st, rp, s)
    pos, pos_c = neumaier(st[b + 2, s], st[b + 3, s], pos_flow)
    neg, neg_c = neumaier(st[b + 4, s], st[b + 5, s], neg_flow)
    if cnt == p:
        pos, pos_c = neumaier(pos, pos_c, -ring_oldest(st, rp, s, p))
        neg, neg_c = neumaier(neg, neg_c, -ring_oldest(st, rn, s, p))
    run = st[b + 6, s] + 1.0 if flow == 0.0 else 0.0
    if run >= p:
        run = float(p)
        pos = pos_c = neg = neg_c = 0.0
    if commit:
        st[b + 1, s] = tp
        st[b + 2, s] = pos
        st[b + 3, s] = pos_c
        st[b + 4, s] = neg
        st[b + 5, s] = neg_c
        st[b + 6, s] = run
        ring_push(st, rp, s, p, pos_flow)
        ring_push(st, rn, s, p, neg_flow)
    if cnt + 1 < p:
        out[ob, s] = NAN
        return
    pos_sum = pos + pos_c
    total = pos_sum + (neg + neg_c)
    if total <= 0.0:
        out[ob, s] = 0.0
        return
    clamped = min(max(pos_sum, 0.0), total)
    out[ob, s] = 100.0 * (clamped / total)


# --- ROC and MOM -------------------------------------------------------------------------------
# rows: a ring of the last p closes.
@njit
def _close_p_ago(st, b, s, p, c, commit):
    """The close ``p`` bars before this one, or NaN while fewer than p bars were seen."""
    then = ring_oldest(st, b, s, p) if ring_count(st, b, s) == p else NAN
    if commit:
        ring_push(st, b, s, p, c)
    return then


@njit
def roc_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """(close / close p bars ago - 1) * 100; TA-Lib answers 0.0 when the old close is 0."""
    then = _close_p_ago(st, b, s, ip[0], c, commit)
    if math.isnan(then):
        out[ob, s] = NAN
    elif then != 0.0:
        out[ob, s] = (c / then - 1.0) * 100.0
    else:
        out[ob, s] = 0.0


@njit
def mom_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = c - _close_p_ago(st, b, s, ip[0], c, commit)


# --- ULTOSC ------------------------------------------------------------------------------------
# rows: b+0 1 once a bar was seen, b+1 previous close, b+2 run of bars without true range (capped at
# the longest period), b+3 .. b+14 the (sum, compensation) pairs of close-minus-true-low (a) and true
# range (b) over the short, middle and long windows, then a ring of a-terms and a ring of b-terms
# over the longest window.


@njit
def _sorted3(x, y, z):
    lo = min(x, min(y, z))
    hi = max(x, max(y, z))
    return lo, x + y + z - lo - hi, hi


@njit
def _window_sum(st, b, s, ring, cap, cnt, k, x, empty):
    """The compensated sum at rows b, b+1 after adding ``x`` and dropping the term k bars back.

    ``empty``: the window holds only zero terms, so its sum is exactly zero (drop the residue).
    """
    if empty:
        return 0.0, 0.0
    total, comp = neumaier(st[b, s], st[b + 1, s], x)
    if cnt >= k:
        total, comp = neumaier(total, comp, -ring_get(st, ring, s, cap, k - 1))
    return total, comp


@njit
def _ratio(a, b):
    """a/b of a window, or 0 for a window without any true range."""
    return a / b if b > 0.0 else 0.0


@njit
def ultosc_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Ultimate oscillator: 4, 2 and 1 times the a/b ratios over the shortest, middle and longest
    window (TA-Lib sorts the periods, so their order in the name does not matter), / 7 * 100.

    True low is min(low, previous close); true range is the largest of high - low and the distances
    of the previous close from high and low. As in TA-Lib, a window is known to be empty once as
    many bars as it spans went by without a true range: its sums are then reset to exactly zero and
    it contributes nothing. Every other window has a positive true-range sum, so the guard is an
    exact ``> 0`` and not an epsilon (which would zero instruments quoted in tiny units).
    """
    p1, p2, p3 = _sorted3(ip[0], ip[1], ip[2])
    if st[b, s] == 0.0:
        if commit:
            st[b, s] = 1.0
            st[b + 1, s] = c
        out[ob, s] = NAN
        return
    prev = st[b + 1, s]
    true_low = l if l < prev else prev
    a = c - true_low
    rng = h - l
    rng = max(rng, abs(prev - h))
    rng = max(rng, abs(prev - l))
    run = min(st[b + 2, s] + 1.0, float(p3)) if rng == 0.0 and a == 0.0 else 0.0
    ra = b + ULTOSC_HEAD
    rb = ra + RING_HEADER + p3
    cnt = ring_count(st, ra, s)
    a1, a1c = _window_sum(st, b + 3, s, ra, p3, cnt, p1, a, run >= p1)
    b1, b1c = _window_sum(st, b + 5, s, rb, p3, cnt, p1, rng, run >= p1)
    a2, a2c = _window_sum(st, b + 7, s, ra, p3, cnt, p2, a, run >= p2)
    b2, b2c = _window_sum(st, b + 9, s, rb, p3, cnt, p2, rng, run >= p2)
    a3, a3c = _window_sum(st, b + 11, s, ra, p3, cnt, p3, a, run >= p3)
    b3, b3c = _window_sum(st, b + 13, s, rb, p3, cnt, p3, rng, run >= p3)
    if commit:
        st[b + 1, s] = c
        st[b + 2, s] = run
        st[b + 3, s], st[b + 4, s], st[b + 5, s], st[b + 6, s] = a1, a1c, b1, b1c
        st[b + 7, s], st[b + 8, s], st[b + 9, s], st[b + 10, s] = a2, a2c, b2, b2c
        st[b + 11, s], st[b + 12, s], st[b + 13, s], st[b + 14, s] = a3, a3c, b3, b3c
        ring_push(st, ra, s, p3, a)
        ring_push(st, rb, s, p3, rng)
    if cnt + 1 < p3:
        out[ob, s] = NAN
        return
    value = 4.0 * _ratio(a1 + a1c, b1 + b1c)
    value += 2.0 * _ratio(a2 + a2c, b2 + b2c)
    value += _ratio(a3 + a3c, b3 + b3c)
    out[ob, s] = 100.0 * (value / 7.0)


# --- AROON -------------------------------------------------------------------------------------
# rows: b+0 bars seen, then the high and low deques over p + 1 bars.
@njit
def aroon_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Aroon up/down over p + 1 bars: 100/p * (p - bars since the extreme).

    On ties TA-Lib takes the most recent of equal highs (lows), both when it rescans an expired
    window and when a new bar equals the current extreme; ``wext_update`` resolves ties the same
    way, so on flat stretches both read 100.
    """
    p = ip[0]
    n = int(st[b, s])
    _, hi_i, _, lo_i = _high_low(st, b + 1, s, n, h, l, p + 1, commit)
    if commit:
        st[b, s] = n + 1
    if n < p:
        out[ob, s] = NAN
        out[ob + 1, s] = NAN
        return
    factor = 100.0 / p
    out[ob, s] = factor * (p - (n - hi_i))
    out[ob + 1, s] = factor * (p - (n - lo_i))

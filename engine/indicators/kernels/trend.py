"""Range, direction and volume: ATR NATR ADX/DI SAR Supertrend OBV VWAP (and Keltner, built on ATR).

ATR, NATR, ADX/+DI/-DI, SAR and OBV reproduce TA-Lib's warm-up and bootstrapping exactly, because the
first values seed everything after them: a different seed is a different series for hundreds of bars.
Supertrend, session VWAP and Keltner have no TA-Lib counterpart; they reuse the same ATR so that one
``atr_14`` and the ATR inside ``supertrend_14`` never disagree.
"""

from __future__ import annotations

import math

from engine.indicators.kernels.common import NAN, ema_update, neumaier
from engine.indicators.layout import EMA_ROWS
from engine.jit import njit_no_refcounts as njit  # they allocate nothing

DAY_NS = 86_400_000_000_000


@njit
def true_range(h, l, prev_close):
    """TA-Lib's true range, with its comparison order (high-low first, then the gaps)."""
    r = h - l
    up = abs(h - prev_close)
    if up > r:
        r = up
    down = abs(l - prev_close)
    if down > r:
        r = down
    return r


# --- ATR (Wilder, seeded with the SMA of the first p true ranges, the first at bar 1) -----------
# rows: b+0 bars seen (capped at p + 1), b+1 previous close, b+2 seed sum, b+3 seed compensation,
#       b+4 ATR.


@njit
def atr_update(st, b, s, h, l, c, p, commit):
    """ATR of the bar; NaN for the first ``p`` bars (bar 0 has no previous close, so no true range).

    With ``p == 1`` the seed is the first true range and Wilder's step degenerates to the true range
    itself, which is what TA-Lib returns (it calls TRANGE).
    """
    n = st[b, s]
    total = st[b + 2, s]
    comp = st[b + 3, s]
    value = NAN
    if n > 0.0:
        tr = true_range(h, l, st[b + 1, s])
        if n <= p:
            total, comp = neumaier(total, comp, tr)
            if n == p:
                value = (total + comp) / p
        else:
            value = (st[b + 4, s] * (p - 1) + tr) / p
    if commit:
        st[b, s] = min(n + 1.0, p + 1.0)
        st[b + 1, s] = c
        st[b + 2, s] = total
        st[b + 3, s] = comp
        st[b + 4, s] = value
    return value


@njit
def atr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = atr_update(st, b, s, h, l, c, ip[0], commit)


@njit
def natr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """ATR as a percentage of close. TA-Lib quirks: exactly zero when close is 0 (no division), and
    with period 1 it returns the raw true range, un-normalised (it short-circuits to TRANGE)."""
    p = ip[0]
    atr = atr_update(st, b, s, h, l, c, p, commit)
    if math.isnan(atr) or p == 1:
        out[ob, s] = atr
    elif c == 0.0:
        out[ob, s] = 0.0
    else:
        out[ob, s] = (atr / c) * 100.0


# --- directional movement: ADX, +DI, -DI ----------------------------------------------------------
# rows: b+0 bars seen (capped at 2p), b+1 previous high, b+2 previous low, b+3 previous close,
#       b+4 smoothed +DM, b+5 smoothed -DM, b+6 smoothed TR, b+7 DX seed sum, b+8 its compensation,
#       b+9 ADX.


@njit
def directional_move(h, l, prev_h, prev_l):
    """One-bar (+DM, -DM): the larger outward move wins; a tie, or no outward move, gives neither."""
    up = h - prev_h
    down = prev_l - l
    if down > 0.0 and up < down:
        return 0.0, down
    if up > 0.0 and up > down:
        return up, 0.0
    return 0.0, 0.0


@njit
def dmi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib's three functions share one smoothing: the first p-1 one-bar DM/TR are summed, then
    Wilder-smoothed from bar p, where +DI/-DI start. DX of bars p .. 2p-1 averages into the first ADX
    (at bar 2p-1), Wilder-smoothed after. Zero guards (exact zero in the installed TA-Lib): DI is 0
    when the smoothed TR is 0; a DX is skipped, but still counted in the seed's divisor, when TR or
    +DI + -DI is 0, and a skipped DX leaves a warm ADX unchanged."""
    p = ip[0]
    n = st[b, s]
    pdm = st[b + 4, s]
    mdm = st[b + 5, s]
    tr_s = st[b + 6, s]
    dx_sum = st[b + 7, s]
    dx_comp = st[b + 8, s]
    adx = st[b + 9, s]
    plus_di = NAN
    minus_di = NAN
    adx_out = NAN
    if n > 0.0:
        up, down = directional_move(h, l, st[b + 1, s], st[b + 2, s])
        tr = true_range(h, l, st[b + 3, s])
        if n < p:
            pdm += up
            mdm += down
            tr_s += tr
        else:
            pdm = pdm - pdm / p + up
            mdm = mdm - mdm / p + down
            tr_s = tr_s - tr_s / p + tr
            plus_di = 0.0
            minus_di = 0.0
            dx = NAN
            if tr_s != 0.0:
                minus_di = 100.0 * (mdm / tr_s)
                plus_di = 100.0 * (pdm / tr_s)
                di_sum = minus_di + plus_di
                if di_sum != 0.0:
                    dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
            if n < 2 * p:
                if not math.isnan(dx):
                    dx_sum, dx_comp = neumaier(dx_sum, dx_comp, dx)
                if n == 2 * p - 1:
                    adx = (dx_sum + dx_comp) / p
                    adx_out = adx
            else:
                if not math.isnan(dx):
                    adx = (adx * (p - 1) + dx) / p
                adx_out = adx
    out[ob, s] = adx_out
    out[ob + 1, s] = plus_di
    out[ob + 2, s] = minus_di
    if commit:
        st[b, s] = min(n + 1.0, 2.0 * p)
        st[b + 1, s] = h
        st[b + 2, s] = l
        st[b + 3, s] = c
        st[b + 4, s] = pdm
        st[b + 5, s] = mdm
        st[b + 6, s] = tr_s
        st[b + 7, s] = dx_sum
        st[b + 8, s] = dx_comp
        st[b + 9, s] = adx


# --- parabolic SAR ---------------------------------------------------------------------------------
# rows: b+0 bars seen (capped at 2), b+1 long (1) / short (0), b+2 acceleration factor,
#       b+3 extreme point, b+4 the SAR for the next bar, b+5 previous high, b+6 previous low.


@njit
def sar_advance(is_long, af, ep, sar, prev_h, prev_l, h, l, accel, maximum):
    """One bar of Wilder's SAR: returns (output, long, af, ep, SAR for the next bar).

    A reversal outputs the old extreme point (clamped outside both bars' ranges) and restarts af.
    """
    if is_long:
        if l <= sar:
            sar = max(ep, prev_h, h)
            value = sar
            af = accel
            ep = l
            sar = max(sar + af * (ep - sar), prev_h, h)
            return value, False, af, ep, sar
        value = sar
        if h > ep:
            ep = h
            af = min(af + accel, maximum)
        sar = min(sar + af * (ep - sar), prev_l, l)
        return value, True, af, ep, sar
    if h >= sar:
        sar = min(ep, prev_l, l)
        value = sar
        af = accel
        ep = h
        sar = min(sar + af * (ep - sar), prev_l, l)
        return value, True, af, ep, sar
    value = sar
    if l < ep:
        ep = l
        af = min(af + accel, maximum)
    sar = max(sar + af * (ep - sar), prev_h, h)
    return value, False, af, ep, sar


@njit
def sar_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib's bootstrap: bar 0 only supplies a range. At bar 1 the trade is short if bar 1's -DM
    beats its +DM (a tie is long); the first SAR is bar 0's low (long) or high (short), the extreme
    point bar 1's high / low, and bar 1 is processed with itself as the "previous" bar."""
    accel = fp[0]
    maximum = fp[1]
    if accel > maximum:
        accel = maximum
    n = st[b, s]
    value = NAN
    is_long = st[b + 1, s] != 0.0
    af = st[b + 2, s]
    ep = st[b + 3, s]
    sar = st[b + 4, s]
    if n == 1.0:
        _, minus_dm = directional_move(h, l, st[b + 5, s], st[b + 6, s])
        is_long = not minus_dm > 0.0
        af = accel
        if is_long:
            ep = h
            sar = st[b + 6, s]
        else:
            ep = l
            sar = st[b + 5, s]
        value, is_long, af, ep, sar = sar_advance(is_long, af, ep, sar, h, l, h, l, accel, maximum)
    elif n > 1.0:
        value, is_long, af, ep, sar = sar_advance(is_long, af, ep, sar, st[b + 5, s], st[b + 6, s],
                                                  h, l, accel, maximum)
    out[ob, s] = value
    if commit:
        st[b, s] = min(n + 1.0, 2.0)
        st[b + 1, s] = 1.0 if is_long else 0.0
        st[b + 2, s] = af
        st[b + 3, s] = ep
        st[b + 4, s] = sar
        st[b + 5, s] = h
        st[b + 6, s] = l


# --- Supertrend ------------------------------------------------------------------------------------
# rows: b .. b+4 the ATR, b+5 final upper band, b+6 final lower band, b+7 direction (0 = not started).


@njit
def supertrend_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Bands hl2 -/+ k*ATR that only ratchet toward price: the upper band may rise again only after
    a close above it, the lower may fall only after a close below it. An up-trend flips down when
    the close falls below the previous final lower band, a down-trend up when it rises above the
    previous final upper band. The first bar with an ATR has no previous bands: it starts an
    up-trend (the pandas-ta convention) with the basic bands."""
    k = fp[0]
    prev_close = st[b + 1, s]
    atr = atr_update(st, b, s, h, l, c, ip[0], commit)
    if math.isnan(atr):
        out[ob, s] = NAN
        out[ob + 1, s] = NAN
        return
    hl2 = (h + l) / 2.0
    upper = hl2 + k * atr
    lower = hl2 - k * atr
    direction = st[b + 7, s]
    if direction != 0.0:
        prev_upper = st[b + 5, s]
        prev_lower = st[b + 6, s]
        if not (upper < prev_upper or prev_close > prev_upper):
            upper = prev_upper
        if not (lower > prev_lower or prev_close < prev_lower):
            lower = prev_lower
        if direction > 0.0 and c < prev_lower:
            direction = -1.0
        elif direction < 0.0 and c > prev_upper:
            direction = 1.0
    else:
        direction = 1.0
    out[ob, s] = lower if direction > 0.0 else upper
    out[ob + 1, s] = direction
    if commit:
        st[b + 5, s] = upper
        st[b + 6, s] = lower
        st[b + 7, s] = direction


# --- on-balance volume -----------------------------------------------------------------------------
# rows: b+0 bars seen (capped at 1), b+1 OBV, b+2 its compensation, b+3 previous close.


@njit
def obv_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """TA-Lib starts at the first bar's volume (not 0); an unchanged close adds nothing."""
    total = st[b + 1, s]
    comp = st[b + 2, s]
    if st[b, s] == 0.0 or c > st[b + 3, s]:
        total, comp = neumaier(total, comp, v)
    elif c < st[b + 3, s]:
        total, comp = neumaier(total, comp, -v)
    out[ob, s] = total + comp
    if commit:
        st[b, s] = 1.0
        st[b + 1, s] = total
        st[b + 2, s] = comp
        st[b + 3, s] = c


# --- session VWAP ----------------------------------------------------------------------------------
# rows: b+0 a bar was seen, b+1 session (UTC day number), b+2 sum of price*volume, b+3 its
#       compensation, b+4 sum of volume, b+5 its compensation.


@njit
def vwap_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """Anchored at the first bar of each UTC calendar day of the bar's open time."""
    day = float(t // DAY_NS)
    pv = st[b + 2, s]
    pv_comp = st[b + 3, s]
    vol = st[b + 4, s]
    vol_comp = st[b + 5, s]
    if st[b, s] == 0.0 or st[b + 1, s] != day:
        pv = 0.0
        pv_comp = 0.0
        vol = 0.0
        vol_comp = 0.0
    pv, pv_comp = neumaier(pv, pv_comp, (h + l + c) / 3.0 * v)
    vol, vol_comp = neumaier(vol, vol_comp, v)
    volume = vol + vol_comp
    out[ob, s] = NAN if volume == 0.0 else (pv + pv_comp) / volume
    if commit:
        st[b, s] = 1.0
        st[b + 1, s] = day
        st[b + 2, s] = pv
        st[b + 3, s] = pv_comp
        st[b + 4, s] = vol
        st[b + 5, s] = vol_comp


# --- Keltner channel -------------------------------------------------------------------------------
# rows: b .. b+3 the EMA of close, b+4 .. b+8 the ATR.


@njit
def keltner_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    """EMA(p) of close -/+ k * ATR(p); the EMA is warm one bar before the ATR, so both wait for it."""
    p = ip[0]
    mid = ema_update(st, b, s, c, p, 2.0 / (p + 1), commit)
    atr = atr_update(st, b + EMA_ROWS, s, h, l, c, p, commit)
    if math.isnan(mid) or math.isnan(atr):
        out[ob, s] = NAN
        out[ob + 1, s] = NAN
        out[ob + 2, s] = NAN
        return
    band = fp[0] * atr
    out[ob, s] = mid + band
    out[ob + 1, s] = mid
    out[ob + 2, s] = mid - band

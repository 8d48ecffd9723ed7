"""Shared O(1) building blocks: compensated sums, ring buffers, window extrema, SMA and EMA.

Each helper takes ``commit``: it always returns the value the new input produces, and only writes the
state when ``commit`` is true. That is what lets a provisional value for the forming bar share the
code path of the committed one without disturbing it.
"""

from __future__ import annotations

import math

from engine.indicators import layout
from engine.indicators.layout import RING_HEADER, SMA_FIELDS, WEXT_HEADER
from engine.jit import njit_no_refcounts as njit  # they allocate nothing

NAN = math.nan

# The layout's sizes, callable from compiled code.
sma_rows = njit(layout.sma)
wext_rows = njit(layout.wext)


@njit
def neumaier(total: float, comp: float, x: float) -> tuple[float, float]:
    """Add ``x`` to a compensated sum, returning the new (total, compensation).

    Running window sums add and subtract forever; without compensation their error grows with the
    stream's length. The true sum is ``total + comp``.
    """
    t = total + x
    if abs(total) >= abs(x):
        comp += (total - t) + x
    else:
        comp += (x - t) + total
    return t, comp


@njit
def record_outputs(rec, i, rf, out, ob, s, n):
    """Copy the ``n`` outputs of slot ``s`` (rows ``ob..``) to ``rec[i, rf..]``: a batch function's record
    of bar ``i`` (``Kind.batch``)."""
    for k in range(n):
        rec[i, rf + k] = out[ob + k, s]


# --- ring buffer -------------------------------------------------------------------------------
# rows: layout.RING_HEADER (next write position, count), then the values.


@njit
def ring_oldest(st, b, s, cap):
    """The value the next push evicts (valid once the ring is full)."""
    return st[b + RING_HEADER + int(st[b, s]), s]


@njit
def ring_get(st, b, s, cap, back):
    """The value ``back`` pushes ago (0 = the newest). Caller ensures back < count."""
    pos = int(st[b, s]) - 1 - back
    if pos < 0:
        pos += cap
    return st[b + RING_HEADER + pos, s]


@njit
def ring_count(st, b, s):
    return int(st[b + 1, s])


@njit
def ring_push(st, b, s, cap, x):
    pos = int(st[b, s])
    st[b + RING_HEADER + pos, s] = x
    pos += 1
    if pos == cap:
        pos = 0
    st[b, s] = pos
    if st[b + 1, s] < cap:
        st[b + 1, s] += 1


# --- simple moving average ---------------------------------------------------------------------
# rows: b+0 sum, b+1 compensation (layout.SMA_FIELDS), then a ring of the last p inputs.

@njit
def sma_update(st, b, s, x, p, commit):
    """SMA over the last ``p`` inputs; NaN until ``p`` inputs were seen. NaN inputs are ignored."""
    if math.isnan(x):
        return NAN
    r = b + SMA_FIELDS
    n = ring_count(st, r, s)
    total, comp = neumaier(st[b, s], st[b + 1, s], x)
    if n == p:
        total, comp = neumaier(total, comp, -ring_oldest(st, r, s, p))
    if commit:
        st[b, s] = total
        st[b + 1, s] = comp
        ring_push(st, r, s, p, x)
    if n + 1 < p:
        return NAN
    return (total + comp) / p


# --- exponential moving average (TA-Lib: seeded with the SMA of the first p inputs) ------------
# rows (layout.EMA_ROWS): b+0 inputs seen (capped at p), b+1 seed sum, b+2 seed compensation, b+3 value.


@njit
def ema_update(st, b, s, x, p, k, commit):
    """EMA with factor ``k``; NaN inputs (an upstream still warming up) are skipped."""
    if math.isnan(x):
        return NAN
    n = int(st[b, s])
    if n >= p:
        prev = st[b + 3, s]
        value = (x - prev) * k + prev
        if commit:
            st[b + 3, s] = value
        return value
    total, comp = neumaier(st[b + 1, s], st[b + 2, s], x)
    value = NAN
    if n + 1 == p:
        value = (total + comp) / p
    if commit:
        st[b, s] = n + 1
        st[b + 1, s] = total
        st[b + 2, s] = comp
        st[b + 3, s] = value
    return value


# --- window maximum / minimum with a monotonic deque --------------------------------------------
# rows: b+0 head, b+1 size, b+2 .. b+2+cap bar indices, then cap values; cap = p (the window).
# Amortised O(1): every index enters and leaves the deque once.
@njit
def wext_update(st, b, s, i, x, p, sign, commit):
    """Extreme of the last ``p`` inputs ending at bar index ``i``: sign=+1 max, -1 min.

    Returns (value, index of the extreme). Ties resolve to the most recent bar. ``i`` must increase
    by one per committed input; a provisional call passes the index the forming bar will get.
    """
    cap = p
    head = int(st[b, s])
    size = int(st[b + 1, s])
    ib = b + WEXT_HEADER
    vb = b + WEXT_HEADER + cap
    lo = i - p + 1  # oldest bar index still inside the window
    # drop expired from the front
    while size > 0 and st[ib + head, s] < lo:
        head += 1
        if head == cap:
            head = 0
        size -= 1
    # the best surviving committed entry, skipping ones the new value dominates
    best_v = x
    best_i = i
    if size > 0:
        fv = st[vb + head, s]
        if sign * fv > sign * x:
            best_v = fv
            best_i = int(st[ib + head, s])
    if commit:
        # pop from the back while dominated (ties: the newer wins)
        while size > 0:
            back = head + size - 1
            if back >= cap:
                back -= cap
            if sign * st[vb + back, s] <= sign * x:
                size -= 1
            else:
                break
        pos = head + size
        if pos >= cap:
            pos -= cap
        st[ib + pos, s] = i
        st[vb + pos, s] = x
        size += 1
        st[b, s] = head
        st[b + 1, s] = size
    return best_v, best_i

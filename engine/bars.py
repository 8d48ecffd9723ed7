"""Ticks to time bars, with indicators committed on every close, in one compiled call per batch.

A symbol has at most one forming bar. A tick in a later interval closes it: the closed bar goes to the
history ring and to a record; after the tick loop every indicator commits the batch's closed bars (in
order per symbol) and a copy of the committed outputs at each close is recorded for the signal
detector. A tick for an interval that has already closed (late or out of order) is not
dropped: its size is added to the forming bar and it is counted, but it cannot move a committed close.
Intervals with no ticks produce no bar, so a quiet symbol never costs work.

Provisional values are computed once per symbol per batch (for the symbols the batch touched), not per
tick: nothing reads them between batches, so per-tick previews would be pure waste.

History and live ticks take the same path; ``warm`` says which a batch is. A forming bar remembers
(``fwarm``) whether only history has gone into it, and each closed record says so (``c_warm``): the
bar that was forming when the live tape took over closes as a live bar, since live trades are in it,
while a history bar that the clock closes before any live trade arrives stays history.
"""

from __future__ import annotations

import numpy as np

from engine.history import push_bar
from engine.indicators.dispatch import apply_bars
from engine.jit import njit
from engine.ticks import NO_BAR

# stats slots
ST_TICKS, ST_BARS, ST_LATE, ST_BAD = 0, 1, 2, 3


@njit
def _close(s, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_warm, k):
    """Move the forming bar of ``s`` to history and to closed record ``k``."""
    t = fstart[s]
    push_bar(ht, hb, hhead, hcount, s, t, fb[s, 0], fb[s, 1], fb[s, 2], fb[s, 3], fb[s, 4])
    c_slot[k] = s
    c_t[k] = t
    c_warm[k] = fwarm[s]
    for j in range(5):
        c_bar[k, j] = fb[s, j]
    fstart[s] = NO_BAR


@njit
def _commit_closed(k, plan_i, plan_f, st, committed, counts, c_slot, c_t, c_bar, c_vals):
    """Commit the first ``k`` closed records to every indicator, recording the values at each close."""
    if k == 0:
        return
    sl = c_slot[:k]
    apply_bars(plan_i, plan_f, st, sl, c_t[:k], c_bar[:k, 0], c_bar[:k, 1], c_bar[:k, 2], c_bar[:k, 3],
               c_bar[:k, 4], True, committed, committed.shape[0], True, c_vals)
    for i in range(k):
        counts[sl[i]] += 1


@njit
def ingest(sym, ts, price, size, interval, warm, fstart, fb, fwarm, carry, plan_i, plan_f, st, committed,
           provisional, counts, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_warm, c_vals, dirty, d_list,
           stats):
    """Apply a batch of ticks (history when ``warm``). Returns (closed bars recorded, dirty symbols listed).

    Three phases: build bars tick by tick (closes go to history and to the ``c_*`` records); commit
    the closed bars to the indicators, instance-major; then compute provisional values once for each
    symbol whose forming bar changed (listed in ``d_list``). ``dirty`` is scratch, left clear.
    ``carry`` holds, per symbol, the volume of late ticks that arrived while no bar was forming; the
    next bar that forms takes it, so no volume is lost and no closed bar is opened twice. History ticks
    are not counted in ``stats[ST_TICKS]``: that figure is the live tape's.
    """
    k = 0
    nd = 0
    for i in range(sym.shape[0]):
        s = sym[i]
        p = price[i]
        q = size[i]
        if not (p > 0.0 and p < np.inf) or not (q >= 0.0 and q < np.inf):
            stats[ST_BAD] += 1
            continue
        if not warm:
            stats[ST_TICKS] += 1
        start = ts[i] - ts[i] % interval
        cur = fstart[s]
        if cur != NO_BAR and start > cur:
            _close(s, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_warm, k)
            k += 1
            stats[ST_BARS] += 1
            cur = NO_BAR
        if cur == NO_BAR and hcount[s] > 0:
            last = hhead[s] - 1
            if last < 0:
                last += ht.shape[1]
            if start <= ht[s, last]:  # for a bar that has already closed (on the clock): late
                stats[ST_LATE] += 1
                carry[s] += q
                continue
        if cur == NO_BAR:
            fstart[s] = start
            fb[s, 0] = p
            fb[s, 1] = p
            fb[s, 2] = p
            fb[s, 3] = p
            fb[s, 4] = q + carry[s]
            carry[s] = 0.0
            fwarm[s] = warm
        elif start < cur:
            stats[ST_LATE] += 1
            fb[s, 4] += q
            fwarm[s] = fwarm[s] and warm
        else:
            if p > fb[s, 1]:
                fb[s, 1] = p
            if p < fb[s, 2]:
                fb[s, 2] = p
            fb[s, 3] = p
            fb[s, 4] += q
            fwarm[s] = fwarm[s] and warm
        if not dirty[s]:
            dirty[s] = True
            d_list[nd] = s
            nd += 1
    _commit_closed(k, plan_i, plan_f, st, committed, counts, c_slot, c_t, c_bar, c_vals)
    if nd:
        ds = d_list[:nd]
        ft = np.empty(nd, dtype=np.int64)
        f = np.empty((5, nd))
        for j in range(nd):
            s = ds[j]
            dirty[s] = False
            ft[j] = fstart[s]
            for m in range(5):
                f[m, j] = fb[s, m]
        apply_bars(plan_i, plan_f, st, ds, ft, f[0], f[1], f[2], f[3], f[4], False, provisional,
                   provisional.shape[0], False, c_vals[:0])
    return k, nd


@njit
def close_due(now, interval, fstart, fb, fwarm, plan_i, plan_f, st, committed, counts, ht, hb, hhead,
              hcount, c_slot, c_t, c_bar, c_warm, c_vals, stats):
    """Close every forming bar whose interval ended at or before ``now`` (a quiet symbol's last bar)."""
    k = 0
    for s in range(fstart.shape[0]):
        if k >= c_slot.shape[0]:
            break
        if fstart[s] != NO_BAR and fstart[s] + interval <= now:
            _close(s, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_warm, k)
            k += 1
            stats[ST_BARS] += 1
    _commit_closed(k, plan_i, plan_f, st, committed, counts, c_slot, c_t, c_bar, c_vals)
    return k


@njit
def replay(s, first, n, plan_i, plan_f, st, committed, counts, ht, hb, hhead, hcount, c_slot, c_t, c_bar,
           c_vals):
    """Commit the ring bars ``first .. first + n - 1`` of ``s`` (0: the oldest held) to the indicators
    again, into the closed records as a close would (``c_vals``: the values after each), for a refill.

    The same ``apply_bars`` call, over the same bars in the same order as when they closed: from reset
    state it rebuilds the state bit for bit (instances are independent of each other and of other
    symbols, so how the bars were batched then does not matter)."""
    depth = ht.shape[1]
    oldest = hhead[s] - hcount[s] + depth  # >= 0, so the modulo below never sees a negative number
    for i in range(n):
        pos = (oldest + first + i) % depth
        c_slot[i] = s
        c_t[i] = ht[s, pos]
        for j in range(5):
            c_bar[i, j] = hb[s, pos, j]
    _commit_closed(n, plan_i, plan_f, st, committed, counts, c_slot, c_t, c_bar, c_vals)

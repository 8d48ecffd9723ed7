"""Ticks to time bars, with indicators committed on every close, in one compiled call per batch.

A symbol has at most one forming bar. A tick in a later interval closes it: the closed bar goes to the
history ring, every indicator commits it, and a copy of the committed outputs is recorded for the
signal detector. A tick for an interval that has already closed (late or out of order) is not
dropped: its size is added to the forming bar and it is counted, but it cannot move a committed close.
Intervals with no ticks produce no bar, so a quiet symbol never costs work.

Provisional values are computed once per symbol per batch (for the symbols the batch touched), not per
tick: nothing reads them between batches, so per-tick previews would be pure waste.
"""

from __future__ import annotations

import numpy as np

from engine.history import push_bar
from engine.indicators.dispatch import apply_bar
from engine.jit import njit

NO_BAR = np.iinfo(np.int64).min

# stats slots
ST_TICKS, ST_BARS, ST_LATE, ST_BAD = 0, 1, 2, 3


@njit
def _close(s, fstart, fb, plan_i, plan_f, st, committed, counts, ht, hb, hhead, hcount,
           c_slot, c_t, c_bar, c_vals, k):
    t = fstart[s]
    o, h, l, c, v = fb[s, 0], fb[s, 1], fb[s, 2], fb[s, 3], fb[s, 4]
    apply_bar(plan_i, plan_f, st, s, o, h, l, c, v, t, True, committed)
    counts[s] += 1
    push_bar(ht, hb, hhead, hcount, s, t, o, h, l, c, v)
    c_slot[k] = s
    c_t[k] = t
    for j in range(5):
        c_bar[k, j] = fb[s, j]
    for r in range(committed.shape[0]):
        c_vals[k, r] = committed[r, s]
    fstart[s] = NO_BAR


@njit
def ingest(sym, ts, price, size, interval, fstart, fb, plan_i, plan_f, st, committed, provisional,
           counts, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_vals, dirty, d_list, stats):
    """Apply a batch of ticks. Returns (closed bars recorded, dirty symbols listed).

    ``c_*`` receive one record per closed bar (capacity >= len(sym)); ``d_list`` the slots whose forming
    bar changed, each with fresh provisional values. ``dirty`` is a per-slot scratch flag, left clear.
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
        stats[ST_TICKS] += 1
        start = ts[i] - ts[i] % interval
        cur = fstart[s]
        if cur != NO_BAR and start > cur:
            _close(s, fstart, fb, plan_i, plan_f, st, committed, counts, ht, hb, hhead, hcount,
                   c_slot, c_t, c_bar, c_vals, k)
            k += 1
            stats[ST_BARS] += 1
            cur = NO_BAR
        if cur == NO_BAR:
            fstart[s] = start
            fb[s, 0] = p
            fb[s, 1] = p
            fb[s, 2] = p
            fb[s, 3] = p
            fb[s, 4] = q
        elif start < cur:
            stats[ST_LATE] += 1
            fb[s, 4] += q
        else:
            if p > fb[s, 1]:
                fb[s, 1] = p
            if p < fb[s, 2]:
                fb[s, 2] = p
            fb[s, 3] = p
            fb[s, 4] += q
        if not dirty[s]:
            dirty[s] = True
            d_list[nd] = s
            nd += 1
    for j in range(nd):
        s = d_list[j]
        dirty[s] = False
        apply_bar(plan_i, plan_f, st, s, fb[s, 0], fb[s, 1], fb[s, 2], fb[s, 3], fb[s, 4], fstart[s],
                  False, provisional)
    return k, nd


@njit
def close_due(now, interval, fstart, fb, plan_i, plan_f, st, committed, counts, ht, hb, hhead, hcount,
              c_slot, c_t, c_bar, c_vals, stats):
    """Close every forming bar whose interval ended at or before ``now`` (a quiet symbol's last bar)."""
    k = 0
    for s in range(fstart.shape[0]):
        if k >= c_slot.shape[0]:
            break
        if fstart[s] != NO_BAR and fstart[s] + interval <= now:
            _close(s, fstart, fb, plan_i, plan_f, st, committed, counts, ht, hb, hhead, hcount,
                   c_slot, c_t, c_bar, c_vals, k)
            k += 1
            stats[ST_BARS] += 1
    return k

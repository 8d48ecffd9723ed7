"""Ticks to time bars: the compiled half of the engine's bar path (``engine.tick_engine`` runs it).

A symbol has at most one forming bar. A tick in a later interval closes it: the closed bar goes to the
history ring and to a record (``c_*``, and its o h l c v as columns in ``c_cols``); after the tick loop
the engine commits the batch's closed bars to every indicator (in order per symbol) through the bank's
``apply_bars``, recording a copy of the committed outputs at each close for the signal detector. The
bank's kernel is the one compiled for its set when there is one, else the plan interpreter: two
compiled calls per batch instead of one, so that the bars here compile once for every set.

A tick for an interval that has already closed (late or out of order) is not dropped: its size is added
to the forming bar and it is counted, but it cannot move a committed close. Intervals with no ticks
produce no bar, so a quiet symbol never costs work.

Provisional values are computed once per symbol per batch (for the symbols the batch touched, whose
forming bars ``build`` lists as columns in ``f_t``/``f_cols``), not per tick: nothing reads them between
batches, so per-tick previews would be pure waste.

History and live ticks take the same path; ``warm`` says which a batch is. A forming bar remembers
(``fwarm``) whether only history has gone into it, and each closed record says so (``c_warm``): the
bar that was forming when the live tape took over closes as a live bar, since live trades are in it,
while a history bar that the clock closes before any live trade arrives stays history.
"""

from __future__ import annotations

import numpy as np

from engine.history import push_bar
from engine.jit import njit
from engine.ticks import NO_BAR

# stats slots
ST_TICKS, ST_BARS, ST_LATE, ST_BAD = 0, 1, 2, 3


@njit
def _close(s, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_cols, c_warm, k):
    """Move the forming bar of ``s`` to history and to closed record ``k``."""
    t = fstart[s]
    push_bar(ht, hb, hhead, hcount, s, t, fb[s, 0], fb[s, 1], fb[s, 2], fb[s, 3], fb[s, 4])
    c_slot[k] = s
    c_t[k] = t
    c_warm[k] = fwarm[s]
    for j in range(5):
        c_bar[k, j] = fb[s, j]
        c_cols[j, k] = fb[s, j]
    fstart[s] = NO_BAR


@njit
def build(sym, ts, price, size, interval, warm, fstart, fb, fwarm, carry, ht, hb, hhead, hcount, c_slot, c_t,
          c_bar, c_cols, c_warm, dirty, d_list, f_t, f_cols, stats):
    """Build bars from a batch of ticks (history when ``warm``). Returns (closed bars recorded, dirty
    symbols listed).

    Closes go to history and to the ``c_*`` records; each symbol whose forming bar changed is listed
    once in ``d_list``, with its forming bar in ``f_t``/``f_cols`` for the provisional values. ``dirty``
    is scratch, left clear. ``carry`` holds, per symbol, the volume of late ticks that arrived while no
    bar was forming; the next bar that forms takes it, so no volume is lost and no closed bar is opened
    twice. History ticks are not counted in ``stats[ST_TICKS]``: that figure is the live tape's.
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
            _close(s, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_cols, c_warm, k)
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
    for j in range(nd):
        s = d_list[j]
        dirty[s] = False
        f_t[j] = fstart[s]
        for m in range(5):
            f_cols[m, j] = fb[s, m]
    return k, nd


@njit
def close_due(now, interval, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_cols, c_warm,
              stats):
    """Close every forming bar whose interval ended at or before ``now`` (a quiet symbol's last bar), at
    most as many as the records hold; returns how many closed."""
    k = 0
    for s in range(fstart.shape[0]):
        if k >= c_slot.shape[0]:
            break
        if fstart[s] != NO_BAR and fstart[s] + interval <= now:
            _close(s, fstart, fb, fwarm, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_cols, c_warm, k)
            k += 1
            stats[ST_BARS] += 1
    return k


@njit
def replay(s, first, n, ht, hb, hhead, hcount, c_slot, c_t, c_bar, c_cols):
    """Copy the ring bars ``first .. first + n - 1`` of ``s`` (0: the oldest held) into the closed records
    as a close would, for a refill to commit them to the indicators again.

    The same bars in the same order as when they closed: committed from reset state they rebuild the
    state bit for bit (instances are independent of each other and of other symbols, so how the bars
    were batched then does not matter)."""
    depth = ht.shape[1]
    oldest = hhead[s] - hcount[s] + depth  # >= 0, so the modulo below never sees a negative number
    for i in range(n):
        pos = (oldest + first + i) % depth
        c_slot[i] = s
        c_t[i] = ht[s, pos]
        for j in range(5):
            c_bar[i, j] = hb[s, pos, j]
            c_cols[j, i] = hb[s, pos, j]

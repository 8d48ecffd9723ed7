"""The compiled crossing evaluator: every record of a batch against every crossing, in one call.

The detector compiles rules into a table of crossings ("lines"): for each, the rule it belongs to,
where each operand comes from (an indicator output row of the values, a bar field, a constant, or the
slot's position: a row of ``pos``) and which directions may fire. State per (line, slot) is the
previous valid pair of operands; per (rule, slot) the bar time of the last fire. Fired crossings are
written to preallocated buffers; when a buffer could overflow the call stops before the next record and
says where to resume.
"""

from __future__ import annotations

import math

from engine.jit import njit

SRC_OUTPUT, SRC_FIELD, SRC_CONST, SRC_POSITION = 0, 1, 2, 3
DIR_UP, DIR_DOWN = 1, 2  # bit mask; both = 3
POS_AVERAGE, POS_QUANTITY, POS_STOP, POS_TARGET = 0, 1, 2, 3  # the rows of ``pos`` (NaN: none)
POS_ROWS = 4
POS_PNL_PCT = 4
"""Not a row: a position operand with this index is the unrealized P&L % at the record's close."""


@njit
def pnl_pct(close, average, quantity):
    """``100 * unrealized / |cost|`` (``engine.positions.valuation``'s formula, with cost = quantity *
    average); NaN without a position or a cost."""
    cost = quantity * average
    if math.isnan(cost) or cost == 0.0:
        return math.nan
    return 100.0 * (quantity * close - cost) / abs(cost)


@njit
def evaluate(start, slots, t, bars, values, lines, line_rule, a_src, a_idx, a_val, b_src, b_idx, b_val,
             dir_mask, flip_short, cooldown, sym_mask, pos, prev_a, prev_b, last_fire, has_fired,
             out_rec, out_line, out_dir, out_a, out_b):
    """Evaluate records ``start..`` against ``lines``; returns (fires written, next record to evaluate).

    Up: previous a <= previous b and now a > b. Down: previous a >= previous b and now a < b. A NaN on
    either side skips the record for that line without touching its previous values; the first valid
    pair only primes them. A fire at bar time t blocks the rule on that slot while t' - t < cooldown.
    A position operand reads ``pos[idx, slot]`` (or the P&L % for ``POS_PNL_PCT``); a line with
    ``flip_short`` set may fire only the other way when the slot's position is short (a short's stop is
    above the price: it fires on a cross up, and the signal says up).
    """
    n = 0
    room = out_rec.shape[0]
    nlines = lines.shape[0]
    k = slots.shape[0]
    j = start
    while j < k:
        if room - n < nlines:
            return n, j
        s = slots[j]
        tj = t[j]
        for q in range(nlines):
            ln = lines[q]
            r = line_rule[ln]
            if not sym_mask[r, s]:
                continue
            # operands written out here: a helper taking the arrays costs refcounting on every call
            src = a_src[ln]
            if src == SRC_OUTPUT:
                a = values[j, a_idx[ln]]
            elif src == SRC_FIELD:
                a = bars[j, a_idx[ln]]
            elif src == SRC_POSITION:
                if a_idx[ln] == POS_PNL_PCT:
                    a = pnl_pct(bars[j, 3], pos[POS_AVERAGE, s], pos[POS_QUANTITY, s])
                else:
                    a = pos[a_idx[ln], s]
            else:
                a = a_val[ln]
            src = b_src[ln]
            if src == SRC_OUTPUT:
                b = values[j, b_idx[ln]]
            elif src == SRC_FIELD:
                b = bars[j, b_idx[ln]]
            elif src == SRC_POSITION:
                if b_idx[ln] == POS_PNL_PCT:
                    b = pnl_pct(bars[j, 3], pos[POS_AVERAGE, s], pos[POS_QUANTITY, s])
                else:
                    b = pos[b_idx[ln], s]
            else:
                b = b_val[ln]
            if math.isnan(a) or math.isnan(b):
                continue
            pa = prev_a[ln, s]
            pb = prev_b[ln, s]
            prev_a[ln, s] = a
            prev_b[ln, s] = b
            if math.isnan(pa) or math.isnan(pb):
                continue
            d = 0
            if pa <= pb and a > b:
                d = DIR_UP
            elif pa >= pb and a < b:
                d = DIR_DOWN
            mask = dir_mask[ln]
            if flip_short[ln] and pos[POS_QUANTITY, s] < 0.0:
                mask = ((mask & DIR_UP) << 1) | ((mask & DIR_DOWN) >> 1)
            if d == 0 or (mask & d) == 0:
                continue
            if cooldown[r] > 0 and has_fired[r, s] and tj - last_fire[r, s] < cooldown[r]:
                continue
            has_fired[r, s] = True
            last_fire[r, s] = tj
            out_rec[n] = j
            out_line[n] = ln
            out_dir[n] = d
            out_a[n] = a
            out_b[n] = b
            n += 1
        j += 1
    return n, j

"""The simulated market's history: the bars before it goes live, drawn bar by bar, never trade by trade.

History must look like the live tape to the rules, or the first live bars are judged against a past
that never was (a volume z-score over sparse history fires on every symbol at the first live bar). So
each bar is drawn from the distributions the live tape implies at that time, at the configured rate
and bar interval, with no Python work per trade: the paths are a few arrays of bars x symbols, and the
bars themselves are drawn ``CHUNK`` at a time, when asked for:

- Trades per bar: the tape's expected count over the bar (``rate`` times the intraday profile, in
  trading time), whole as the live stream counts it, shared among symbols by a multinomial draw with the
  weights the live tape picks symbols by. A bar with no trade is no bar, as live.
- Volume: the sum of the bar's trade sizes (the power-law table, scaled by the symbol's lot and by the
  busyness of the moment, as live). The largest sizes, which make the heavy tail (and volume spikes),
  are drawn one by one: the top of the table, chosen so a bar expects at most ``TAIL_TRADES`` of them.
  The rest is bounded, so its sum is drawn from its normal limit (mean and variance from the table)
  once a bar has more than ``EXACT_TRADES`` of them, and trade by trade below that.
- Prices: the market, sector and own paths are walked bar by bar in trading time, with the regime
  chains and jumps as live, so closes (and returns, correlations, turbulence) are the live model's at
  bar resolution. Within a bar the first and last trade times are drawn as the first and last of n
  uniform arrivals, and the open and close are the path there (a Brownian bridge between the bar's
  ends), with the bid/ask bounce. The high and low are the bridge's extreme between them (drawn exactly
  for a continuous path), pulled in by how much a path sampled at n trades misses of it (Broadie,
  Glasserman and Kou's correction, 0.5826 steps), plus the bounce of the trade that printed it.

The sim's state ends at ``now`` as if the tape had run: paths, regimes, jump count, trade ids; the live
batches carry on from there. The bar forming at ``now`` is included, so the first live bar has all of
its volume, part history, part live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from engine.ticks import BAR_DTYPE

if TYPE_CHECKING:
    from engine.feeds.sim import SimFeed

TAIL_TRADES = 16.0  # expected trades per bar drawn one by one from the top of the size table
EXACT_TRADES = 16  # a bar with at most this many other trades draws them one by one too
SUBSTEPS = 8  # points per bar where the intraday profile (and so the trade size) is sampled
CHUNK = 65_536  # bars drawn (and handed to the engine) at a time: bounds the memory of each piece
_BGK = 0.5826  # -zeta(1/2) / sqrt(2 pi)
_LEAN = 0.7  # share of trades on the side of the move (the tape's 30 % against)


def history_bars(sim: SimFeed, now_ns: int, bars: int, bar_ns: int) -> np.ndarray:
    """``bars`` whole bars of ``bar_ns`` before the one forming at ``now_ns``, and that one up to
    ``now_ns``, as ``BAR_DTYPE`` in time order (symbols in universe order within a bar time).

    Must come before any live batch: it anchors the sim's session and paths, and leaves them at ``now_ns``.
    """
    chunks = list(history_chunks(sim, now_ns, bars, bar_ns))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=BAR_DTYPE)


def history_chunks(sim: SimFeed, now_ns: int, bars: int, bar_ns: int) -> Iterator[np.ndarray]:
    """``history_bars`` in time-ordered pieces of at most ``CHUNK`` bars, each drawn when asked for: the
    paths are walked (and the sim's state moved to ``now_ns``) before the first piece."""
    from engine.feeds.sim import _TRADE_SIZES, MARKET  # here: engine.feeds.sim imports this module

    if bars < 0 or bar_ns <= 0:
        raise ValueError(f"history needs bars >= 0 and a positive bar interval, got {bars}, {bar_ns} ns")
    if sim._origin is not None:
        raise RuntimeError("the sim's history must be drawn before its first live batch")
    now = int(now_ns)
    rng, k = sim.rng, len(sim.names)
    current = now - now % bar_ns
    edges = np.append(current - bar_ns * np.arange(bars, -1, -1, dtype=np.int64), now)
    origin = sim._start(int(edges[0]))
    lam = sim._trading_time(edges, origin)
    span = np.diff(lam)  # trading seconds in each bar
    nb = len(span)

    # trades: whole per bar as the stream counts them (a running total), shared by the pick weights
    total = np.diff(np.floor(np.r_[0.0, np.cumsum(sim.rate * span)])).astype(np.int64)
    counts = rng.multinomial(total, sim.weights)  # (bars, symbols)

    # regimes per bar, then the factor and own paths at the bar edges (jumps land in their bar)
    sim._advance_regimes(float(lam[-1]))
    mids = (lam[:-1] + lam[1:]) / 2.0
    mult = np.empty((nb, MARKET + 1))
    for chain in range(MARKET + 1):
        mult[:, chain] = sim._mult[sim._state_at(chain, mids).astype(np.intp)]
    root = np.sqrt(span)[:, None]
    factors = sim._walk(sim._f_level, rng.standard_normal((nb, MARKET + 1)) * root * mult)
    own_mult = mult[:, sim._sec]  # a turbulent sector scales its names' own noise too
    steps = rng.standard_normal((nb, k)) * root * sim._own * own_mult
    if n_jumps := int(rng.poisson(sim._jump_rate * k * max(float(lam[-1] - lam[0]), 0.0))):
        j_sym = rng.integers(0, k, n_jumps)
        j_size = np.clip(rng.standard_t(3, n_jumps) * sim._jump_scale[j_sym], -0.3, 0.3)
        j_bar = np.clip(np.searchsorted(lam, lam[0] + rng.random(n_jumps) * (lam[-1] - lam[0]),
                                        side="right") - 1, 0, nb - 1)
        np.add.at(steps, (j_bar, j_sym), j_size)
        sim.jumps += n_jumps
    own = sim._walk(sim._o_level, steps)
    level = sim._base + sim._beta * factors[:, MARKET:] + sim._gamma * factors[:, sim._sec] + own
    # variance per trading second of each symbol's whole path, per bar
    rate_var = (sim._beta**2 * mult[:, MARKET:] ** 2 + (sim._gamma**2 + sim._own**2) * own_mult**2)

    # how busy the tape is through each bar (trade sizes grow with the square root of the intensity)
    at = lam[:-1, None] + span[:, None] * ((np.arange(SUBSTEPS) + 0.5) / SUBSTEPS)
    busy = np.sqrt(sim.profile(origin + np.round(sim._clock_time(at, origin)).astype(np.int64)))

    sizes = _TRADE_SIZES.astype(np.float64)
    cum1, cum2 = np.r_[0.0, np.cumsum(sizes)], np.r_[0.0, np.cumsum(sizes**2)]
    cells = np.flatnonzero(counts)  # bars with at least one trade, bar-major
    sim._f_level, sim._f_lam = factors[-1].copy(), float(lam[-1])
    sim._o_level, sim._o_lam = own[-1].copy(), np.full(k, float(lam[-1]))
    sim.trade_id += int(total.sum())
    for lo in range(0, len(cells), CHUNK):
        cell = cells[lo : lo + CHUNK]
        b, s = cell // k, cell % k
        n = counts.ravel()[cell]
        var = rate_var[b, s] * span[b]
        logs = _prices(rng, n, level[b, s], level[b + 1, s], var, sim._half_spread[s])
        volume = _volume(rng, n, sim._lot[s].astype(np.float64), busy[b], sizes, cum1, cum2)
        chunk = np.empty(len(cell), dtype=BAR_DTYPE)
        chunk["sym"] = sim.slots[s]
        chunk["t"] = edges[b]
        for name, x in zip(("open", "high", "low", "close"), logs, strict=True):
            price = np.exp(x)
            rounded = np.round(price, 4)
            small = rounded < 1.0  # as the live tape prints a penny stock
            rounded[small] = np.maximum(np.round(price[small], 8), 1e-8)
            chunk[name] = rounded
        chunk["volume"] = volume
        chunk["trades"] = n
        yield chunk


def _prices(rng: np.random.Generator, n: np.ndarray, start: np.ndarray, end: np.ndarray, var: np.ndarray,
            half_spread: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log open, high, low and close of bars of ``n`` trades whose mid path runs from ``start`` to
    ``end`` with variance ``var`` over the bar (see the module docstring)."""
    m = len(n)
    u = rng.random((4, m))
    with np.errstate(divide="ignore"):
        last = u[0] ** (1.0 / n)  # the latest of n uniform arrivals, as a share of the bar
        first = last * (1.0 - u[1] ** (1.0 / np.maximum(n - 1, 0)))  # the earliest (n = 1: the same)
    z = rng.standard_normal((2, m))
    x1 = start + first * (end - start) + np.sqrt(var * first * (1.0 - first)) * z[0]
    rest = np.maximum(1.0 - first, 1e-300)
    x2 = (x1 + (last - first) / rest * (end - x1)
          + np.sqrt(np.maximum(var * (last - first) * (1.0 - last) / rest, 0.0)) * z[1])
    side_open = np.where(u[2] < 0.5, 1.0, -1.0)  # buyer or seller, as likely (a move's sign is too)
    side_close = np.where(n == 1, side_open, np.where(u[3] < 0.5, 1.0, -1.0))
    log_open, log_close = x1 + side_open * half_spread, x2 + side_close * half_spread
    # the extremes between the first and the last trade (only n >= 3 has a trade in between)
    between = var * (last - first)
    step = np.sqrt(between / np.maximum(n - 1, 1))
    reach = np.sqrt((x2 - x1) ** 2 - 2.0 * between * np.log1p(-rng.random((2, m))))
    top = (x1 + x2 + reach[0]) / 2.0 - _BGK * step
    bottom = (x1 + x2 - reach[1]) / 2.0 + _BGK * step
    # the trade at an extreme leans with the move into it, and when the path dwells near its extreme
    # for several trades (steps small against the spread) one of them is almost surely on that side
    near = 1.0 + half_spread / np.maximum(step, 1e-12)
    with_move = 1.0 - (1.0 - _LEAN) ** near
    side = np.where(rng.random((2, m)) < with_move, 1.0, -1.0)
    inner = n >= 3
    log_high = np.maximum(log_open, log_close)
    log_low = np.minimum(log_open, log_close)
    log_high = np.where(inner, np.maximum(log_high, top + side[0] * half_spread), log_high)
    log_low = np.where(inner, np.minimum(log_low, bottom - side[1] * half_spread), log_low)
    return log_open, log_high, log_low, log_close


def _volume(rng: np.random.Generator, n: np.ndarray, lot: np.ndarray, busy: np.ndarray, sizes: np.ndarray,
            cum1: np.ndarray, cum2: np.ndarray) -> np.ndarray:
    """The summed sizes of bars of ``n`` trades (``busy``: the profile's square root at each bar's
    ``SUBSTEPS`` points; ``sizes`` the sorted table, ``cum1``/``cum2`` its running sums and squares)."""
    table = len(sizes)
    tail = np.clip(np.floor(table * np.minimum(1.0 / 16.0, TAIL_TRADES / n)), 1, table // 16).astype(np.int64)
    n_tail = rng.binomial(n, tail / table)
    n_body = n - n_tail
    body = table - tail
    exact = n_body <= EXACT_TRADES
    # one by one: every tail trade, and the body trades of bars with few of them
    volume = np.zeros(len(n))
    flat_busy, per = busy.ravel(), busy.shape[1]
    for count, top in ((n_tail, True), (np.where(exact, n_body, 0), False)):
        owner = np.repeat(np.arange(len(n)), count)
        u = rng.random(len(owner))
        pick = np.floor(u * (tail if top else body)[owner]).astype(np.intp)
        index = table - 1 - pick if top else pick  # the tail is the top of the sorted table
        moment = flat_busy[owner * per + rng.integers(0, per, len(owner))]
        one = np.maximum(np.round(lot[owner] * sizes[index] * moment), 1.0)
        volume += np.bincount(owner, weights=one, minlength=len(n))
    # the rest of the body: its normal limit (each trade at least one lot unit)
    many = ~exact
    if many.any():
        nb, bb = n_body[many].astype(np.float64), body[many]
        mean1, mean2 = cum1[bb] / bb, cum2[bb] / bb
        m1, m2 = busy[many].mean(axis=1), (busy[many] ** 2).mean(axis=1)
        scale = lot[many]
        mean = nb * scale * m1 * mean1
        sd = np.sqrt(nb * (scale**2 * (m2 * mean2 - (m1 * mean1) ** 2) + 1.0 / 12.0))
        volume[many] += np.maximum(np.round(mean + sd * rng.standard_normal(len(nb))), nb)
    return volume

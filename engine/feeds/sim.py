"""The built-in simulated market: deterministic for a seed, no network, from a few ticks a second to
hundreds of thousands.

It is the default market, so it should look like one to the indicators, the signals and the eye:

- Names: the well-known tickers first, then pronounceable inventions; every symbol has a sector.
- The day: a trading session of ``day_s`` seconds (NYSE's 6.5 hours by default) repeats back to back,
  anchored at the epoch, so the market is always open. Trades arrive with a U-shaped intraday intensity
  (busy at the open and the close, quiet at lunch) and are larger when it is busy.
- Prices: log-prices are Brownian in *trading time* (the cumulative intraday intensity), so volatility
  is U-shaped too, and how far a price moves over an interval does not depend on how many trades print
  in it: the tape rate changes how often we look at the path, not the path. Each move is market factor
  + sector factor + the symbol's own noise, so names in one sector move together more than across.
- Regimes: the market and each sector switch between calm and turbulent (a two-state continuous-time
  Markov chain). A turbulent market scales the market factor; a turbulent sector scales its factor and
  its names' own noise. Calm volatility is scaled down so each symbol keeps its annual volatility over
  the long run.
- Jumps: rare, Poisson in trading time per symbol, Student-t (fat-tailed) in size.

- The tape: buyers lift the offer and sellers hit the bid (a bounce of a few basis points, wider for
  quieter names); most trades lean with the move; sizes are power-law tailed.

All of it is generated a batch at a time with numpy, never in Python per tick: factor paths on a grid of
nodes in trading time, each symbol's own path either on the same grid (busy batches: a tick interpolates
it) or stepped trade by trade with a grouped cumulative sum (quiet batches); regime chains advance switch
by switch, a few times an hour.

History (``backfill`` bars before the first live batch) is drawn bar by bar from the same model
(``engine.feeds.sim_history``), so it is statistically the live tape at bar resolution, and handed to
the engine as ``HistoryBars``: it warms the indicators, and its signals are marked as warm-up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np

from engine.feeds.base import Feed, FeedItem, FeedStatus, HistoryBars
from engine.feeds.sim_history import history_bars, history_chunks
from engine.ticks import TICK_DTYPE, SymbolTable

SECTORS = ("Technology", "Communication", "Consumer Discretionary", "Consumer Staples", "Energy",
           "Financials", "Health Care", "Industrials", "Materials", "Real Estate", "Utilities", "Crypto")
MARKET = len(SECTORS)  # index of the market's regime chain, after one chain per sector
_CRYPTO = SECTORS.index("Crypto")
_KNOWN_SECTORS = {
    "Technology": "AAPL MSFT NVDA AVGO ADBE CRM AMD INTC CSCO ORCL QCOM TXN IBM PLTR SNOW SHOP ACN NOW "
                  "INTU MU AMAT LRCX",
    "Communication": "GOOGL META NFLX DIS T VZ CMCSA TMUS",
    "Consumer Discretionary": "AMZN TSLA HD NKE MCD SBUX UBER ABNB LOW TGT BKNG",
    "Consumer Staples": "WMT PG KO PEP COST MO PM CL",
    "Energy": "XOM CVX COP SLB EOG",
    "Financials": "BRK.B JPM V MA GS MS BAC WFC C SQ PYPL COIN AXP BLK SCHW",
    "Health Care": "UNH JNJ MRK ABBV PFE LLY TMO ABT AMGN",
    "Industrials": "BA CAT GE UNP HON UPS LMT RTX DE",
    "Materials": "LIN SHW FCX NEM",
    "Real Estate": "PLD AMT EQIX",
    "Utilities": "NEE DUK SO",
    "Crypto": "BTC-USD ETH-USD SOL-USD",
}
SECTOR_OF = {name: SECTORS.index(s) for s, names in _KNOWN_SECTORS.items() for name in names.split()}
# the order of the first 60 is the order the default universe has always had
TICKERS = tuple((
    "AAPL MSFT NVDA AMZN GOOGL META TSLA BRK.B JPM V UNH XOM JNJ WMT MA PG AVGO HD CVX MRK ABBV KO PEP "
    "COST ADBE CRM NFLX AMD INTC CSCO ORCL QCOM TXN IBM BA CAT GE GS MS BAC WFC C DIS NKE MCD SBUX PFE "
    "T VZ UBER ABNB SHOP SQ PYPL PLTR SNOW COIN BTC-USD ETH-USD SOL-USD LLY TMO ABT AMGN NEE DUK SO PLD "
    "AMT EQIX LIN SHW FCX NEM UNP HON UPS LMT RTX DE COP SLB EOG LOW TGT BKNG MO PM CL AXP BLK SCHW "
    "CMCSA TMUS ACN NOW INTU MU AMAT LRCX"
).split())
# invented names get a sector with about the weight sectors have in a broad equity index
_INVENTED_SECTOR_WEIGHTS = np.array([0.20, 0.08, 0.10, 0.06, 0.05, 0.13, 0.12, 0.11, 0.05, 0.05, 0.05, 0.0])
_ONSETS = ("B C D F G H J K L M N P R S T V W Z BR CR DR FL GR KL PR ST TR SK").split()
_VOWELS = ("A", "E", "I", "O", "U", "A", "E", "O")
_CODAS = ("", "", "", "", "N", "R", "S", "X", "L", "T", "K", "M")

# Intraday intensity over the session, u in [0, 1]: a baseline plus decaying bursts after the open and
# before the close; normalised to mean 1 so ``rate`` stays the average tick rate.
_GRID = np.linspace(0.0, 1.0, 4097)
_RAW = 1.0 + 2.5 * np.exp(-_GRID / 0.06) + 1.8 * np.exp(-(1.0 - _GRID) / 0.06)
_CUM = np.r_[0.0, np.cumsum((_RAW[1:] + _RAW[:-1]) / 2.0)]
DENSITY = _RAW * (len(_GRID) - 1) / _CUM[-1]  # intensity relative to the day's mean
_CUM /= _CUM[-1]  # share of the day's trading time elapsed by u
_NO_JUMPS = (np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0))  # symbols, trading times, log sizes
# trade sizes in lots, power-law tailed (as on real tapes), for 16 random bits
_TRADE_SIZES = ((np.arange(65536, 0, -1, dtype=np.float32) / np.float32(65536)) ** np.float32(-0.6))


def universe(n: int, seed: int) -> list[str]:
    """``n`` distinct ticker-like names: the well-known ones first, then pronounceable inventions."""
    names = list(TICKERS[:n])
    seen = set(names)
    rng = np.random.default_rng(seed)
    while len(names) < n:
        for name in _inventions(rng, 2 * (n - len(names)) + 16):
            if name not in seen:
                seen.add(name)
                names.append(name)
                if len(names) == n:
                    break
    return names


def _inventions(rng: np.random.Generator, m: int) -> list[str]:
    """``m`` candidate names of 3 to 5 letters: one or two consonant-vowel syllables and an optional
    ending (``BRAX``, ``TOKEN``, ``MIRO``); a few may repeat or be too long, and the caller skips them."""
    o1, o2 = rng.integers(0, len(_ONSETS), (2, m))
    v1, v2 = rng.integers(0, len(_VOWELS), (2, m))
    coda = rng.integers(0, len(_CODAS), m)
    two = rng.random(m) < 0.6
    out = []
    for i in range(m):
        name = _ONSETS[o1[i]] + _VOWELS[v1[i]]
        if two[i]:
            name += _ONSETS[o2[i]] + _VOWELS[v2[i]]
        name += _CODAS[coda[i]]
        if 3 <= len(name) <= 5:
            out.append(name)
    return out


def sector_ids(names: Sequence[str], seed: int) -> np.ndarray:
    """Index into ``SECTORS`` per name: the real sector of a known ticker, a seeded draw for the rest."""
    rng = np.random.default_rng([seed, 1])
    drawn = rng.choice(len(SECTORS), size=len(names), p=_INVENTED_SECTOR_WEIGHTS)
    return np.array([SECTOR_OF.get(name, d) for name, d in zip(names, drawn, strict=True)], dtype=np.int16)


def _grouped_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``x`` restarting wherever ``first`` is set (``x`` sorted by group)."""
    c = np.cumsum(x)
    starts = np.flatnonzero(first)
    before = c[starts] - x[starts]
    return c - np.repeat(before, np.diff(np.r_[starts, len(x)]))


class SimFeed(Feed):
    """The simulated market (the model is in the module docstring).

    ``rate`` is the average ticks per second over a trading day; the actual rate follows the intraday
    profile. Volatilities are annual over 252 sessions of ``day_s`` trading seconds. ``turbulence`` is
    how much more volatile a turbulent spell is than a calm one; ``calm_s`` and ``turbulent_s`` are the
    mean lengths of the spells in trading seconds; ``jumps_per_day`` is per symbol, and ``jump_size`` the
    typical jump of a symbol of 35 % annual volatility (scaled with each symbol's volatility).
    ``backfill`` is how many bars of ``bar_ns`` history the stream hands over before going live.
    """

    closed_universe = True

    name = "sim"

    def __init__(self, symbols: SymbolTable, n_symbols: int = 40, seed: int = 7, rate: float = 200.0,
                 batch_hz: float = 20.0, backfill: int = 0, bar_ns: int = 60 * 10**9, *,
                 day_s: float = 23_400.0, turbulence: float = 2.5, calm_s: float = 5_400.0,
                 turbulent_s: float = 1_200.0, jumps_per_day: float = 0.1, jump_size: float = 0.02) -> None:
        super().__init__(symbols)
        if not 1 <= n_symbols <= 5000:
            raise ValueError(f"sim symbols must be between 1 and 5000, got {n_symbols}")
        for label, value in (("rate", rate), ("batch_hz", batch_hz), ("calm_s", calm_s),
                             ("turbulent_s", turbulent_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"sim {label} must be a positive number, got {value}")
        if backfill < 0 or bar_ns <= 0:
            raise ValueError(f"sim backfill must be >= 0 bars of a positive interval, got {backfill} bars "
                             f"of {bar_ns} ns")
        if not 60.0 <= day_s <= 86_400.0:
            raise ValueError(f"sim day_s must be between 60 and 86400 seconds, got {day_s}")
        if not (turbulence >= 1.0 and jumps_per_day >= 0.0 and jump_size >= 0.0):
            raise ValueError("sim turbulence must be at least 1, jumps_per_day and jump_size at least 0; "
                             f"got {turbulence}, {jumps_per_day}, {jump_size}")
        self.names = universe(n_symbols, seed)
        self.slots = np.array([symbols.slot(n) for n in self.names], dtype=np.int32)
        self.rate = rate
        self.batch_hz = batch_hz
        self.backfill_bars = int(backfill)
        self.bar_ns = int(bar_ns)
        self.day_s = float(day_s)
        self._day_ns = round(float(day_s) * 1e9)
        self.rng = rng = np.random.default_rng(seed)
        k = len(self.names)
        self.sector_ids = sector_ids(self.names, seed)
        self._sec = self.sector_ids.astype(np.intp)
        crypto = self.sector_ids == _CRYPTO
        price = np.exp(rng.uniform(np.log(5.0), np.log(900.0), k))
        equity_sigma = np.exp(rng.uniform(np.log(0.15), np.log(0.7), k))
        self.sigma = np.where(crypto, rng.uniform(0.6, 1.0, k), equity_sigma)
        # shares of each symbol's variance: market, sector, its own (crypto barely follows equities)
        w_market = np.where(crypto, 0.05, rng.uniform(0.2, 0.45, k))
        w_sector = np.where(crypto, 0.6, rng.uniform(0.15, 0.35, k))
        per_s = self.sigma / math.sqrt(252.0 * self.day_s)  # volatility per sqrt(trading second)
        self._beta = per_s * np.sqrt(w_market)
        self._gamma = per_s * np.sqrt(w_sector)
        self._own = per_s * np.sqrt(1.0 - w_market - w_sector)
        self._jump_rate = jumps_per_day / self.day_s
        self._jump_scale = jump_size * self.sigma / 0.35
        self._base = np.log(price)
        # cheap names trade in bigger lots
        self._lot = np.clip(np.round(20.0 * np.sqrt(100.0 / price)), 1.0, 500.0).astype(np.float32)
        rank = np.arange(k)
        self._half_spread = 1e-4 * (0.5 + 4.5 * rank / max(k - 1, 1))  # busy names have tighter quotes
        self._pick, self.weights = _pick_table(1.0 / (rank + 1.0) ** 0.8)  # a few names trade far more
        self.trade_id = 0
        self.jumps = 0  # jumps generated so far, across symbols
        # regimes: one chain per sector and one for the market (index MARKET)
        share = turbulent_s / (calm_s + turbulent_s)
        calm = 1.0 / math.sqrt(1.0 - share + turbulence**2 * share)
        self._mult = np.array([calm, calm * turbulence])
        self._hold = np.array([calm_s, turbulent_s])
        self._turbulent = rng.random(MARKET + 1) < share
        self._first_state = self._turbulent.copy()  # each chain's state before its first switch on record
        self._switches: list[list[float]] = [[] for _ in range(MARKET + 1)]
        self._switch_arrays: list[np.ndarray | None] = [None] * (MARKET + 1)
        self._next_switch = np.full(MARKET + 1, np.inf)
        self._latest_switch = -np.inf
        # paths in trading seconds since ``_origin``, the session start before the first batch: factor
        # levels (sectors, then market) at ``_f_lam``; each symbol's own path at its own ``_o_lam``
        self._origin: int | None = None
        self._f_level, self._f_lam = np.zeros(MARKET + 1), 0.0
        self._o_level, self._o_lam = np.zeros(k), np.zeros(k)

    @property
    def price(self) -> np.ndarray:
        """Each symbol's current mid price."""
        f = self._f_level
        return np.exp(self._base + self._beta * f[MARKET] + self._gamma * f[self._sec] + self._o_level)

    def universe(self) -> tuple[str, ...]:
        return tuple(self.names)

    def sector(self, name: str) -> str:
        return SECTORS[int(self.sector_ids[self.names.index(name)])]

    def profile(self, ts_ns: np.ndarray) -> np.ndarray:
        """Intraday trade intensity at ``ts_ns``, relative to the day's mean (U-shaped)."""
        u = (np.asarray(ts_ns, dtype=np.int64) % self._day_ns) / self._day_ns
        return np.interp(u, _GRID, DENSITY)

    def expected_ticks(self, t0_ns: int, t1_ns: int) -> float:
        """Ticks the tape carries on average between two times: ``rate`` scaled by the intraday profile."""
        origin = self._origin if self._origin is not None else t0_ns - t0_ns % self._day_ns
        lam0, lam1 = self._trading_time(np.array([t0_ns, t1_ns], dtype=np.int64), origin)
        return self.rate * max(lam1 - lam0, 0.0)

    def regimes_at(self, ts_ns: np.ndarray) -> np.ndarray:
        """Whether each chain (``SECTORS``, then the market) was turbulent at each time: shape
        (len, 13); meaningful up to the time generated so far."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        out = np.empty((len(ts), MARKET + 1), dtype=bool)
        if self._origin is None:
            out[:] = self._first_state
            return out
        lam = self._trading_time(ts, self._origin)
        for chain in range(MARKET + 1):
            out[:, chain] = self._state_at(chain, lam)
        return out

    def _trading_time(self, ts: np.ndarray, origin: int) -> np.ndarray:
        """Seconds of average-intensity trading time since ``origin`` (a session start)."""
        day, within = np.divmod(ts - origin, self._day_ns)
        return (day + np.interp(within / self._day_ns, _GRID, _CUM)) * self.day_s

    def _clock_time(self, lam: np.ndarray, origin: int) -> np.ndarray:
        """The inverse of ``_trading_time``, in ns, as float offsets from ``origin``."""
        x = lam / self.day_s
        day = np.floor(x)
        return (day + np.interp(x - day, _CUM, _GRID)) * self._day_ns

    def _state_at(self, chain: int, lam: np.ndarray) -> np.ndarray:
        switches = self._switch_arrays[chain]
        if switches is None:
            switches = self._switch_arrays[chain] = np.array(self._switches[chain])
        flips = np.searchsorted(switches, lam, side="right")
        return (flips & 1).astype(bool) ^ self._first_state[chain]

    def _advance_regimes(self, lam1: float) -> None:
        """Run every chain up to ``lam1``: switch by switch, all due chains at once."""
        while (due := np.flatnonzero(self._next_switch <= lam1)).size:
            for chain in due:
                record = self._switches[chain]
                record.append(float(self._next_switch[chain]))
                if len(record) > 4096:  # keep recent history; an even count dropped keeps the states
                    del record[:2048]
                self._switch_arrays[chain] = None
            self._turbulent[due] ^= True
            self._latest_switch = max(self._latest_switch, float(self._next_switch[due].max()))
            holds = self._hold[self._turbulent[due].astype(np.intp)]
            self._next_switch[due] += self.rng.standard_exponential(len(due)) * holds

    def _start(self, t0: int) -> int:
        """Anchor trading time at the session holding the first batch; every path starts there."""
        if self._origin is None:
            self._origin = t0 - t0 % self._day_ns
            lam0 = float(self._trading_time(np.array([t0], dtype=np.int64), self._origin)[0])
            self._f_lam = lam0
            self._o_lam[:] = lam0
            holds = self._hold[self._turbulent.astype(np.intp)]
            self._next_switch = lam0 + self.rng.standard_exponential(MARKET + 1) * holds
        return self._origin

    def next_batch(self, n: int, now_ns: int, dt_s: float, vol_scale: float = 1.0) -> np.ndarray:
        """``n`` ticks over the ``dt_s`` seconds ending at ``now_ns``, in time order (no Python per tick).

        Paths are drawn on a grid of nodes in trading time (at most a second apart) and ticks sample
        them. When the batch is dense (at least two ticks per symbol and node) each symbol's own path
        lives on the grid too and a tick interpolates it: a few array operations per tick. Otherwise
        each tick steps its symbol's own path from that symbol's previous trade (a grouped cumulative
        sum). A window that reaches back before earlier ticks adds no movement for the overlap.
        """
        n = max(int(n), 0)
        ticks = np.empty(n, dtype=TICK_DTYPE)  # every field is written below
        if n == 0:
            return ticks
        rng, t1, k = self.rng, int(now_ns), len(self.names)
        t0 = t1 - max(round(float(dt_s) * 1e9), 0)
        origin = self._start(t0)
        lam0, lam1 = (float(x) for x in self._trading_time(np.array([t0, t1], dtype=np.int64), origin))
        # nodes at most a trading second apart, or closer when there are plenty of ticks to sample them
        cells = int(min(max(math.ceil(lam1 - lam0), n // (4 * max(k, MARKET + 1)), 1), max(n // 16, 16)))
        width = (lam1 - lam0) / cells
        nodes = lam0 + width * np.arange(cells + 1)
        arrivals = np.cumsum(rng.standard_exponential(n + 1))  # sorted uniform arrivals in trading time
        share = arrivals[:-1] / arrivals[-1]
        if t1 - t0 <= 1_000_000_000:  # within a second the clock runs at a constant rate
            ts = t0 + (share * (t1 - t0)).astype(np.int64)
            busy: np.ndarray | float = math.sqrt(float(self.profile(np.array([(t0 + t1) // 2]))[0]))
        else:
            clock = self._clock_time(lam0 + share * (lam1 - lam0), origin)
            ts = np.clip(np.maximum.accumulate(origin + np.round(clock).astype(np.int64)), t0, t1)
            busy = np.sqrt(self.profile(ts)).astype(np.float32)
        if cells == 1:
            pos, cell, frac = share, np.zeros(n, dtype=np.intp), share
        else:
            pos = share * cells
            cell = np.minimum(pos.astype(np.intp), cells - 1)
            frac = pos - cell
        raw = rng.bit_generator.random_raw(n)
        bits = raw.view(np.uint16)  # four independent 16-bit draws per tick
        idx = self._pick[bits[3::4].astype(np.intp)]  # intp: the fast gathers

        # regimes and factors on the nodes; jumps over the time since the factors last moved
        self._advance_regimes(max(lam1, self._f_lam))
        if self._latest_switch < nodes[0]:  # nothing switched within the batch: one row for all cells
            mult = (self._mult[self._turbulent.astype(np.intp)] * vol_scale)[None, :]
        else:
            mids = nodes[:-1] + width / 2.0
            mult = np.empty((cells, MARKET + 1))
            for chain in range(MARKET + 1):
                mult[:, chain] = self._mult[self._state_at(chain, mids).astype(np.intp)] * vol_scale
        lo = np.concatenate(([-np.inf], nodes[1:-1]))  # the first cell also covers any gap since
        span = np.maximum(nodes[1:] - np.maximum(lo, self._f_lam), 0.0)  # the last batch
        factors = self._walk(self._f_level, rng.standard_normal((cells, MARKET + 1))
                             * (np.sqrt(span)[:, None] * mult))
        elapsed = max(lam1 - self._f_lam, 0.0)
        jumps = _NO_JUMPS
        if n_jumps := int(rng.poisson(self._jump_rate * k * elapsed)):
            j_sym = rng.integers(0, k, n_jumps)
            j_size = np.clip(rng.standard_t(3, n_jumps) * self._jump_scale[j_sym], -0.3, 0.3)
            jumps = (j_sym, lam1 - rng.random(n_jumps) * elapsed, j_size)
            self.jumps += n_jumps
        self._f_level, self._f_lam = factors[-1].copy(), max(self._f_lam, lam1)

        if k * cells * 2 <= n:
            logp, up = self._dense(idx, cell, frac, nodes, lo, factors, mult, rng, jumps)
        else:
            logp, up = self._sparse(idx, cell, frac, lam0 + pos * width, factors, mult, rng, jumps)
        side = np.where(up != (raw.view(np.uint8)[::8] < 77), np.int8(1), np.int8(-1))  # 30 % against
        price = np.exp(logp + side * self._half_spread[idx])  # buyers lift the offer, sellers hit the bid
        rounded = np.round(price, 4)
        if (small := rounded < 1.0).any():  # a penny stock keeps more decimals
            rounded[small] = np.maximum(np.round(price[small], 8), 1e-8)
        ticks["price"] = rounded
        ticks["side"] = side
        ticks["sym"] = self.slots[idx]
        ticks["ts"] = ts
        ticks["recv"] = t1
        # sizes: power-law tailed, larger when the tape is busy
        size = np.round(self._lot[idx] * _TRADE_SIZES[bits[1::4].astype(np.intp)] * busy)
        ticks["size"] = np.maximum(size, np.float32(1.0))
        ticks["trade_id"] = np.arange(self.trade_id, self.trade_id + n)
        self.trade_id += n
        return ticks

    def _walk(self, level: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Paths from ``level`` through ``steps`` (one row per cell): the values at every node."""
        out = np.empty((len(steps) + 1, *level.shape))
        out[0] = level
        np.cumsum(steps, axis=0, out=out[1:])
        out[1:] += level
        return out

    def _dense(self, idx: np.ndarray, cell: np.ndarray, frac: np.ndarray, nodes: np.ndarray,
               lo: np.ndarray, factors: np.ndarray, mult: np.ndarray, rng: np.random.Generator,
               jumps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Log-prices when every symbol's own path lives on the nodes: ticks interpolate one grid."""
        k, cells = len(self.names), len(nodes) - 1
        span = np.maximum(nodes[1:, None] - np.maximum(lo[:, None], self._o_lam), 0.0)
        steps = rng.standard_normal((cells, k)) * np.sqrt(span) * (self._own * mult[:, self._sec])
        j_sym, j_lam, j_size = jumps
        if len(j_sym):
            j_cell = np.clip(np.searchsorted(nodes, j_lam, side="right") - 1, 0, cells - 1)
            np.add.at(steps, (j_cell, j_sym), j_size)
        own = self._walk(self._o_level, steps)
        self._o_level, self._o_lam = own[-1].copy(), np.maximum(self._o_lam, nodes[-1])
        grid = self._base + self._beta * factors[:, MARKET:] + self._gamma * factors[:, self._sec] + own
        at = cell * k + idx if cells > 1 else idx
        start, move = grid[:-1].ravel()[at], np.diff(grid, axis=0).ravel()[at]
        return start + frac * move, move > 0

    def _sparse(self, idx: np.ndarray, cell: np.ndarray, frac: np.ndarray, lam: np.ndarray,
                factors: np.ndarray, mult: np.ndarray, rng: np.random.Generator,
                jumps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Log-prices when each tick steps its symbol's own path from that symbol's previous trade."""
        n, m = len(idx), MARKET + 1
        flat, at = factors.ravel(), cell * m
        at_sector = at + self._sec[idx]
        market = flat[at + MARKET] + frac * (flat[at + m + MARKET] - flat[at + MARKET])
        sector = flat[at_sector] + frac * (flat[at_sector + m] - flat[at_sector])
        own_mult = mult.ravel()[at_sector] if len(mult) > 1 else mult[0, self._sec[idx]]
        order = np.argsort(idx.astype(np.int16), kind="stable")  # 16-bit keys: radix sort, time order kept
        sym, olam = idx[order], lam[order]
        first = np.empty(n, dtype=bool)
        first[0], first[1:] = True, sym[1:] != sym[:-1]
        last = np.append(first[1:], True)
        prev = np.empty(n)
        prev[1:] = olam[:-1]
        prev[first] = self._o_lam[sym[first]]
        steps = np.sqrt(np.maximum(olam - prev, 0.0)) * self._own[sym] * own_mult[order]
        steps *= rng.standard_normal(n)
        j_sym, j_lam, j_size = jumps
        pending = np.ones(len(j_sym), dtype=bool)
        if len(j_sym):  # each jump lands on its symbol's first trade after it, if there is one
            low = min(float(olam.min()), float(j_lam.min()))
            scale = 0.5 / (max(float(olam.max()), float(j_lam.max())) - low + 1.0)  # time within a symbol
            hit = np.searchsorted(sym + (olam - low) * scale, j_sym + (j_lam - low) * scale)
            pending = hit >= n
            pending[~pending] = sym[hit[~pending]] != j_sym[~pending]
            np.add.at(steps, hit[~pending], j_size[~pending])
        path = self._o_level[sym] + _grouped_cumsum(steps, first)
        done = sym[last]
        self._o_level[done], self._o_lam[done] = path[last], np.maximum(self._o_lam[done], olam[last])
        np.add.at(self._o_level, j_sym[pending], j_size[pending])  # seen at the symbol's next trade
        own, up = np.empty(n), np.empty(n, dtype=bool)
        own[order], up[order] = path, steps > 0
        return self._base[idx] + self._beta[idx] * market + self._gamma[idx] * sector + own, up

    def backfill(self, now_ns: int) -> np.ndarray:
        """``backfill`` bars of history up to ``now_ns`` (``BAR_DTYPE``), so charts and indicators start
        warm; drawn from the live model bar by bar (``engine.feeds.sim_history``), before any live batch."""
        return history_bars(self, now_ns, self.backfill_bars, self.bar_ns)

    async def stream(self) -> AsyncIterator[FeedItem]:
        yield FeedStatus(self.name, "live")
        now_ns, last = time.time_ns(), time.monotonic()  # the live tape takes over from the history here
        if self.backfill_bars > 0:
            # in pieces, so the engine takes them in turn with frames between; each drawn in a thread
            # (thousands of symbols take longer than a frame to draw)
            pieces = history_chunks(self, now_ns, self.backfill_bars, self.bar_ns)
            while (bars := await asyncio.to_thread(next, pieces, None)) is not None:
                self.counters.messages += 1
                yield HistoryBars(bars)
        period = 1.0 / self.batch_hz
        carry = 0.0
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            dt, last = now - last, now
            now_ns = time.time_ns()
            carry += self.expected_ticks(now_ns - int(dt * 1e9), now_ns)  # the intraday profile's rate
            n = int(carry)
            carry -= n
            if n:
                yield self._counted(self.next_batch(n, now_ns, dt))

    def _counted(self, batch: np.ndarray) -> np.ndarray:
        self.counters.messages += 1
        self.counters.ticks += len(batch)
        return batch


def _pick_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A table of 65,536 symbol indices in proportion to ``weights`` (each symbol at least once), so 16
    random bits pick a symbol; and the shares the table actually gives."""
    size = 1 << 16
    want = weights / weights.sum() * size
    counts = np.maximum(np.floor(want), 1).astype(np.int64)
    short = size - int(counts.sum())
    if short > 0:  # the largest remainders get the rest
        counts[np.argsort(counts - want, kind="stable")[:short]] += 1
    else:
        counts[np.argmax(counts)] += short
    return np.repeat(np.arange(len(weights), dtype=np.intp), counts), counts / size


def measure(n_symbols: int, rate: float = 200_000.0, batch_hz: float = 20.0, seconds: float = 10.0,
            seed: int = 7) -> float:
    """Ticks generated per second of CPU, in batches shaped as ``stream`` makes them at ``rate``."""
    sim = SimFeed(SymbolTable(n_symbols), n_symbols=n_symbols, seed=seed, rate=rate, batch_hz=batch_hz)
    step = round(1e9 / batch_hz)
    now = 1_800_000_000 * 10**9 + 3_600 * 10**9
    sim.next_batch(10, now, 1.0 / batch_hz)  # the first call sets up the session; not timed
    total, spent = 0, 0.0
    for _ in range(round(seconds * batch_hz)):
        now += step
        n = max(int(sim.expected_ticks(now - step, now)), 1)
        start = time.perf_counter()
        sim.next_batch(n, now, 1.0 / batch_hz)
        spent += time.perf_counter() - start
        total += n
    return total / spent


if __name__ == "__main__":  # python -m engine.feeds.sim: the generator's throughput
    for k, r in ((40, 200.0), (40, 200_000.0), (5000, 200_000.0), (5000, 1_000_000.0)):
        print(f"sim {k:>5} symbols at {r:>11,.0f} ticks/s: generates {measure(k, r):>13,.0f} ticks/s")


def rate_for_window(target: float, seconds: float, start_ns: int) -> float:
    """The ``rate`` whose tape averages ``target`` ticks/s over ``seconds`` from ``start_ns``.

    ``rate`` is an average over the sim's trading day, and its U-shaped intraday profile makes the tape
    several times busier at the open than at midday: a benchmark that wants a given load now asks this.
    """
    probe = SimFeed(SymbolTable(1), n_symbols=1, rate=1.0)  # expected ticks at rate 1 = trading seconds
    return target * seconds / probe.expected_ticks(start_ns, start_ns + int(seconds * 1e9))

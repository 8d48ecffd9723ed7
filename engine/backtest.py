"""Backtesting signal rules over OHLCV files, through the same engine and detector that run live.

The files (CSV or Parquet, read into one series by ``engine.backtest_series`` and checked by
``engine.ohlcv_file``, with the checks the replay feed makes) hold one symbol each, named by the file's
stem, or a ``symbol`` column (``backtest_bars`` takes one symbol's bars from memory instead, such as the
console's loaded history). Every bar becomes the
replay feed's four ticks (``bars_to_ticks``, which rebuild it exactly), the ticks of all symbols go to one
``Engine`` in bar-time order, in big batches (``Engine.ingest``), and the last bars are closed with
``Engine.close_due``: the signals are the ones a replay of the files emits, not a vectorised imitation.

The bar interval is each file's smallest spacing between two bars of one symbol; every file of a run
must have the same. Engine bar times are the file's times rounded down to a multiple of the interval
(as the bar builder aligns bars to the epoch; aligned files are unchanged), so bars stamped at, say,
21:00 UTC still rebuild exactly; results carry the files' own times. An ``on = "live"`` rule is
evaluated on each forming bar once its four ticks are in (the ticks of one bar time go in one batch; a
file has no path within a bar), which costs one ``ingest`` call per bar time.

Per rule and direction: the signals; their forward returns after ``HORIZONS`` bars (signal at bar t's
close, return over k bars ``close[t+k] / close[t] - 1``, signed by direction: a "down" signal profits
when price falls; a hit is a signed return > 0; undefined when the file ends first: left out of that
horizon's figures and counted); the max adverse excursion within ``MAE_BARS`` bars of the signal (the worst
signed move against it, from the bars' lows for "up" and highs for "down", 0 when price never went
against it; defined only when all ``MAE_BARS`` bars exist); signals per 1,000 bars of the symbols the rule
applies to; and the same figures for a random-entry baseline: for every signal with a defined return, an
entry drawn at random (with replacement) from the bars of the signal's symbol where that return exists,
seeded per rule and direction, so a seed always gives the same baseline.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.backtest_series import BacktestError, Series, format_interval, load_series
from engine.feeds.replay import bars_to_ticks
from engine.signals.events import Signal
from engine.signals.rules import POSITION_KINDS, Rule, RuleError, load_rules
from engine.tick_engine import Engine

HORIZONS: tuple[int, ...] = (1, 5, 20)
MAE_BARS = HORIZONS[-1]  # a horizon: the baseline's MAE uses that horizon's random entries
CHUNK_BARS = 65_536  # bars turned into ticks and ingested per call (close rules)
BATCH_TICKS = 65_536  # the engine's batch (its scratch is sized by it)
CSV_COLUMNS = ("symbol", "rule", "direction", "bar_time", "price",
               *(f"ret_{k}" for k in HORIZONS), f"mae_{MAE_BARS}")


# --- rules ----------------------------------------------------------------------------------------

def select_rules(tables: Iterable[tuple[Mapping[str, Any], str]], ids: Sequence[str] | None = None,
                 ) -> tuple[Rule, ...]:
    """The config's enabled rules, or exactly those named in ``ids`` (a disabled one too, when named).
    Rules on positions (pnl, stop, target) are left out: a backtest holds no positions."""
    try:
        rules = load_rules(tables)
    except RuleError as exc:
        raise BacktestError(str(exc)) from None
    if ids:
        by_id = {r.id: r for r in rules}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            known = ", ".join(by_id) or "none"
            raise BacktestError(f"unknown rule id {unknown[0]!r} in --rules; the config's rules are: {known}")
        chosen = tuple(replace(by_id[i], enabled=True) for i in dict.fromkeys(ids))
        if held := [r for r in chosen if r.kind in POSITION_KINDS]:
            raise BacktestError(f"rule {held[0].id!r} is a {held[0].kind} rule, on positions, which a "
                                "backtest does not hold; name other rules in --rules")
    else:
        chosen = tuple(r for r in rules if r.enabled and r.kind not in POSITION_KINDS)
    if not chosen:
        raise BacktestError("no rules to backtest: the config has no enabled [[rules]] "
                            "(add some to a --config file, or name them with --rules)")
    return chosen


def directions(rule: Rule) -> tuple[str, ...]:
    return ("up", "down") if rule.direction == "both" else (rule.direction,)


# --- the replay -----------------------------------------------------------------------------------

def engine_times(series: Series) -> np.ndarray:
    """The bars' times as the engine sees them: rounded down to a multiple of the interval."""
    return series.t - series.t % series.interval


def _chunks(steps: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """Ranges of about ``size`` bars (more when one bar time has more) between bar-time boundaries."""
    lo, last = 0, int(steps[-1])
    while lo < last:
        hi = int(steps[np.searchsorted(steps, lo + size, side="right") - 1])
        if hi <= lo:
            hi = int(steps[np.searchsorted(steps, lo, side="right")])
        yield lo, hi
        lo = hi


def replay(series: Series, rules: Sequence[Rule]) -> list[Signal]:
    """Every bar through a fresh ``Engine`` with ``rules``, as ticks in bar-time order; the signals."""
    live = any(r.on == "live" for r in rules)
    times = engine_times(series)
    order = np.lexsort((series.sym, times))  # bar-time order, symbols interleaved
    steps = np.concatenate([[0], np.flatnonzero(np.diff(times[order])) + 1, [len(order)]])
    widest = int(np.diff(steps).max())
    batch = max(BATCH_TICKS, 4 * widest) if live else BATCH_TICKS  # live: one bar time per batch, whole
    engine = Engine((), series.interval, capacity=max(len(series.names), 1), depth=1, rules=rules,
                    batch_capacity=batch)
    for name in series.names:
        engine.add_symbol(name)
    signals: list[Signal] = []
    s = series
    for lo, hi in _chunks(steps, CHUNK_BARS):
        idx = order[lo:hi]
        ticks = bars_to_ticks(times[idx], s.o[idx], s.h[idx], s.l[idx], s.c[idx], s.v[idx], s.interval)
        ticks["sym"] = np.repeat(s.sym[idx], 4)
        if not live:
            signals += engine.ingest(ticks)
        else:
            inner = steps[(steps >= lo) & (steps <= hi)] - lo
            for a, b in zip((4 * inner[:-1]).tolist(), (4 * inner[1:]).tolist(), strict=True):
                signals += engine.ingest(ticks[a:b])
    signals += engine.close_due(int(times.max()) + series.interval)
    return signals


# --- figures --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReturnStats:
    n: int
    hit_rate: float
    mean: float
    median: float

    @classmethod
    def of(cls, x: np.ndarray) -> ReturnStats:
        if not len(x):
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(x), float(np.mean(x > 0)), float(np.mean(x)), float(np.median(x)))


@dataclass(frozen=True)
class MaeStats:
    n: int
    mean: float
    median: float
    worst: float

    @classmethod
    def of(cls, x: np.ndarray) -> MaeStats:
        if not len(x):
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(x), float(np.mean(x)), float(np.median(x)), float(np.min(x)))


@dataclass(frozen=True)
class HorizonResult:
    bars: int  # k
    excluded: int  # signals too close to the end of their file for a k-bar return
    signals: ReturnStats
    baseline: ReturnStats


@dataclass(frozen=True)
class GroupResult:
    """One rule in one direction."""

    rule: str
    direction: str
    description: str
    signals: int
    bars: int  # bars of the symbols the rule applies to
    horizons: tuple[HorizonResult, ...]
    mae: MaeStats
    mae_baseline: MaeStats
    mae_excluded: int

    @property
    def per_1000_bars(self) -> float:
        return 1000.0 * self.signals / self.bars if self.bars else math.nan


@dataclass
class SignalTable:
    """The signals, one row each, ordered by bar time, symbol, rule and direction."""

    symbol: list[str]
    rule: list[str]
    direction: list[str]
    bar_time: np.ndarray  # the file's bar time, ns
    price: np.ndarray
    returns: np.ndarray  # float64[n, len(HORIZONS)], signed by direction; NaN where undefined
    mae: np.ndarray  # NaN where undefined

    def __len__(self) -> int:
        return len(self.symbol)


@dataclass
class Report:
    files: list[str]
    symbols: int
    bars: int
    interval_ns: int
    first_ns: int
    last_ns: int
    seed: int
    groups: list[GroupResult]
    signals: SignalTable
    read_s: float = 0.0
    replay_s: float = 0.0
    stats_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.read_s + self.replay_s + self.stats_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (NaN as None)."""
        def returns(s: ReturnStats) -> dict[str, Any]:
            return {"n": s.n, "hit_rate": _num(s.hit_rate), "mean": _num(s.mean), "median": _num(s.median)}

        def mae(s: MaeStats) -> dict[str, Any]:
            return {"n": s.n, "mean": _num(s.mean), "median": _num(s.median), "worst": _num(s.worst)}

        return {
            "files": self.files, "symbols": self.symbols, "bars": self.bars,
            "interval": format_interval(self.interval_ns), "interval_ns": self.interval_ns,
            "first_bar": _iso(self.first_ns), "last_bar": _iso(self.last_ns), "seed": self.seed,
            "horizons": list(HORIZONS), "mae_bars": MAE_BARS, "signals": len(self.signals),
            "rules": [{
                "rule": g.rule, "direction": g.direction, "description": g.description,
                "signals": g.signals, "bars": g.bars, "signals_per_1000_bars": _num(g.per_1000_bars),
                "horizons": {str(h.bars): {"excluded": h.excluded, **returns(h.signals),
                                           "baseline": returns(h.baseline)} for h in g.horizons},
                "mae": {"excluded": g.mae_excluded, **mae(g.mae), "baseline": mae(g.mae_baseline)},
            } for g in self.groups],
            "timing": {"read_s": self.read_s, "replay_s": self.replay_s, "stats_s": self.stats_s,
                       "total_s": self.total_s, "bars_per_second": _rate(self.bars, self.total_s),
                       "replay_bars_per_second": _rate(self.bars, self.replay_s)},
        }


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _rate(n: int, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def _iso(ns: int) -> str:
    return iso_times(np.array([ns], dtype=np.int64))[0]


def iso_times(ns: np.ndarray) -> list[str]:
    """UTC ISO 8601 with a Z, to the second (or as fine as the times need)."""
    for unit, size in (("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)):
        if not np.any(ns % size):
            stamps = (ns // size).astype(f"datetime64[{unit}]")
            return [str(s) for s in np.datetime_as_string(stamps, timezone="UTC")]
    return []  # not reached: every time is a whole number of ns


def forward_returns(series: Series) -> dict[int, np.ndarray]:
    """Per bar, the (unsigned) return over k bars of its symbol; NaN where the symbol's bars end first."""
    idx = np.arange(len(series))
    out: dict[int, np.ndarray] = {}
    for k in HORIZONS:
        r = np.full(len(series), np.nan)
        ok = idx + k < series.end
        r[ok] = series.c[idx[ok] + k] / series.c[ok] - 1.0
        out[k] = r
    return out


def adverse_excursions(series: Series) -> dict[str, np.ndarray]:
    """Per bar and direction, the worst signed move against an entry at its close over the next
    ``MAE_BARS`` bars (<= 0); NaN unless all of them exist."""
    n, k = len(series), MAE_BARS
    low = np.full(n, np.nan)
    high = np.full(n, np.nan)
    if n > k:
        windows = (np.lib.stride_tricks.sliding_window_view(x[1:], k) for x in (series.l, series.h))
        low[: n - k] = next(windows).min(axis=1)
        high[: n - k] = next(windows).max(axis=1)
    ok = np.arange(n) + k < series.end
    low[~ok] = np.nan
    high[~ok] = np.nan
    return {"up": np.minimum(low / series.c - 1.0, 0.0), "down": np.minimum(1.0 - high / series.c, 0.0)}


def _rows(series: Series, signals: Sequence[Signal]) -> np.ndarray:
    """The bar (index into ``series``) of each signal."""
    index = {name: s for s, name in enumerate(series.names)}
    sym = np.array([index[s.symbol] for s in signals], dtype=np.int64)
    t = np.array([s.bar_time for s in signals], dtype=np.int64)
    times = engine_times(series)
    rows = np.empty(len(signals), dtype=np.int64)
    for s in np.unique(sym).tolist():
        mine = sym == s
        a, b = int(series.start[s]), int(series.start[s + 1])
        found = a + np.searchsorted(times[a:b], t[mine])
        if np.any(found >= b) or np.any(times[np.minimum(found, b - 1)] != t[mine]):
            raise AssertionError(f"a signal of {series.names[s]} is on a bar the files do not have")
        rows[mine] = found
    return rows


def evaluate(series: Series, rules: Sequence[Rule], signals: Sequence[Signal], seed: int = 0,
             ) -> tuple[list[GroupResult], SignalTable]:
    """The figures per rule and direction, and the per-signal table."""
    fwd = forward_returns(series)
    mae_by_dir = adverse_excursions(series)
    rows = _rows(series, signals)
    rule_of = np.array([s.rule for s in signals], dtype=object)
    up = np.array([s.direction == "up" for s in signals], dtype=bool)
    sign = np.where(up, 1.0, -1.0)
    returns = np.column_stack([sign * fwd[k][rows] for k in HORIZONS]) if len(signals) else (
        np.zeros((0, len(HORIZONS))))
    mae = np.where(up, mae_by_dir["up"][rows], mae_by_dir["down"][rows])
    counts = np.diff(series.start)
    groups: list[GroupResult] = []
    for rule in rules:
        bars = int(sum(int(n) for name, n in zip(series.names, counts, strict=True) if rule.applies_to(name)))
        for direction in directions(rule):
            mine = np.flatnonzero((rule_of == rule.id) & (up == (direction == "up")))
            mine = mine[np.argsort(rows[mine], kind="stable")]
            rng = np.random.default_rng([seed, zlib.crc32(rule.id.encode()), int(direction == "up")])
            sgn = 1.0 if direction == "up" else -1.0
            horizons = []
            base_mae = np.zeros(0)
            for j, k in enumerate(HORIZONS):
                r = returns[mine, j]
                defined = ~np.isnan(r)
                sym = series.sym[rows[mine][defined]]
                pool = series.start[sym + 1] - series.start[sym] - k  # bars with a k-bar return
                entries = series.start[sym] + (rng.random(len(sym)) * pool).astype(np.int64)
                horizons.append(HorizonResult(k, int((~defined).sum()), ReturnStats.of(r[defined]),
                                              ReturnStats.of(sgn * fwd[k][entries])))
                if k == MAE_BARS:
                    base_mae = mae_by_dir[direction][entries]
            m = mae[mine]
            groups.append(GroupResult(
                rule.id, direction, rule.describe(), len(mine), bars, tuple(horizons),
                MaeStats.of(m[~np.isnan(m)]), MaeStats.of(base_mae), int(np.isnan(m).sum())))
    order = sorted(range(len(signals)), key=lambda i: (
        signals[i].bar_time, signals[i].symbol, signals[i].rule, signals[i].direction))
    table = SignalTable(
        [signals[i].symbol for i in order], [signals[i].rule for i in order],
        [signals[i].direction for i in order], series.t[rows[order]] if order else np.zeros(0, np.int64),
        np.array([signals[i].price for i in order], dtype=np.float64), returns[order], mae[order])
    return groups, table


def run(paths: Sequence[str], rules: Sequence[Rule], seed: int = 0) -> Report:
    """Read, replay and evaluate; the report carries how long each part took."""
    start = time.perf_counter()
    series = load_series(paths)
    return _measure(series, rules, seed, list(paths), time.perf_counter() - start)


def backtest_bars(symbol: str, t: np.ndarray, ohlcv: np.ndarray, rules: Sequence[Rule], interval_ns: int,
                  seed: int = 0) -> Report:
    """:func:`run` on one symbol's bars held in memory (such as the console's loaded history).

    ``t``: bar times, UTC ns, oldest first, at least ``interval_ns`` apart; ``ohlcv``: float64[n, 5]
    (open, high, low, close, volume) as the engine builds them; ``interval_ns``: the bar interval. The
    report's ``files`` is empty and its ``read_s`` is the time taken to set the bars up.
    """
    start = time.perf_counter()
    times = np.asarray(t, dtype=np.int64)
    bars = np.asarray(ohlcv, dtype=np.float64)
    if bars.ndim != 2 or bars.shape != (len(times), 5):
        raise BacktestError(f"{symbol}: expected {len(times)} bars of 5 values (o h l c v), got {bars.shape}")
    if interval_ns <= 0 or len(times) < 2:
        raise BacktestError(f"{symbol}: {len(times)} bar(s) of {interval_ns} ns; "
                            "a backtest needs at least 2 bars and a positive interval")
    if np.any(np.diff(times) < interval_ns):
        raise BacktestError(f"{symbol}: bar times must increase by at least the interval "
                            f"({format_interval(interval_ns)})")
    o, h, lo, c, v = (np.ascontiguousarray(bars[:, j]) for j in range(5))
    series = Series([], [symbol], np.array([0, len(times)], dtype=np.int64), times, o, h, lo, c, v,
                    int(interval_ns))
    return _measure(series, rules, seed, [], time.perf_counter() - start)


def _measure(series: Series, rules: Sequence[Rule], seed: int, files: list[str], read_s: float) -> Report:
    """Replay and evaluate ``series``; the report, with how long each part took."""
    start = time.perf_counter()
    signals = replay(series, rules)
    replayed = time.perf_counter()
    groups, table = evaluate(series, rules, signals, seed)
    done = time.perf_counter()
    return Report(files, len(series.names), len(series), series.interval, int(series.t.min()),
                  int(series.t.max()), seed, groups, table, read_s, replayed - start, done - replayed)


# --- table rows, shared by the command's table and the console's pane --------------------------------

def pct(x: float, signed: bool = True) -> str:
    """A fraction as percent: ``+1.23`` (signed, two places) or ``45.6`` (hit rates); ``-`` when NaN."""
    if not math.isfinite(x):
        return "-"
    text = f"{100 * x:+.2f}" if signed else f"{100 * x:.1f}"
    # a move that rounds to nothing is no move: never a signed or negative zero
    return text.lstrip("+-") if float(text) == 0 else text


def group_rows(g: GroupResult) -> list[list[str]]:
    """One row per horizon of one rule and direction; the rule's own figures on its first row only."""
    rows = []
    for j, h in enumerate(g.horizons):
        s, b = h.signals, h.baseline
        first = j == 0
        rows.append([
            g.rule if first else "", g.direction if first else "", f"{g.signals:,}" if first else "",
            f"{g.per_1000_bars:.2f}" if first and math.isfinite(g.per_1000_bars) else "",
            str(h.bars), f"{s.n:,}", pct(s.hit_rate, False), pct(b.hit_rate, False),
            pct(s.mean), pct(b.mean), pct(s.median), pct(b.median),
            pct(g.mae.mean) if first else "", pct(g.mae_baseline.mean) if first else "",
        ])
    return rows

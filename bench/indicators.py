"""``tickdeck bench``: tickdeck's indicator engine against TA-Lib, talipp and nautilus_trader, on one
synthetic stream.

The contenders apply six indicators (SMA20, EMA20, RSI14, MACD 12/26/9, BB 20/2, ATR14) to one
interleaved GBM stream of 500 symbols (bar j of every symbol, then bar j+1); an *update* is one bar of
one symbol through all six. Each runs ~``target_s`` seconds on a prefix of the stream, in ``ROUNDS`` rounds
taken in turn with the others, and keeps its fastest round. TA-Lib runs twice:
once over each symbol's whole series in one pass (what C does with the series in hand: the batched
path's yardstick), and recomputing a window per tick. Memory is measured in a subprocess that imports
only the engine. TA-Lib and talipp are benchmark anchors, never runtime dependencies: imported inside
functions, their absence exits 2 with an install hint. nautilus_trader (Cython, incremental) is a second
incremental anchor when it is installed; it is heavy, so it is optional and its absence only leaves its
row out. Its MACD has no signal line (an EMA 9 of it is added) and its Bollinger bands use the typical
price, so its values are not compared, only its speed.

The exit status is 1 when the sanity check (tickdeck's final values against every anchor's) failed or a
target was missed, each named on stderr; 0 when everything passed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SIX: tuple[str, ...] = (
    "sma_20", "ema_20", "rsi_14", "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
    "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2", "atr_14",
)
WINDOW = 300  # bars TA-Lib recomputes per tick
CHUNK = 10_000  # bars per commit_many call in the batched contender
BLOCK = 5_000  # bars converted to Python values (untimed) per timed block of the per-tick loops
SEED = 20_240_601
T0 = 1_700_000_000_000_000_000
MINUTE_NS = 60_000_000_000
MB = 1_000_000  # decimal megabytes: the stricter reading of the 150 MB target
BATCHED_TARGET = 0.5  # batched >= this share of TA-Lib's one-pass rate over whole series
SINGLE_TARGET = 3_000_000.0  # single-bar updates/s
RSS_TARGET_MB = 150.0
ROUNDS = 3
"""Each contender runs this many rounds of ``target_s / ROUNDS``, the contenders taking turns, and its
figure is its fastest round: on a shared machine a burst of other work slows one round, not the figure,
and the two sides of a ratio are measured in the same stretch of time (``timeit``'s rule: the minimum
is the estimate least disturbed by the rest of the machine)."""
SANITY_TOL = 1e-8  # |a - b| <= tol * max(|b|, scale); scale = 100 for RSI, else the last close
INSTALL_HINT = "install the test extras: pip install -e '.[test]'"


@dataclass(frozen=True)
class Sizes:
    symbols: int
    min_bars: int  # bars per symbol: sized from the measured batched rate, within these bounds
    max_bars: int
    target_s: float  # seconds each contender runs for (at least one chunk or block)
    mem_symbols: int
    mem_bars: int


FULL = Sizes(500, min_bars=1_000, max_bars=20_000, target_s=1.5, mem_symbols=1_000, mem_bars=2_000)
QUICK = Sizes(10, min_bars=400, max_bars=400, target_s=0.01, mem_symbols=200, mem_bars=500)


@dataclass(frozen=True)
class Stream:
    """Interleaved bars, ``arrays`` = (slots, t, o, h, l, c, v): index ``j * symbols + s`` is bar ``j``
    of symbol ``s``."""

    symbols: int
    arrays: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.arrays[0])

    def cols(self, lo: int, hi: int) -> tuple[np.ndarray, ...]:
        return tuple(a[lo:hi] for a in self.arrays)


def gbm_stream(symbols: int, bars: int, seed: int = SEED) -> Stream:
    """Geometric Brownian motion OHLCV bars, one volatility per symbol, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.004, 0.02, symbols)
    start = rng.uniform(5.0, 500.0, symbols)
    close = start * np.exp(np.cumsum(rng.normal(-0.5 * sigma**2, sigma, (bars, symbols)), axis=0))
    open_ = np.vstack([start, close[:-1]]) * np.exp(rng.normal(0.0, sigma / 4, (bars, symbols)))
    wick = np.exp(np.abs(rng.normal(0.0, sigma / 2, (2, bars, symbols))))
    high = np.maximum(open_, close) * wick[0]
    low = np.minimum(open_, close) / wick[1]
    volume = rng.gamma(2.0, 500.0, (bars, symbols))
    t = T0 + np.repeat(np.arange(bars, dtype=np.int64) * MINUTE_NS, symbols)
    slots = np.tile(np.arange(symbols, dtype=np.int64), bars)
    return Stream(symbols, (slots, t, *(a.ravel() for a in (open_, high, low, close, volume))))


# --- contenders: each returns (updates run, seconds, final values of slot 0 in SIX order) ----------
Result = tuple[int, float, list[float]]


def _anchors() -> tuple[Any, Any, Any]:
    """(talib, talipp.indicators, talipp.ohlcv.OHLCV), or SystemExit(2) saying how to get them."""
    try:
        import talib
        import talipp.indicators as tpi
        from talipp.ohlcv import OHLCV
    except ImportError as exc:
        print(f"tickdeck bench: TA-Lib and talipp are its benchmark anchors ({exc}); {INSTALL_HINT}",
              file=sys.stderr)
        raise SystemExit(2) from None
    return talib, tpi, OHLCV


def run_batched(stream: Stream, target_s: float) -> Result:
    """tickdeck, ``commit_many`` over the interleaved stream in chunks (wall time, slicing included)."""
    from engine.indicators.bank import IndicatorBank

    bank, n, start = IndicatorBank(SIX, stream.symbols), 0, time.perf_counter()
    while n < len(stream) and (n == 0 or time.perf_counter() - start < target_s):
        bank.commit_many(*stream.cols(n, n + CHUNK))
        n = min(n + CHUNK, len(stream))
    return n, time.perf_counter() - start, [bank.committed[bank.row(name), 0] for name in SIX]


def _blocks(stream: Stream, target_s: float, loop: Callable[[list[list[Any]]], None]) -> tuple[int, float]:
    """Feed Python-valued blocks to ``loop`` until ``target_s`` of timed looping (conversion untimed)."""
    n, elapsed = 0, 0.0
    while n < len(stream) and (n == 0 or elapsed < target_s):
        cols = [a.tolist() for a in stream.cols(n, n + BLOCK)]
        start = time.perf_counter()
        loop(cols)
        elapsed += time.perf_counter() - start
        n = min(n + BLOCK, len(stream))
    return n, elapsed


def run_single(stream: Stream, target_s: float) -> Result:
    """tickdeck, one ``commit`` call per bar from a Python loop."""
    from engine.indicators.bank import IndicatorBank

    bank = IndicatorBank(SIX, stream.symbols)
    commit = bank.commit

    def loop(cols: list[list[Any]]) -> None:
        for s, t, o, h, l, c, v in zip(*cols, strict=True):
            commit(s, t, o, h, l, c, v)

    n, elapsed = _blocks(stream, target_s, loop)
    return n, elapsed, [bank.committed[bank.row(name), 0] for name in SIX]


def run_talipp(stream: Stream, target_s: float) -> Result:
    """talipp, one incremental object per indicator per symbol; ATR takes an OHLCV per bar."""
    _, tpi, ohlcv = _anchors()
    objs = [(tpi.SMA(20), tpi.EMA(20), tpi.RSI(14), tpi.MACD(12, 26, 9), tpi.BB(20, 2.0), tpi.ATR(14))
            for _ in range(stream.symbols)]

    def loop(cols: list[list[Any]]) -> None:
        for s, _t, o, h, l, c, v in zip(*cols, strict=True):
            sma, ema, rsi, macd, bb, atr = objs[s]
            sma.add(c)
            ema.add(c)
            rsi.add(c)
            macd.add(c)
            bb.add(c)
            atr.add(ohlcv(o, h, l, c, v))

    n, elapsed = _blocks(stream, target_s, loop)
    sma, ema, rsi, macd, bb, atr = (o[-1] if len(o) else None for o in objs[0])
    m = (macd.macd, macd.signal, macd.histogram) if macd is not None else (None,) * 3
    b = (bb.ub, bb.cb, bb.lb) if bb is not None else (None,) * 3
    return n, elapsed, [math.nan if x is None else float(x) for x in (sma, ema, rsi, *m, *b, atr)]


def talib_last(talib: Any, h: np.ndarray, l: np.ndarray, c: np.ndarray) -> list[float]:
    """The six TA-Lib functions on (h, l, c); the last value of each output, in SIX order."""
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    return [talib.SMA(c, 20)[-1], talib.EMA(c, 20)[-1], talib.RSI(c, 14)[-1], macd[-1], signal[-1],
            hist[-1], upper[-1], middle[-1], lower[-1], talib.ATR(h, l, c, 14)[-1]]


def run_talib_window(stream: Stream, target_s: float) -> Result:
    """TA-Lib over each symbol's last ``WINDOW`` bars, recomputed on every bar. The window is a
    double-written ring (``buf[s, p]`` and ``buf[s, p + WINDOW]``): always one contiguous view, so no
    per-tick copy inflates TA-Lib's time."""
    talib, _, _ = _anchors()
    buf = np.zeros((3, stream.symbols, 2 * WINDOW))
    pos = [-1] * stream.symbols
    have = [0] * stream.symbols
    last: list[list[float]] = [[math.nan] * len(SIX) for _ in range(stream.symbols)]

    def loop(cols: list[list[Any]]) -> None:
        hb, lb, cb = buf
        for s, _t, _o, h, l, c, _v in zip(*cols, strict=True):
            p = pos[s] = (pos[s] + 1) % WINDOW
            hb[s, p] = hb[s, p + WINDOW] = h
            lb[s, p] = lb[s, p + WINDOW] = l
            cb[s, p] = cb[s, p + WINDOW] = c
            k = have[s] = min(have[s] + 1, WINDOW)
            lo, hi = p + WINDOW + 1 - k, p + WINDOW + 1
            last[s] = talib_last(talib, hb[s, lo:hi], lb[s, lo:hi], cb[s, lo:hi])

    n, elapsed = _blocks(stream, target_s, loop)
    return n, elapsed, last[0]


def run_talib_full(stream: Stream, target_s: float) -> Result:
    """TA-Lib over each symbol's whole series, one pass per symbol (the six functions), symbol after
    symbol until ``target_s``; its updates are the bars those passes covered. The per-symbol columns are
    cut out untimed, as a caller holding whole series would have them."""
    talib, _, _ = _anchors()
    per_symbol = len(stream) // stream.symbols
    h, l, c = (np.ascontiguousarray(a[: per_symbol * stream.symbols].reshape(per_symbol, stream.symbols).T)
               for a in stream.arrays[3:6])
    n, elapsed, last = 0, 0.0, [math.nan] * len(SIX)
    for s in range(stream.symbols):
        if n and elapsed >= target_s:
            break
        start = time.perf_counter()
        values = talib_last(talib, h[s], l[s], c[s])
        elapsed += time.perf_counter() - start
        n += per_symbol
        if s == 0:
            last = values
    return n, elapsed, last


def _nautilus() -> Any:
    try:
        import nautilus_trader.indicators as nti
    except ImportError:
        return None
    return nti


def run_nautilus(stream: Stream, target_s: float) -> Result:
    """nautilus_trader's incremental indicators (``update_raw``), one set per symbol; an EMA 9 of its
    MACD stands for the signal line it does not have. Final values are not comparable (see the module
    docstring): NaN."""
    nti = _nautilus()
    ema = nti.MovingAverageType.EXPONENTIAL
    objs = [(nti.SimpleMovingAverage(20), nti.ExponentialMovingAverage(20), nti.RelativeStrengthIndex(14),
             nti.MovingAverageConvergenceDivergence(12, 26, ema), nti.ExponentialMovingAverage(9),
             nti.BollingerBands(20, 2.0), nti.AverageTrueRange(14))
            for _ in range(stream.symbols)]

    def loop(cols: list[list[Any]]) -> None:
        for s, _t, _o, h, l, c, _v in zip(*cols, strict=True):
            sma, ema_, rsi, macd, signal, bb, atr = objs[s]
            sma.update_raw(c)
            ema_.update_raw(c)
            rsi.update_raw(c)
            macd.update_raw(c)
            signal.update_raw(macd.value)
            bb.update_raw(h, l, c)
            atr.update_raw(h, l, c)

    n, elapsed = _blocks(stream, target_s, loop)
    return n, elapsed, [math.nan] * len(SIX)


CONTENDERS: dict[str, Callable[[Stream, float], Result]] = {
    "tickdeck_batched": run_batched, "tickdeck_single": run_single, "talipp": run_talipp,
    "talib_window": run_talib_window, "talib_full": run_talib_full, "nautilus": run_nautilus,
}
LABELS = {"tickdeck_batched": "tickdeck batched (commit_many)",
          "tickdeck_single": "tickdeck per tick (commit)", "talipp": "talipp (incremental)",
          "nautilus": "nautilus_trader (incremental)",
          "talib_window": f"TA-Lib ({WINDOW}-bar window per tick)",
          "talib_full": "TA-Lib (one pass over each whole series)"}


def contenders() -> dict[str, Callable[[Stream, float], Result]]:
    """Every contender whose package imports (nautilus_trader is optional)."""
    return {k: fn for k, fn in CONTENDERS.items() if k != "nautilus" or _nautilus() is not None}


# --- sanity: one symbol, every code path, final values compared --------------------------------
def sanity(stream: Stream) -> dict[str, tuple[float, str]]:
    """Worst scaled difference of slot 0's final values, tickdeck batched against each reference, with
    the output where it is."""
    talib, _, _ = _anchors()
    bars = tuple(np.ascontiguousarray(a[:: stream.symbols]) for a in stream.arrays[1:])  # symbol 0
    one = Stream(1, (np.zeros(len(bars[0]), dtype=np.int64), *bars))
    _, _, ours = run_batched(one, math.inf)
    h, l, c = bars[2:5]
    refs = {"tickdeck_single": run_single(one, math.inf)[2], "talipp": run_talipp(one, math.inf)[2],
            "talib_window": run_talib_window(one, math.inf)[2], "talib_full": talib_last(talib, h, l, c)}
    scale = [100.0 if name.startswith("rsi") else abs(float(c[-1])) for name in SIX]
    out = {}
    for key, ref in refs.items():  # a value where the other side has NaN counts as a 100% difference
        errs = [0.0 if math.isnan(a) and math.isnan(b) else abs(a - b) / max(abs(b), s)
                for a, b, s in zip(ours, ref, scale, strict=True)]
        errs = [1.0 if math.isnan(e) else e for e in errs]
        worst = max(range(len(SIX)), key=errs.__getitem__)
        out[key] = (errs[worst], SIX[worst])
    return out


# --- memory: runs in a subprocess that imports only the engine ---------------------------------
class BankAndHistory:
    """The arrays an Engine owns (indicator bank, bar history), used when ``engine.tick_engine`` does not
    import; ``ingest`` takes each tick as one closed bar: committed, then appended to the history."""

    def __init__(self, outputs: tuple[str, ...], interval_ns: int, capacity: int, depth: int) -> None:
        from engine.history import BarHistory
        from engine.indicators.bank import IndicatorBank

        self.bank, self.history = IndicatorBank(outputs, capacity), BarHistory(capacity, depth)

    def add_symbol(self, name: str) -> None:
        pass

    def ingest(self, ticks: np.ndarray) -> None:
        f = [np.ascontiguousarray(ticks[k]) for k in ("sym", "ts", *["price"] * 4, "size")]
        f[0] = f[0].astype(np.int64)
        self.bank.commit_many(*f)
        for row in zip(*(a.tolist() for a in f), strict=True):
            self.history.append(*row)

    @property
    def nbytes(self) -> int:
        return self.bank.nbytes + self.history.nbytes


def _rss() -> tuple[int, int]:
    """(RSS, the part of it that is file-backed: shared libraries' pages) of this process, in bytes. Read
    from ``/proc`` where there is one, so the probe imports nothing the engine does not (psutil, 2 MB,
    elsewhere, with the second figure 0)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS:", "RssFile:")))
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["RssFile"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import psutil

        return psutil.Process().memory_info().rss, 0


def memory_probe(symbols: int, bars: int) -> dict[str, Any]:
    """RSS, part by part, of an engine for ``symbols`` x DEFAULT_OUTPUTS built and fed ``bars`` bars of
    history, one tick per bar (``engine.tick_engine.Engine`` when it imports, else ``BankAndHistory``), with
    the history ring sized as a run sizes it (``ring_bars`` of the default config)."""
    import gc

    rss_python = _rss()[0]
    import llvmlite.binding  # noqa: F401  (LLVM's shared library, measured on its own)

    rss_llvm = _rss()[0]
    from engine.backfill.sizing import ring_bars
    from engine.config import load_config
    from engine.indicators.catalogue import DEFAULT_OUTPUTS
    from engine.ticks import make_ticks

    try:
        from engine.tick_engine import Engine as engine_cls
    except ImportError:
        engine_cls = BankAndHistory  # type: ignore[misc, assignment]
    rss_import = _rss()[0]
    import numba  # already loaded by the engine; its cache directory is keyed by the kernels' source

    cache_warm = any(Path(getattr(numba.config, "CACHE_DIR", "") or ".").rglob("*.nbi"))
    depth = ring_bars(load_config(env={}))
    rng = np.random.default_rng(SEED)

    def build(n_sym: int, n_bars: int, ring: int) -> Any:
        eng = engine_cls(DEFAULT_OUTPUTS, MINUTE_NS, capacity=n_sym, depth=ring)
        for s in range(n_sym):
            eng.add_symbol(f"SYM{s:04d}")
        price = np.full(n_sym, 100.0)
        # An Engine closes bar j when bar j + 1 opens, so it gets one more interval of ticks.
        intervals = n_bars + (engine_cls is not BankAndHistory)
        step = max(1, 20_000 // n_sym)
        for j0 in range(0, intervals, step):
            k = min(step, intervals - j0)
            px = price * np.exp(np.cumsum(rng.normal(0.0, 0.01, (k, n_sym)), axis=0))
            price = px[-1]
            ticks = make_ticks(k * n_sym)
            ticks["sym"] = np.tile(np.arange(n_sym), k)
            ticks["ts"] = ticks["recv"] = T0 + np.repeat(np.arange(j0, j0 + k) * MINUTE_NS, n_sym)
            ticks["price"], ticks["size"] = px.ravel(), rng.gamma(2.0, 500.0, k * n_sym)
            eng.ingest(ticks)
        return eng

    from engine.history import BarHistory
    from engine.memory import release_compiler_pages

    BarHistory(1, 1).append(0, T0, 1.0, 1.0, 1.0, 1.0, 1.0)  # one small kernel: numba's target and LLVM's JIT
    rss_first = _rss()[0]
    # An engine gives LLVM's pages back after its first batch: done here by hand instead (the same call),
    # so the kernels' cost and what the release gives back are measured apart.
    if engine_cls is not BankAndHistory:
        sys.modules["engine.tick_engine"]._compiler_released = True  # type: ignore[attr-defined]
    build(2, 4, 4)  # compile (or load from numba's cache) every kernel the fill uses
    gc.collect()
    rss_kernels = _rss()[0]
    released = release_compiler_pages()
    rss_baseline = _rss()[0]
    eng = build(symbols, bars, depth)
    gc.collect()
    rss_total, rss_file = _rss()
    return {"rss_python": rss_python, "rss_llvm": rss_llvm, "rss_import": rss_import, "rss_first": rss_first,
            "rss_kernels": rss_kernels, "released": released, "rss_baseline": rss_baseline,
            "rss_total": rss_total, "rss_file": rss_file, "nbytes": eng.nbytes,
            "ring_nbytes": eng.history.nbytes, "ring": eng.history.depth, "bars": bars,
            "bars_filled": int(eng.history.count.min()), "symbols": symbols, "outputs": len(DEFAULT_OUTPUTS),
            "engine": engine_cls.__name__, "cache_warm": cache_warm}


_PROBE = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[2])
spec = importlib.util.spec_from_file_location("tickdeck_bench_probe", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
print(json.dumps(mod.memory_probe(int(sys.argv[3]), int(sys.argv[4]))))
"""


def measure_memory(symbols: int, bars: int) -> dict[str, Any]:
    """Run ``memory_probe`` in a fresh interpreter that loads this file by path (not its package). A
    probe that found numba's cache cold (engine sources changed since it was filled) compiled its
    kernels, costing far more RSS than loading them, so it runs once more, now from the cache."""
    here = Path(__file__).resolve()
    cmd = [sys.executable, "-c", _PROBE, str(here), str(here.parents[1]), str(symbols), str(bars)]
    for _ in range(2):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory probe failed (exit {done.returncode}):\n{done.stderr.strip()}")
        probe: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if probe["cache_warm"]:
            break
    return probe


# --- the run -------------------------------------------------------------------------------------
def run(sizes: Sizes = FULL) -> dict[str, Any]:
    """Every measurement, as the flat dict ``--json`` prints."""
    _anchors()
    warm = gbm_stream(sizes.symbols, 200, seed=SEED + 1)
    running = contenders()
    for fn in running.values():  # JIT compile (or cache load) and first-call costs, untimed
        fn(warm, 0.0)
    n, secs, _ = run_batched(warm, math.inf)
    bars = int(np.clip(1.3 * sizes.target_s * n / secs / sizes.symbols, sizes.min_bars, sizes.max_bars))
    stream = gbm_stream(sizes.symbols, bars)
    out: dict[str, Any] = {"symbols": sizes.symbols, "bars_per_symbol": bars, "rounds": ROUNDS}
    for _ in range(ROUNDS):  # round-robin: each contender's best round (see ROUNDS)
        for key, fn in running.items():
            n, secs, _ = fn(stream, sizes.target_s / ROUNDS)
            if n / secs > out.get(f"{key}_per_s", 0.0):
                out[f"{key}_updates"], out[f"{key}_seconds"], out[f"{key}_per_s"] = n, secs, n / secs
    for a in ("tickdeck_batched", "tickdeck_single"):
        for b in ("talipp", "talib_window", "talib_full", "nautilus"):
            if b in running:
                out[f"{a.removeprefix('tickdeck_')}_vs_{b}"] = out[f"{a}_per_s"] / out[f"{b}_per_s"]
    out["batched_target_met"] = out["batched_vs_talib_full"] >= BATCHED_TARGET
    out["single_target_met"] = out["tickdeck_single_per_s"] >= SINGLE_TARGET
    errs = sanity(stream)
    out.update({f"sanity_err_{k}": e for k, (e, _) in errs.items()})
    out.update({f"sanity_worst_{k}": name for k, (_, name) in errs.items()})
    out["sanity_ok"] = all(e <= SANITY_TOL for e, _ in errs.values())
    memory_probe(2, 2)  # fill numba's on-disk cache here, so the probe loads kernels, not compiles them
    mem = measure_memory(sizes.mem_symbols, sizes.mem_bars)
    out.update({
        "rss_total_mb": mem["rss_total"] / MB, "rss_baseline_mb": mem["rss_baseline"] / MB,
        "rss_data_mb": (mem["rss_total"] - mem["rss_baseline"]) / MB,
        "engine_nbytes_mb": mem["nbytes"] / MB, "rss_python_mb": mem["rss_python"] / MB,
        "rss_llvm_mb": (mem["rss_llvm"] - mem["rss_python"]) / MB,
        "rss_engine_import_mb": (mem["rss_import"] - mem["rss_llvm"]) / MB,
        "rss_jit_mb": (mem["rss_first"] - mem["rss_import"]) / MB,
        "rss_kernels_mb": (mem["rss_kernels"] - mem["rss_first"]) / MB,
        "rss_released_mb": (mem["rss_kernels"] - mem["rss_baseline"]) / MB,
        "rss_file_mb": mem["rss_file"] / MB, "ring_nbytes_mb": mem["ring_nbytes"] / MB,
        "memory_ring": mem["ring"], "memory_ring_filled": mem["bars_filled"],
        "memory_symbols": mem["symbols"], "memory_bars": mem["bars"],
        "memory_outputs": mem["outputs"], "memory_engine": mem["engine"],
        "memory_cache_warm": mem["cache_warm"],
    })
    out["rss_target_met"] = out["rss_total_mb"] < RSS_TARGET_MB
    return out


def _sanity_line(r: dict[str, Any]) -> str:
    errs = ", ".join(f"{k.removeprefix('sanity_err_')} {v:.1e}" for k, v in r.items()
                     if k.startswith("sanity_err_"))
    if r["sanity_ok"]:
        return f"sanity: tickdeck's final values for one symbol match (worst scaled difference: {errs})"
    return f"SANITY MISMATCH: tickdeck's final values differ beyond {SANITY_TOL:g} (scaled): {errs}"


def failures(r: dict[str, Any]) -> list[str]:
    """Every check of the run that failed, one line each naming it (empty when all passed): the
    sanity check against each reference (by how much, on which output), then each missed target."""
    out = []
    for key, err in r.items():
        if key.startswith("sanity_err_") and not err <= SANITY_TOL:  # NaN fails too
            ref = key.removeprefix("sanity_err_")
            out.append(f"sanity check failed: tickdeck's final values differ from {ref}'s by {err:.1e} "
                       f"(scaled) on {r[f'sanity_worst_{ref}']}, beyond {SANITY_TOL:g}")
    if not r["batched_target_met"]:
        out.append(f"target missed: batched / talib_full = {r['batched_vs_talib_full']:.2f}, "
                   f"target >= {BATCHED_TARGET:g}")
    if not r["single_target_met"]:
        out.append(f"target missed: single = {r['tickdeck_single_per_s']:,.0f} updates/s, "
                   f"target >= {SINGLE_TARGET:,.0f}")
    if not r["rss_target_met"]:
        out.append(f"target missed: engine process RSS = {r['rss_total_mb']:.1f} MB, "
                   f"target < {RSS_TARGET_MB:g} MB")
    return out


def render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
        t = Table(title=title, title_justify="left")
        for i, col in enumerate(header):
            t.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            t.add_row(*row)
        return t

    def mark(ok: bool) -> str:
        return "[bold green]met[/]" if ok else "[bold red]missed[/]"

    con = Console()
    con.print(f"[bold]tickdeck bench[/]: {r['symbols']} symbols x {r['bars_per_symbol']:,} GBM bars, "
              f"interleaved, seed {SEED}; one update = one bar of one symbol through all six indicators "
              f"({len(SIX)} outputs)")
    con.print(table(f"Throughput (each contender's fastest of {r['rounds']} rounds, taken in turn)",
                    ("contender", "updates run", "seconds", "updates/s"), [
        (label, f"{r[k + '_updates']:,}", f"{r[k + '_seconds']:.2f}", f"{r[k + '_per_s']:,.0f}")
        for k, label in LABELS.items() if k + "_per_s" in r]))
    if "nautilus_per_s" not in r:
        con.print("nautilus_trader is not installed: its row is left out (pip install nautilus_trader)")
    rows: list[tuple[str, ...]] = [
            ("batched / talib_full", f"{r['batched_vs_talib_full']:.2f}", f">= {BATCHED_TARGET:g}",
             mark(r["batched_target_met"])),
            ("single, updates/s", f"{r['tickdeck_single_per_s']:,.0f}", f">= {SINGLE_TARGET:,.0f}",
             mark(r["single_target_met"]))]
    rows += [(k.replace("_vs_", " / "), f"{r[k]:,.2f}x", "-", "-")
             for k in ("batched_vs_talipp", "single_vs_talipp", "batched_vs_nautilus", "single_vs_nautilus",
                       "batched_vs_talib_window", "single_vs_talib_window", "single_vs_talib_full") if k in r]
    con.print(table("Ratios", ("ratio", "value", "target", "status"), rows))
    con.print(table(f"Memory: RSS of a subprocess importing only the engine ({r['memory_engine']}; "
                    "MB = 10^6 bytes)", ("part", "MB"), [
        ("Python + numpy", f"{r['rss_python_mb']:.1f}"),
        ("+ llvmlite's LLVM library loaded",
         f"{r['rss_llvm_mb']:.1f}"),
        ("+ numba and the engine's modules imported (a floor)", f"{r['rss_engine_import_mb']:.1f}"),
        ("+ the first compiled call: numba's CPU target and LLVM's JIT set up (a floor)",
         f"{r['rss_jit_mb']:.1f}"),
        ("+ the engine's kernels loaded from numba's cache", f"{r['rss_kernels_mb']:.1f}"),
        ("- LLVM's code pages given back once they are loaded (engine.memory)",
         f"-{r['rss_released_mb']:.1f}"),
        ("[bold]= baseline[/]", f"{r['rss_baseline_mb']:.1f}"),
        (f"+ engine data: {r['memory_symbols']:,} symbols x {r['memory_outputs']} outputs, "
         f"{r['memory_bars']:,} bars of history, rings of {r['memory_ring']:,} bars "
         f"({r['ring_nbytes_mb']:.1f} MB)", f"{r['rss_data_mb']:.1f}"),
        (f"[bold]= total[/], target < {RSS_TARGET_MB:g} MB: {mark(r['rss_target_met'])}",
         f"{r['rss_total_mb']:.1f}"),
        ("  of which file-backed (shared libraries' pages)", f"{r['rss_file_mb']:.1f}"),
        ("the engine's own arrays (nbytes)", f"{r['engine_nbytes_mb']:.1f}")]))
    if not r["memory_cache_warm"]:
        con.print("[bold red]numba's cache was cold in the probe (engine sources changing?): the "
                  "baseline includes compiling the kernels, not just loading them[/]")
    con.print(_sanity_line(r), style=None if r["sanity_ok"] else "bold white on red")


def main(args: argparse.Namespace) -> int:
    """``tickdeck bench [--json]``; ``args.quick`` (hidden) shrinks every size for tests. Exit status 1
    when the sanity check failed or a target was missed (each named on stderr), 2 without the anchors."""
    result = run(QUICK if getattr(args, "quick", False) else FULL)
    failed = failures(result)
    result["pass"], result["failed"] = not failed, failed
    if getattr(args, "json", False):
        print(json.dumps(result), flush=True)
    else:
        render(result)
        sys.stdout.flush()
    for line in failed:
        print(f"tickdeck bench: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tickdeck bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    raise SystemExit(main(parser.parse_args()))

"""The engine's bar path (live ticks, history, clock closes, refills) runs the kernel compiled for its
indicator set when that set was compiled ahead, and the plan interpreter otherwise, with the same numbers:
bit for bit against each other, and TA-Lib's on the bars the engine closed.

The set is the bench's six (``engine.precompile`` compiles it), so no test here compiles a kernel."""

from __future__ import annotations

from typing import Any

import numpy as np
import talib

from engine.config import Config
from engine.indicators import dispatch
from engine.precompile import BENCH_SET
from engine.runtime import build_engine
from engine.signals.rules import load_rules
from engine.tick_engine import Engine
from engine.ticks import BAR_DTYPE
from tests.unit.refill_tape import (
    MIN,
    NAMES,
    T0,
    assert_same,
    cut,
    drive,
    gap_at,
    interrupted,
    news,
    slot_state,
    tape,
)

RULES: tuple[dict[str, Any], ...] = (
    {"id": "close-x-sma", "kind": "cross", "a": "close", "b": "sma_20", "cooldown": "3m"},
    {"id": "rsi-mid", "kind": "cross", "a": "rsi_14", "b": 50},
    {"id": "macd-x", "kind": "cross", "a": "macd_12_26_9", "b": "macd_signal_12_26_9"},
    {"id": "live-x-ema", "kind": "cross", "a": "close", "b": "ema_20", "on": "live", "cooldown": "2m"},
)


def make(specialise: bool) -> Engine:
    e = Engine(BENCH_SET, MIN, capacity=4, depth=2000, rules=load_rules([(dict(r), "t") for r in RULES]),
               batch_capacity=64, specialise=specialise)
    for name in NAMES:
        e.add_symbol(name)
    return e


def history(minutes: int) -> np.ndarray:
    """One-minute bars of every symbol before ``T0``, interleaved in time order."""
    rng = np.random.default_rng(7)
    bars = np.zeros(minutes * len(NAMES), dtype=BAR_DTYPE)
    bars["sym"] = np.tile(np.arange(len(NAMES)), minutes)
    bars["t"] = np.repeat(T0 - (minutes - np.arange(minutes)) * MIN, len(NAMES))
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, len(bars))))
    bars["open"] = close * np.exp(rng.normal(0.0, 0.001, len(bars)))
    bars["close"] = close
    bars["high"] = np.maximum(bars["open"], close) * 1.002
    bars["low"] = np.minimum(bars["open"], close) * 0.998
    bars["volume"] = rng.gamma(2.0, 50.0, len(bars))
    return bars


def test_the_bar_path_on_the_compiled_kernel_equals_the_interpreter_and_talib() -> None:
    ticks = tape(150, seed=11)
    items = interrupted(ticks, cut(ticks, seed=12), gap_at(ticks, 1, T0 + 60 * MIN, T0 + 70 * MIN))
    fast, plain = make(True), make(False)
    assert fast.bank.kernel is not None and plain.bank.kernel is None
    assert fast.bank.apply_bars.func is fast.bank.kernel.apply_bars  # the bar path's commits go there
    assert plain.bank.apply_bars.func is dispatch.run_bars
    out: dict[bool, list[Any]] = {}
    for e in (fast, plain):
        signals = e.ingest_history(history(90))
        signals += drive(e, items)
        out[e is fast] = news(signals)
    assert out[True] == out[False] and len(out[True]) > 20  # history, live and refill signals alike
    for slot in range(len(NAMES)):
        assert_same(slot_state(fast, slot), slot_state(plain, slot), f"{NAMES[slot]}: ")
    assert fast.stats == plain.stats and fast.stats.refills == 1
    for slot in range(len(NAMES)):
        _, bars = fast.history.tail(slot)
        h, low, c = bars[:, 1], bars[:, 2], bars[:, 3]
        macd, signal, _ = talib.MACD(c, 12, 26, 9)
        want = {"sma_20": talib.SMA(c, 20), "ema_20": talib.EMA(c, 20), "rsi_14": talib.RSI(c, 14),
                "macd_12_26_9": macd, "macd_signal_12_26_9": signal, "atr_14": talib.ATR(h, low, c, 14)}
        for name, series in want.items():
            got = fast.bank.committed[fast.bank.row(name), slot]
            np.testing.assert_allclose(got, series[-1], rtol=1e-9, err_msg=f"{NAMES[slot]} {name}")


def test_the_default_config_engine_runs_its_compiled_kernel() -> None:
    """``engine.precompile`` compiles the default config's engine set, so its bar path is specialised."""
    engine = build_engine(Config())
    assert engine.bank.kernel is not None
    assert engine.bank.apply_bars.func is engine.bank.kernel.apply_bars


def test_the_backtest_of_the_default_rules_runs_their_compiled_kernel() -> None:
    """``tickdeck backtest`` replays through an engine of the rules' outputs alone: compiled ahead too."""
    from engine.backtest import select_rules

    rules = select_rules(Config().rules)
    engine = Engine((), MIN, capacity=3, depth=1, rules=rules)
    assert engine.bank.kernel is not None

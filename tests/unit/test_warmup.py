"""History is not news: bars from the past warm the engine exactly as the live tape would, and what they
make the rules fire carries ``warmup=True``, from the engine through the runtime to the headless service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.config import load_config
from engine.feeds.base import Feed, FeedItem, FeedStatus, HistoryBars
from engine.runtime import Runtime
from engine.signals.events import Signal
from engine.signals.rules import load_rules
from engine.snapshot import Update
from engine.tick_engine import Engine
from engine.ticks import SymbolTable, make_bars, make_ticks
from tests.data import random_walk

SEC = 1_000_000_000
MIN = 60 * SEC
T0 = 1_700_000_000 * SEC - (1_700_000_000 * SEC) % (86_400 * SEC)  # a UTC midnight
ROOT = Path(__file__).resolve().parents[2]
EVERY_BAR = [  # a close rule and a live rule that fire on (almost) every bar of a random walk
    ({"id": "close_x_sma", "kind": "cross", "a": "close", "b": "sma_3", "direction": "both"}, "test"),
    ({"id": "live_x_sma", "kind": "cross", "a": "close", "b": "sma_3", "direction": "both", "on": "live"},
     "test"),
]


def walk_bars(n: int, slot: int = 0, start: int = T0, seed: int = 1) -> np.ndarray:
    """``n`` one-minute bars of a random walk, as ``BAR_DTYPE``."""
    w = random_walk(n, seed=seed)
    bars = make_bars(n)
    bars["sym"], bars["t"] = slot, start + np.arange(n, dtype=np.int64) * MIN
    for name, values in (("open", w.o), ("high", w.h), ("low", w.l), ("close", w.c), ("volume", w.v)):
        bars[name] = values
    return bars


def tick(slot: int, ts: int, price: float, size: float = 1.0) -> np.ndarray:
    out = make_ticks(1)
    out["sym"], out["ts"], out["price"], out["size"] = slot, ts, price, size
    return out


def engine(rules: list[tuple[dict[str, Any], str]] | None = None) -> Engine:
    e = Engine(["sma_3", "rsi_14", "ema_5"], MIN, capacity=4, depth=500, rules=load_rules(rules or EVERY_BAR))
    e.add_symbol("AAA")
    e.add_symbol("BBB")
    return e


# --- the engine ------------------------------------------------------------------------------------

def test_history_builds_the_same_bars_and_indicators_as_the_live_tape() -> None:
    bars = walk_bars(200)
    hist, live = engine(), engine()
    hist.ingest_history(bars)
    for b in bars:  # the same bars as live trades: open, high, low, close, the volume on the close
        for ts, price, size in ((0, b["open"], 0.0), (1, b["high"], 0.0), (2, b["low"], 0.0),
                                (3, b["close"], b["volume"])):
            live.ingest(tick(0, int(b["t"]) + ts, float(price), float(size)))
    for e in (hist, live):
        e.close_due(int(bars["t"][-1]) + MIN)
    t_h, b_h = hist.history.tail(0)
    t_l, b_l = live.history.tail(0)
    np.testing.assert_array_equal(t_h, bars["t"])
    np.testing.assert_array_equal(t_h, t_l)
    np.testing.assert_array_equal(b_h, b_l)  # bit for bit, volume included
    np.testing.assert_array_equal(b_h[:, 4], bars["volume"])
    np.testing.assert_array_equal(hist.bank.committed[:, 0], live.bank.committed[:, 0])
    assert (hist.stats.ticks, hist.stats.history_bars, hist.stats.bars) == (0, 200, 200)  # ticks: live only
    assert (live.stats.ticks, live.stats.history_bars) == (800, 0)


def test_signals_of_history_bars_are_warm_up_and_the_bar_the_tape_continues_is_live() -> None:
    e = engine()
    bars = walk_bars(100)
    warm = [s for i in range(len(bars)) for s in e.ingest_history(bars[i : i + 1])]  # a bar a batch
    assert len(warm) > 20 and all(s.warmup for s in warm)
    assert max(s.bar_time for s in warm if s.rule == "close_x_sma") <= int(bars["t"][-2])
    assert e.forming_bar(0) is not None and e.forming_bar(0)[0] == int(bars["t"][-1])  # still forming
    assert {s.rule for s in warm} == {"close_x_sma", "live_x_sma"}  # on = "live" rules warm up too
    forming = int(bars["t"][-1])
    last = float(bars["close"][-1])
    # the live tape takes over in the forming bar, then starts the next ones
    signals: list[Signal] = []
    for i, price in enumerate((last * 1.05, last * 0.9, last * 1.2, last * 0.8)):
        signals += e.ingest(tick(0, forming + 30 * SEC + i * MIN, price))
        signals += e.close_due(forming + 30 * SEC + i * MIN)
    assert signals and not any(s.warmup for s in signals)
    closed = [s for s in signals if s.rule == "close_x_sma"]
    assert closed and min(s.bar_time for s in closed) == forming  # the mixed bar is a live bar


def test_a_history_bar_the_clock_closes_before_its_symbol_trades_stays_history() -> None:
    walk = walk_bars(60)
    reference = engine()
    reference.ingest_history(walk)
    found = [*reference.close_due(int(walk["t"][-1]) + MIN), *engine().ingest_history(walk)]
    fired = sorted({s.bar_time for s in found if s.rule == "close_x_sma"})
    bars = walk[walk["t"] <= fired[-1]]  # history that ends on a bar where the close rule fires
    e = engine()
    e.ingest_history(bars[:-1])
    e.ingest_history(bars[-1:])  # a later batch of history: one more bar, and nothing live for it
    e.ingest(tick(1, int(bars["t"][-1]) + 10 * SEC, 50.0))  # another symbol trades live meanwhile
    late = [s for s in e.close_due(int(bars["t"][-1]) + MIN) if s.rule == "close_x_sma"]
    assert late and all(s.warmup and s.bar_time == int(bars["t"][-1]) and s.symbol == "AAA" for s in late)
    assert e.forming_bar(0) is None


def test_finer_history_aggregates_into_the_engines_bars() -> None:
    e = Engine(["sma_3"], 5 * MIN, capacity=2, depth=50)
    e.add_symbol("AAA")
    bars = walk_bars(50)  # one-minute history into five-minute bars
    e.ingest_history(bars)
    e.close_due(int(bars["t"][-1]) + 5 * MIN)
    t, got = e.history.tail(0)
    assert len(t) == 10 and np.all(np.diff(t) == 5 * MIN)
    first = bars[:5]
    assert got[0].tolist() == [first["open"][0], first["high"].max(), first["low"].min(), first["close"][-1],
                               pytest.approx(first["volume"].sum())]


def test_backtests_and_plain_ingest_stay_live() -> None:
    """``ingest`` without ``warmup`` is the live tape (a replay, a backtest): nothing is marked."""
    e = engine()
    b = walk_bars(80)
    signals: list[Signal] = []
    for row in b:
        signals += e.ingest(tick(0, int(row["t"]), float(row["close"]), float(row["volume"])))
    assert signals and not any(s.warmup for s in signals)


# --- the event -------------------------------------------------------------------------------------

def test_warmup_is_in_the_dict_and_json_and_reads_back() -> None:
    s = Signal("AAA", "r", "up", T0, 10.0, {"sma_3": 9.5}, T0 + 1, warmup=True)
    d = s.to_dict()
    assert d["warmup"] is True and json.loads(json.dumps(d))["warmup"] is True
    assert Signal.from_dict(d) == s
    old = {k: v for k, v in d.items() if k != "warmup"}  # a publisher from before the field
    assert Signal.from_dict(old).warmup is False
    with pytest.raises(ValueError, match="warmup"):
        Signal.from_dict({**d, "warmup": "yes"})
    assert Signal("AAA", "r", "up", T0, 10.0, {}, T0).warmup is False  # live unless said


# --- the runtime -----------------------------------------------------------------------------------

class Scripted(Feed):
    """A feed that yields a fixed list of items, all at once (the engine then finds them queued)."""

    name = "scripted"
    realtime = False

    def __init__(self, symbols: SymbolTable, items: list[FeedItem], clock: int) -> None:
        super().__init__(symbols)
        self.items, self.clock = items, clock

    async def stream(self) -> AsyncIterator[FeedItem]:
        yield FeedStatus(self.name, "live")
        for item in self.items:
            yield item

    def now_ns(self) -> int:
        return self.clock


def test_the_runtime_never_merges_history_into_ticks_nor_hands_it_to_the_taps() -> None:
    """History of AAA, its live ticks, then history of BBB (a symbol loaded later), more live ticks: all
    queued before the engine takes any, as when it falls behind."""
    e = Engine(["sma_3"], MIN, capacity=4, depth=500, rules=load_rules(EVERY_BAR))
    aaa, bbb = e.add_symbol("AAA"), e.add_symbol("BBB")
    history_a, history_b = walk_bars(120, aaa), walk_bars(120, bbb, seed=2)
    forming = int(history_a["t"][-1])
    last = float(history_a["close"][-1])
    live = [tick(aaa, forming + MIN * i + 5 * SEC, last * (1 + 0.03 * (-1) ** i)) for i in range(1, 12)]
    items: list[FeedItem] = [HistoryBars(history_a), *live[:5], HistoryBars(history_b), *live[5:]]
    feed = Scripted(e.symbols, items, clock=int(live[-1]["ts"][0]))
    runtime = Runtime(load_config(overrides={"engine.interval": "1m"}, env={}), engine=e, feed=feed)
    tapped: list[np.ndarray] = []
    runtime.taps.append(tapped.append)
    updates: list[Update] = []
    asyncio.run(runtime.run(updates.append, lambda status: None))
    signals = [s for u in updates for s in u.signals]
    a_live = [s for s in signals if s.symbol == "AAA" and s.bar_time > forming]
    assert a_live and not any(s.warmup for s in a_live)
    assert all(s.warmup for s in signals if s.symbol == "AAA" and s.bar_time < forming)
    b = [s for s in signals if s.symbol == "BBB"]
    assert len(b) > 20 and all(s.warmup for s in b)  # BBB's history: never taken for live ticks
    assert len(tapped) == len(live) and all(t.dtype == live[0].dtype for t in tapped)
    assert e.stats.history_bars == 240 and e.stats.ticks == len(live)
    assert runtime.metrics.batches == len(live) and runtime.metrics.coalesced > 0  # ticks were merged


def test_history_leaves_its_last_bar_to_the_live_tape_however_long_it_took() -> None:
    """Taking a long history in can outlast a bar: the bar forming at its end still gets the live trades
    of that time (the feed's first batch covers it) and closes as a live bar, with all its volume."""
    e = Engine(["sma_3"], MIN, capacity=4, depth=500, rules=load_rules(EVERY_BAR))
    slot = e.add_symbol("AAA")
    bars = walk_bars(100, slot)
    forming = int(bars["t"][-1])
    runtime = Runtime(load_config(overrides={"engine.interval": "1m"}, env={}), engine=e,
                      feed=Scripted(e.symbols, [], clock=0))
    late = forming + 3 * MIN  # the engine finished with the history three bars later
    runtime.process(HistoryBars(bars), late)
    assert e.forming_bar(slot) is not None and e.forming_bar(slot)[0] == forming
    first = tick(slot, forming + 50 * SEC, float(bars["close"][-1]) * 1.5, 7.0)  # in the forming bar
    signals = runtime.process(first, late).signals
    _, closed = e.history.tail(slot, 1)
    assert closed[0, 4] == bars["volume"][-1] + 7.0 and e.stats.late_ticks == 0
    on_it = [s for s in signals if s.bar_time == forming]  # (a 50 % jump: the rules cross on it)
    assert on_it and not any(s.warmup for s in on_it)


# --- the headless service --------------------------------------------------------------------------

WARMUP_CONFIG = """
[[rules]]
id = "close_x_ema"
kind = "cross"
a = "close"
b = "ema_20"
direction = "both"

[[sinks]]
type = "jsonl"
name = "news"
path = "news.jsonl"

[[sinks]]
type = "jsonl"
name = "everything"
path = "everything.jsonl"
warmup = true
"""


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in data.splitlines() if line.endswith(b"}")]


def test_a_restarted_headless_sim_sends_no_past_bar_signals_unless_a_sink_asks(tmp_path: Path) -> None:
    """The service on the sim (300 bars of one-second history at start): its first second sends the
    history's signals only to the sink with ``warmup = true``; stdout and the other sink get news only."""
    config = tmp_path / "tickdeck.toml"
    config.write_text(WARMUP_CONFIG, encoding="utf-8")
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    news, everything = tmp_path / "news.jsonl", tmp_path / "everything.jsonl"
    env = {**os.environ, "TICKDECK_FEEDS_SIM_RATE": "2000"}
    cmd = [sys.executable, "-m", "console", "--headless", "--feed", "sim", "--config", str(config),
           "--interval", "1s", "--status-every", "0"]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 240

            def wait_for(what: str, ready: Callable[[], bool]) -> None:
                while not ready():
                    assert proc.poll() is None, stderr_path.read_text()
                    assert time.monotonic() < deadline, f"no {what}"
                    time.sleep(0.05)

            wait_for("history signals", lambda: any(d["warmup"] for d in read_lines(everything)))
            wait_for("live signals", lambda: len(read_lines(news)) >= 5)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, stderr_path.read_text()
    summary = json.loads(stderr_path.read_text().rstrip("\n").splitlines()[-1])
    all_lines, news_lines = read_lines(everything), read_lines(news)
    out_lines = [json.loads(line) for line in stdout_path.read_text().splitlines()]
    history = [d for d in all_lines if d["warmup"]]
    assert len(history) > 100  # 300 bars of 40 symbols: a cross every few bars
    assert not any(d["warmup"] for d in news_lines + out_lines)
    assert news_lines == out_lines == [d for d in all_lines if not d["warmup"]]
    # the news is about bars from the restart on (the bar forming then can be history for a symbol the
    # clock closed before its first live trade, and news for one whose first trade opened it)
    assert max(d["bar_time"] for d in history) <= min(d["bar_time"] for d in news_lines)
    assert summary["signals"] == len(news_lines) and summary["warmup_signals"] == len(history)

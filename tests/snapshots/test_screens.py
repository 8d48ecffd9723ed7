"""What the console looks like, at 80x24 (an SSH session on a small VPS) and 160x48, in every theme.

The screens are compared with SVG snapshots that were checked by eye when accepted
(``pytest tests/snapshots --snapshot-update`` rewrites them after a deliberate change). To make a
screen repeatable, the app runs on a runtime that publishes one fixed market (hand-made quotes and
signals) and stays live, the clock is UTC, and the performance panel shows a fixed sample instead of this
process's own figures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from console.app import build_app
from console.perf import CacheRate, PerfSample
from engine.config import Config
from engine.console_runtime import ViewOnlyRuntime
from engine.feeds.base import FeedStatus
from engine.signals.events import Signal
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote, Update
from themes import THEME_NAMES

AT = 1_763_740_800_000_000_000  # 2025-11-21 16:00:00 UTC
MIN = 60_000_000_000
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "JPM", "V", "UNH", "XOM")
SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


def market() -> tuple[MarketSnapshot, tuple[Signal, ...]]:
    """Quotes that rise, fall and stay flat, with warm and warming-up indicators, and three signals."""
    quotes = []
    for i, name in enumerate(SYMBOLS):
        base = 50.0 + 37.0 * i
        drift = (i % 3 - 1) * 0.004 * base  # up, flat-ish, down in turn
        closes = base + drift * np.linspace(-1, 1, 61) + 0.01 * base * np.sin(np.arange(61) / (2 + i % 4))
        closes.flags.writeable = False
        first, last = base - drift, float(closes[-1])
        values = {"rsi_14": 30.0 + 4.5 * i, "macd_hist_12_26_9": (i - 5) * 0.013}
        if name == "XOM":  # still warming up
            values = {"rsi_14": float("nan"), "macd_hist_12_26_9": float("nan")}
        quotes.append(Quote(name, last, last - first, 100 * (last - first) / first, 1_000.0 * (i + 1) ** 2,
                            closes, values, AT - MIN))
    signals = (
        Signal("NVDA", "rsi_oversold", "up", AT - 3 * MIN, 124.5, {"rsi_14": 29.4, "level": 30.0}, AT),
        Signal("META", "macd_cross", "down", AT - 2 * MIN, 240.1,
               {"macd_12_26_9": 0.41, "macd_signal_12_26_9": 0.43}, AT),
        Signal("JPM", "volume_spike", "up", AT - MIN, 346.0, {"volume_zscore_20": 3.4, "level": 3.0}, AT),
    )
    return MarketSnapshot(AT, tuple(quotes), ticks=123_456, bars=7_890), signals


HEALTH = PipelineHealth(lag_p50_ms=0.8, lag_p99_ms=4.2, queue_depth=0, queue_depth_max=3, coalesced=2)
SAMPLE = PerfSample(
    at=0.0, cpu_percent=23.0, rss_bytes=212 * 2**20, bytes_per_s=18_000.0, bytes_total=4_000_000,
    ticks_in_per_s=2_000.0, ticks_processed_per_s=2_000.0, backlog=0, engine_p50_us=160.0,
    engine_p99_us=420.0, signal_p50_ms=1.5, signal_p99_ms=6.0, lag_p50_ms=0.8, lag_p99_ms=4.2,
    loop_lag_ms=1.1, frame_p50_ms=6.5, frame_max_ms=12.0, queue_depth=0, queue_depth_max=3, coalesced=2,
    coalesced_per_s=0.0, gc_per_s=12.0, gc_collections=(400, 30, 2),
    caches=(CacheRate("rows", 0.92, 5_400),),
    feed="sim", reconnects=0, bad_messages=0, gaps=0, duplicates=0,
)


class StillRuntime(ViewOnlyRuntime):
    """A runtime that publishes one fixed market, says it is live, and then holds still."""

    def __init__(self) -> None:
        self.feed = SimpleNamespace(name="sim", market="sim", closed_universe=True, universe=lambda: SYMBOLS)
        self.watch = SYMBOLS

    async def run(self, on_update: Callable[[Update], None], on_status: Callable[[FeedStatus], None]) -> None:
        snapshot, signals = market()
        on_status(FeedStatus("sim", "live", at_ns=AT))
        on_update(Update(signals, snapshot, HEALTH))
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKDECK_STATE_DIR", str(tmp_path / "state"))


def still_app(theme: str) -> Any:
    from engine.config import CONFIG_DIR_VAR, load_config

    config: Config = load_config(overrides={"ui.theme": theme}, env={CONFIG_DIR_VAR: os.devnull})
    app = build_app(config, StillRuntime(), saved_theme=False)
    app.perf.sample = lambda health=None: SAMPLE  # type: ignore[method-assign]
    return app


async def settled(pilot: Any) -> None:
    app = pilot.app
    for _ in range(100):
        if app.watchlist.snapshot is not None and len(app.signal_log.shown) == 3:
            break
        await pilot.pause(0.05)
    app.perf_panel.history = ()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("theme", THEME_NAMES)
def test_main_screen(snap_compare: Any, theme: str, size: str) -> None:
    assert snap_compare(still_app(theme), terminal_size=SIZES[size], run_before=settled)


def test_main_screen_80x24_with_the_performance_panel(snap_compare: Any) -> None:
    assert snap_compare(still_app("dark"), press=["p"], terminal_size=(80, 24), run_before=settled)


def test_add_prompt_80x24(snap_compare: Any) -> None:
    app = still_app("ansi16")
    assert snap_compare(app, press=["a", "M", "S"], terminal_size=(80, 24), run_before=settled)


def test_help_screen_80x24(snap_compare: Any) -> None:
    app = still_app("dark")
    assert snap_compare(app, press=["question_mark"], terminal_size=(80, 24), run_before=settled)

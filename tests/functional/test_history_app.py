"""``tickdeck --feed binance`` starts warm: against the Binance stand-ins (a market with a past, served
over REST and streamed from the same tape), the header shows ``history n/m`` while history loads, and
every row then shows RSI 14 and SMA 200, which without history would take 15 minutes and 3 hours."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from bench.servers.history import Market
from console.app import build_app
from engine.config import Config
from engine.snapshot import PipelineHealth
from tests.functional.support import wait_for
from tests.functional.test_app import SIZE, rows
from widgets.formatting import MISSING
from widgets.header import HeaderState, render_header

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def header(app: object) -> str:
    return render_header(app.header.header_state()).plain  # type: ignore[attr-defined]


def warm(shown: dict[str, list[str]]) -> bool:
    """Every symbol has a row with a price, an RSI 14 and an SMA 200 (the last two columns but one)."""
    return set(shown) == set(SYMBOLS) and all(
        r[1] != MISSING and all(_number(c) for c in r[-3:-1]) for r in shown.values())


def _number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell.replace(",", "")))
    except ValueError:
        return False


async def test_every_row_shows_rsi_14_and_sma_200_once_its_history_is_in(
        make_config: Callable[..., Config]) -> None:
    market = Market(SYMBOLS, bars=260, rate=20.0)
    await market.start()
    try:
        market.rest.gate = asyncio.Event()  # history waits: the console must be up and live meanwhile
        config = make_config({"feed.name": "binance", "feeds.binance.url": market.ws_url,
                              "feeds.binance.rest_url": market.rest.url, "feeds.binance.symbols": SYMBOLS,
                              "engine.interval": "1m", "ui.columns": ("rsi_14", "sma_200")})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "history 0/3" in header(app), "the header to show history 0/3")
            assert app.header.state == "live"
            market.rest.gate.set()
            await wait_for(pilot, lambda: warm(rows(app)), "RSI 14 and SMA 200 on every row")
            assert "history" not in header(app)
            health = app.header.health
            assert health is not None and (health.history_done, health.history_total) == (3, 3)
            assert app.runtime is not None and app.runtime.engine.stats.history_bars >= 3 * 201
    finally:
        await market.stop()


def test_the_header_shows_history_progress_only_while_it_loads() -> None:
    loading = HeaderState("binance", "live", health=PipelineHealth(history_done=12, history_total=40))
    assert "history 12/40" in render_header(loading).plain
    done = HeaderState("binance", "live", health=PipelineHealth(history_done=40, history_total=40))
    assert "history" not in render_header(done).plain

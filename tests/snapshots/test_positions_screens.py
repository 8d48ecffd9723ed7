"""The position columns with the totals row, and the portfolio pane, at 80x24 and 160x48.

The fixed market of ``test_screens`` with a previous close per quote and positions saved in the state
directory before the app starts: long and short, a $5-ish price's small move, a partly closed position
with realized P&L, and a symbol that trades at a high price.
"""

from __future__ import annotations

import dataclasses
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from console.app import build_app
from console.state import StateStore, positions_change
from engine.config import Config
from engine.positions.book import Lot, PositionBook
from engine.runtime import Runtime
from engine.snapshot import MarketSnapshot
from tests.snapshots.test_screens import SAMPLE, SIZES, StillRuntime, market, settled

LOTS = {
    "AAPL": [("10", "48.10", "1.00")],
    "MSFT": [("-20", "90.00", "0")],
    "NVDA": [("100", "120.5", "2.50"), ("-40", "126", "1.25")],
    "GOOGL": [("0.5", "190.00", "0")],
    "JPM": [("3", "360", "0")],
}


class PricedRuntime(StillRuntime):
    """The fixed market, each quote with a previous close 1 % below its first close."""

    def __init__(self) -> None:
        super().__init__()
        snapshot, signals = market()
        quotes = tuple(dataclasses.replace(q, previous_close=round(float(q.closes[0]) * 0.99, 2))
                       for q in snapshot.quotes)
        self.priced = (MarketSnapshot(snapshot.at_ns, quotes, snapshot.ticks, snapshot.bars), signals)

    async def run(self, on_update: Any, on_status: Any) -> None:
        import asyncio

        from engine.feeds.base import FeedStatus
        from engine.snapshot import Update
        from tests.snapshots.test_screens import AT, HEALTH

        snapshot, signals = self.priced
        on_status(FeedStatus("sim", "live", at_ns=AT))
        on_update(Update(signals, snapshot, HEALTH))
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def positions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("TICKDECK_STATE_DIR", str(state))
    book = PositionBook()
    for symbol, lots in LOTS.items():
        for q, p, f in lots:
            book.add(symbol, Lot(Decimal(q), Decimal(p), Decimal(f)))
    StateStore(state).apply([positions_change("sim", book)])


def priced_app() -> Any:
    from engine.config import CONFIG_DIR_VAR, load_config

    config: Config = load_config(overrides={"ui.theme": "dark"}, env={CONFIG_DIR_VAR: os.devnull})
    app = build_app(config, cast(Runtime, PricedRuntime()), saved_theme=False)
    app.perf.sample = lambda health=None: SAMPLE  # type: ignore[method-assign]
    return app


async def valued(pilot: Any) -> None:
    await settled(pilot)
    app = pilot.app
    for _ in range(100):
        if app.totals.totals is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_position_columns_and_totals_row(snap_compare: Any, size: str) -> None:
    assert snap_compare(priced_app(), terminal_size=SIZES[size], run_before=valued)


@pytest.mark.parametrize("size", SIZES)
def test_portfolio_pane(snap_compare: Any, size: str) -> None:
    assert snap_compare(priced_app(), press=["w"], terminal_size=SIZES[size], run_before=valued)

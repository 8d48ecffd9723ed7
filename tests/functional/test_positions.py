"""Positions from the keyboard, on the seeded sim, as users run it (``build_app``): entry, partial close,
edit, delete and undo, the columns and the totals row, sorting by P&L, a restart, and bad input.

Each change is checked on screen, in the position book and in the state file on disk.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from console.app import TickdeckApp, build_app
from engine.config import Config
from tests.functional.support import record_notifications, wait_for
from widgets.sort_picker import SortPicker

SIZE = (160, 40)
SAVE_WAIT_S = 30.0


async def ready(pilot, app: TickdeckApp) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.book is not None and app.position_book is not None
                   and app.watchlist.selected is not None and app.watchlist.snapshot is not None
                   and len(app.watchlist.snapshot.quotes) > 3, "the watchlist's rows")


def saved_positions(app: TickdeckApp, state_dir: Path) -> dict:  # type: ignore[type-arg]
    assert app.saver.wait(SAVE_WAIT_S), "the state writer did not finish"
    return json.loads((state_dir / "state.json").read_text()).get("positions", {}).get("sim", {})


async def enter(pilot, text: str, key: str = "e") -> None:  # type: ignore[no-untyped-def]
    """Open the position prompt, replace what it holds with ``text``, press enter."""
    await pilot.press(key)
    pilot.app.prompt.input.value = ""
    await pilot.press(*text)
    await pilot.press("enter")
    await pilot.pause()


def row(app: TickdeckApp, symbol: str) -> dict[str, str]:
    """The row's cells by column key."""
    texts = app.watchlist.rows_text()[symbol]
    return {spec.key: text for spec, text in zip(app.watchlist._specs, texts, strict=True)}


async def test_a_lot_entered_with_the_keyboard_shows_in_the_columns_and_is_saved(
        config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbol = app.watchlist.symbols[1]
        assert app.watchlist.positions == ()  # no position: the market columns
        await enter(pilot, f"{symbol.lower()} 10 @ 100 + 1.5")
        assert not app.prompt.asking
        assert app.position_book is not None
        position = app.position_book.get(symbol)
        assert position is not None and position.quantity == 10 and position.cost == Decimal("1001.5")
        assert saved_positions(app, state_dir) == {symbol: {"lots": [
            {"quantity": "10", "price": "100", "fee": "1.5", "date": position.lots[0].date.isoformat()}]}}
        assert app.watchlist.positions == config.ui.position_columns  # switched on by the position
        await wait_for(pilot, lambda: row(app, symbol).get("value", "—") != "—", "a valued row")
        cells = row(app, symbol)
        assert cells["quantity"] == "10" and cells["avg_cost"] != "—"
        assert app.totals.display and app.totals.totals is not None
        assert app.totals.totals.positions == 1
        other = app.watchlist.symbols[0]
        assert row(app, other)["quantity"] == ""  # a row without a position is blank there


async def test_a_partial_close_books_realized_pnl_and_undo_takes_it_back(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        symbol = app.watchlist.symbols[0]
        await enter(pilot, f"{symbol} 10 @ 100")
        await enter(pilot, f"{symbol} -4 @ 110 + 1")
        assert app.position_book is not None
        position = app.position_book.get(symbol)
        assert position is not None and position.quantity == 6 and position.realized == Decimal("39")
        assert any(text == f"{symbol}: bought 10, holding 10" for _, text, _ in seen)
        assert any(text.startswith(f"{symbol}: sold 4, holding 6") and "realized +39" in text
                   for _, text, _ in seen)
        await wait_for(pilot, lambda: app.totals.totals is not None and app.totals.totals.realized == 39.0,
                       "the realized P&L in the totals")
        await pilot.press("u")
        position = app.position_book.get(symbol)
        assert position is not None and position.quantity == 10 and position.realized == 0
        assert len(saved_positions(app, state_dir)[symbol]["lots"]) == 1
        await pilot.press("u")
        assert app.position_book.get(symbol) is None
        assert saved_positions(app, state_dir) == {}


async def test_edit_prefills_the_last_lot_and_delete_then_undo_restores_it(
        config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbol = app.watchlist.symbols[2]
        await enter(pilot, f"{symbol} 3 @ 50")
        assert app.watchlist.selected == symbol
        await pilot.press("E")
        assert app.prompt.asking and app.prompt.input.value == f"{symbol} 3 @ 50"
        app.prompt.input.value = f"{symbol} 5 @ 40"
        await pilot.press("enter")
        await pilot.pause()
        assert app.position_book is not None
        position = app.position_book.get(symbol)
        assert position is not None and position.quantity == 5 and position.cost == 200
        await pilot.press("ctrl+x")
        assert symbol not in app.position_book
        assert saved_positions(app, state_dir) == {}
        await pilot.press("u")
        assert app.position_book.get(symbol) == position
        assert saved_positions(app, state_dir)[symbol]["lots"][0]["quantity"] == "5"


async def test_undo_takes_back_whichever_came_last_a_position_or_a_row(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        first, second = app.watchlist.symbols[:2]
        await enter(pilot, f"{first} 1 @ 10")
        app.watchlist.select(second)
        await pilot.press("d")  # a row deleted after the position was entered
        assert second not in app.watchlist.symbols
        await pilot.press("u")
        assert second in app.watchlist.symbols  # the row first
        assert app.position_book is not None and first in app.position_book
        await pilot.press("u")
        assert first not in app.position_book  # then the position


async def test_bad_input_keeps_the_text_in_the_prompt_with_the_reason(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        symbol = app.watchlist.symbols[0]
        cases = {
            "NOSUCH 1 @ 10": "NOSUCH",
            f"{symbol} 10 182.50": "the @ between the quantity and the price is missing",
            f"{symbol} 0 @ 10": "the quantity cannot be zero",
            f"{symbol} 1 @ -5": "the price cannot be negative",
            f"{symbol} nan @ 5": "the quantity must be a number, not 'nan'",
        }
        for text, reason in cases.items():
            seen.clear()
            await enter(pilot, text)
            assert app.prompt.asking and app.prompt.input.value == text  # kept, to be corrected
            assert any(reason in message for _, message, severity in seen if severity == "error"), seen
            await pilot.press("escape")
        assert app.position_book is not None and len(app.position_book) == 0
        assert app.saver.wait(SAVE_WAIT_S) and app.saver.writes == 0  # nothing changed, nothing saved


async def test_totals_equal_the_sum_of_the_rows_as_shown(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbols = app.watchlist.symbols[:4]
        for i, symbol in enumerate(symbols):
            await enter(pilot, f"{symbol} {(i + 1) * 3 - 5} @ {7.25 * (i + 1)} + 0.10")
        await wait_for(pilot, lambda: all(row(app, s)["value"] != "—" for s in symbols), "valued rows")
        frame = app.watchlist.position_frame
        assert frame is not None
        totals = frame.totals
        shown = {s: row(app, s) for s in symbols}
        for key, name in (("value", "value"), ("pnl", "unrealized")):
            rows_sum = sum(Decimal(shown[s][key].replace(",", "")) for s in symbols)
            assert rows_sum == totals.exact(name), (key, shown)
        text = app.totals.text(totals).plain
        assert f"{totals.exact('unrealized'):+,f}" in text


async def test_the_sort_picker_offers_pnl_and_sorts_the_rows_by_it(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbols = app.watchlist.symbols[:3]
        for symbol, price in zip(symbols, ("1", "100000", "1000000"), strict=True):
            await enter(pilot, f"{symbol} 1 @ {price}")
        await pilot.press("s")
        assert isinstance(app.screen, SortPicker)
        assert "pnl" in app.screen.keys
        app.screen.dismiss(("pnl", True))
        await pilot.pause()
        await wait_for(pilot, lambda: app.watchlist.shown[:3] == symbols, "rows by P&L, biggest first")
        assert app.book is not None and app.book.current.sort == "pnl"


async def test_positions_come_back_after_a_restart(config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbol = app.watchlist.symbols[0]
        await enter(pilot, f"{symbol} 0.015 @ 64000.5 + 3.2")
        await enter(pilot, f"{symbol} -0.005 @ 65000")
        assert app.saver.wait(SAVE_WAIT_S)
        before = app.position_book.get(symbol) if app.position_book else None
    again = build_app(config)
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot, again)
        assert again.position_book is not None and again.position_book.get(symbol) == before
        assert again.watchlist.positions == config.ui.position_columns
        await wait_for(pilot, lambda: row(again, symbol)["quantity"] == "0.01", "the restored row")


async def test_c_toggles_the_position_columns_and_w_the_portfolio_pane(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("c")
        assert app.watchlist.positions == config.ui.position_columns  # on, though nothing is held
        await pilot.press("c")
        assert app.watchlist.positions == ()
        symbol = app.watchlist.symbols[0]
        await enter(pilot, f"{symbol} 2 @ 10")
        assert app.watchlist.positions == ()  # switched off by hand: stays off
        await pilot.press("w")
        assert app.portfolio.display and app.portfolio.region.height > 0
        await wait_for(pilot, lambda: [r.symbol for r in app.portfolio.rows] == [symbol], "the allocation")
        assert symbol in app.portfolio.render().plain


async def test_an_attached_console_values_the_local_positions_at_the_services_prices(
        config: Config, state_dir: Path) -> None:
    from console.state import StateStore, positions_change
    from engine.positions.book import Lot, PositionBook
    from engine.remote import RemoteRuntime
    from tests.functional.test_attach import Publisher

    async with Publisher(config) as publisher:
        remote = RemoteRuntime(publisher.sink.url)
        await remote.handshake()  # as ``tickdeck attach`` does before the console opens
        symbol = remote.watch[0]
        book = PositionBook()
        book.add(symbol, Lot(Decimal(2), Decimal("1.5")))
        StateStore(state_dir).apply([positions_change("sim", book)])  # kept under the service's feed
        app = build_app(config, remote)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.position_book is not None and symbol in app.position_book,
                           "the local positions, under the service's feed name")
            await wait_for(pilot, lambda: app.totals.totals is not None
                           and app.totals.totals.unpriced == 0, "the position valued")
            shown = app.watchlist.snapshot
            assert shown is not None
            last = shown.by_symbol()[symbol].last
            frame = app.watchlist.position_frame
            assert frame is not None
            figures = frame.get(symbol)
            assert figures is not None and abs(figures.value - 2 * last) <= 10.0 ** -figures.decimals
            await enter(pilot, f"{symbol} 1 @ 2")  # entered on the attached console: kept locally
            lots = saved_positions(app, state_dir)[symbol]["lots"]
            assert len(lots) == 2 and (lots[-1]["quantity"], lots[-1]["price"]) == ("1", "2")


async def test_frames_keep_valuing_the_positions_while_the_help_is_on_top(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await enter(pilot, f"{app.watchlist.symbols[0]} 1 @ 10")
        await pilot.press("question_mark")
        frames = app.frames
        totals = app.totals.totals
        await wait_for(pilot, lambda: app.frames >= frames + 5 and app.totals.totals != totals,
                       "frames valued behind the help screen")
        assert app.is_running


async def test_stop_and_target_typed_at_the_prompt_reach_the_detector_and_the_state_file(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        symbol = app.watchlist.symbols[0]
        await enter(pilot, f"{symbol} stop 90")  # no position yet: refused, the text kept with the reason
        assert app.prompt.asking and app.prompt.input.value == f"{symbol} stop 90"
        assert any("holds no position" in message for _, message, _ in seen), seen
        await pilot.press("escape")
        await enter(pilot, f"{symbol} 10 @ 100")
        await enter(pilot, f"{symbol} stop 90 target 120")
        assert not app.prompt.asking
        assert app.position_book is not None
        position = app.position_book.get(symbol)
        assert position is not None and (position.stop, position.target) == (Decimal(90), Decimal(120))
        assert saved_positions(app, state_dir)[symbol]["stop"] == "90"
        runtime = app.runtime
        assert runtime is not None and runtime.implements_alerts
        engine = runtime.engine  # type: ignore[attr-defined]
        slot = engine.symbols.get(symbol)
        pos = engine.detector.pos  # per slot: average cost, quantity, stop, target
        await wait_for(pilot, lambda: bool(pos[2, slot] == 90.0), "the stop in the detector")
        assert (pos[0, slot], pos[1, slot], pos[3, slot]) == (100.0, 10.0, 120.0)
        await enter(pilot, f"{symbol} stop off")
        await wait_for(pilot, lambda: bool(pos[2, slot] != pos[2, slot]), "the stop cleared (NaN)")
        assert pos[3, slot] == 120.0  # the target left out is kept

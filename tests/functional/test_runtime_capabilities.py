"""What the console offers follows what its runtime declares (``engine.console_runtime``): the same keys
on a local sim and on a console attached to a service that runs that sim, and what differs between them.

- a fixed market (``feed.closed_universe``): local, the first list holds its first rows; attached, the
  publisher's symbols are its lists' symbols and the first list holds them all;
- ``implements_watch``: local, the snapshots follow the list (a deleted row leaves them); attached, they
  carry what the publisher sends;
- ``implements_subscribe``: local, the feed is asked for what the lists hold; attached, a deleted row is
  taken back only from the publisher's symbols, and no subscription is attempted;
- ``implements_history``: local, the detail pane charts the loaded bars and ``b`` backtests them;
  attached, both say there is no local engine.
"""

from __future__ import annotations

from typing import Any

import pytest

from console.app import DEFAULT_ROWS, TickdeckApp, build_app
from engine.config import Config
from engine.console_runtime import ConsoleRuntime
from engine.remote import RemoteRuntime
from engine.runtime import Runtime
from tests.functional.support import record_notifications, wait_for
from tests.functional.test_attach import Publisher
from widgets.detail import DetailScreen

SIZE = (100, 30)


async def ready(pilot: Any, app: TickdeckApp) -> None:
    await wait_for(pilot, lambda: app.book is not None and app.watchlist.selected is not None
                   and app.watchlist.snapshot is not None, "the watchlist's rows")


async def add(pilot: Any, symbol: str) -> None:
    await pilot.press("a", *symbol, "enter")
    await pilot.pause()


def subscriptions(app: TickdeckApp) -> list[Any]:
    return [w for w in app.workers if w.group == "subscribe"]


async def test_a_local_sim_follows_the_lists_and_holds_the_bars(config: Config,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Runtime(config)
    assert isinstance(runtime, ConsoleRuntime)
    assert (runtime.implements_watch, runtime.implements_subscribe, runtime.implements_history) == (
        True, True, True)
    app = build_app(config, runtime)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        market = runtime.feed.universe()
        assert runtime.feed.closed_universe and len(market) > DEFAULT_ROWS
        assert app.watchlist.symbols == market[:DEFAULT_ROWS]  # a fixed market: its first rows
        gone = app.watchlist.selected
        assert gone is not None and gone in runtime.watch
        await pilot.press("d")
        assert gone not in app.watchlist.symbols and gone not in runtime.watch  # the snapshots follow
        await add(pilot, market[DEFAULT_ROWS])  # in the market, in no list: added and delivered
        assert market[DEFAULT_ROWS] in app.watchlist.symbols and market[DEFAULT_ROWS] in runtime.watch
        await add(pilot, "NOSUCH")
        assert ("Not added", "NOSUCH is not traded on the sim feed; nothing was added", "error") in seen
        symbol = app.watchlist.symbols[0]
        app.watchlist.select(symbol)
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, DetailScreen)
        await wait_for(pilot, lambda: detail.data is not None, "the chart of the loaded bars")


async def test_an_attached_console_shows_what_the_publisher_sends_and_refuses_the_rest(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Publisher(config) as publisher:
        remote = RemoteRuntime(publisher.sink.url)
        await remote.handshake()
        assert isinstance(remote, ConsoleRuntime)
        assert (remote.implements_watch, remote.implements_subscribe, remote.implements_history) == (
            False, False, False)
        published = remote.watch
        assert published == publisher.runtime.watch and len(published) > DEFAULT_ROWS
        app = build_app(config, remote)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot, app)
            seen = record_notifications(app, monkeypatch)
            assert app.watchlist.symbols == published  # the publisher's symbols, all of them
            gone = app.watchlist.selected
            assert gone is not None
            await pilot.press("d")
            assert gone not in app.watchlist.symbols
            assert remote.watch == published  # what is sent is the publisher's to choose
            await add(pilot, gone)  # published: it can come back
            assert gone in app.watchlist.symbols and remote.watch == published
            await add(pilot, "NOSUCH")
            assert ("Not added", "NOSUCH is not among the symbols the attached instance publishes; nothing "
                    "was added", "error") in seen
            assert not subscriptions(app)  # never asked to subscribe or unsubscribe anything
            assert [n for n in seen if n[2] == "error"] == [n for n in seen if n[0] == "Not added"]
            await pilot.press("b")
            await pilot.pause()
            assert ("No history", f"cannot backtest {gone}: no local engine (attached)", "warning") in seen
            await pilot.press("enter")
            detail = app.screen
            assert isinstance(detail, DetailScreen)
            await wait_for(pilot, lambda: "no local engine" in detail.message, "the detail pane's note")
            assert detail.data is None

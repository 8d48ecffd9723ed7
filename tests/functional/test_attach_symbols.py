"""``tickdeck attach ws://``: a publisher that starts carrying symbols after the console opened (a sharded
engine taking symbols over) has them listed by themselves, once a session, as the fleet console does.

The publisher is a ``BroadcastSink`` on 127.0.0.1 fed hand-made snapshots, so what it carries, and when,
is the test's choice; the console is built by ``build_app`` with a ``RemoteRuntime``, as the CLI does.
"""

from __future__ import annotations

import numpy as np

from console.app import TickdeckApp, build_app
from engine.config import Config
from engine.remote import RemoteRuntime
from engine.sinks.broadcast import BroadcastSink
from engine.snapshot import MarketSnapshot, Quote
from tests.functional.support import wait_for

T0 = 1_800_000_000_000_000_000


def snapshot(i: int, symbols: tuple[str, ...]) -> MarketSnapshot:
    def quote(symbol: str) -> Quote:
        closes = np.linspace(99.0, 100.0 + i, 5)
        closes.flags.writeable = False
        return Quote(symbol=symbol, last=100.0 + i, change=1.0, change_pct=1.0, volume=10.0, closes=closes,
                     values={"rsi_14": 55.0}, bar_time=T0)

    return MarketSnapshot(at_ns=T0 + i, quotes=tuple(quote(s) for s in symbols), ticks=10 * i, bars=i)


def shown(app: TickdeckApp) -> set[str]:
    """The symbols of the newest snapshot the watchlist holds."""
    snap = app.watchlist.snapshot
    return {q.symbol for q in snap.quotes} if snap is not None else set()


async def test_symbols_the_publisher_carries_later_are_listed_once_and_a_deleted_one_stays_deleted(
        config: Config) -> None:
    sink = BroadcastSink("127.0.0.1", 0, fps=50)
    sink.start()
    await sink.started()
    try:
        sink.set_source("binance", ("AAA", "BBB"), ("rsi_14",), "1m")
        remote = RemoteRuntime(sink.url)
        await remote.handshake()  # as ``tickdeck attach`` does before the console opens
        app = build_app(config, remote)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.book is not None and sink.stats()["subscriptions"] == 1,
                           "the console attached")
            sink.publish(snapshot(1, ("AAA", "BBB")))
            await wait_for(pilot, lambda: shown(app) == {"AAA", "BBB"}, "the first snapshot")
            assert app.watchlist.symbols == ("AAA", "BBB")

            sink.set_symbols(("AAA", "BBB", "CCC"))  # it takes CCC over: the symbols frame says so
            await wait_for(pilot, lambda: app.watchlist.symbols == ("AAA", "BBB", "CCC"), "CCC listed")
            sink.publish(snapshot(2, ("AAA", "BBB", "CCC", "DDD")))  # DDD: a quote it never listed
            await wait_for(pilot, lambda: app.watchlist.symbols == ("AAA", "BBB", "CCC", "DDD"),
                           "DDD listed from its quote")

            app.watchlist.select("CCC")
            await pilot.press("d")  # the user deletes one
            assert app.watchlist.symbols == ("AAA", "BBB", "DDD")
            sink.set_symbols(("AAA", "BBB", "DDD"))  # given up, then taken back
            sink.set_symbols(("AAA", "BBB", "CCC", "DDD", "EEE"))
            sink.publish(snapshot(3, ("AAA", "BBB", "CCC", "DDD", "EEE")))
            await wait_for(pilot, lambda: "EEE" in shown(app), "the snapshot with EEE")
            await wait_for(pilot, lambda: "EEE" in app.watchlist.symbols, "EEE listed")
            assert app.watchlist.symbols == ("AAA", "BBB", "DDD", "EEE")  # CCC stays deleted
            book = app.book
            assert book is not None and book.lists[0].symbols == ["AAA", "BBB", "DDD", "EEE"]
    finally:
        await sink.close(1.0)

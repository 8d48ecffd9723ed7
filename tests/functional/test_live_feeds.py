"""The console on a live exchange feed: trades from a Binance-protocol server on 127.0.0.1 reach the
watchlist through the same runtime users run, and the header shows the feed's state."""

from __future__ import annotations

from bench.servers.binance import BinanceServer
from console.app import build_app
from engine.config import load_config
from tests.functional.support import wait_for
from tests.functional.test_app import SIZE, rows


async def test_binance_trades_reach_the_watchlist_and_a_disconnect_shows() -> None:
    async with BinanceServer() as server:
        config = load_config(overrides={
            "feed.name": "binance", "feeds.binance.url": server.url,
            "feeds.binance.symbols": ("BTCUSDT", "ETHUSDT"), "engine.interval": "1m",
            "history.fetch": False,
        }, env={})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to go live")
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
            assert set(rows(app)) == {"BTCUSDT", "ETHUSDT"}
            await server.trade("BTCUSDT", "64123.50", "0.25")
            await server.trade("ETHUSDT", "3150.25", "1.5")
            await wait_for(pilot, lambda: rows(app)["BTCUSDT"][1] == "64,123.50"
                           and rows(app)["ETHUSDT"][1] == "3,150.25", "both prices on screen")
            await server.disconnect(1001)
            await wait_for(pilot, lambda: app.header.state in ("reconnecting", "connecting"),
                           "the header to show the reconnect")
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to come back")


async def test_adding_and_deleting_symbols_subscribes_and_unsubscribes_the_live_feed() -> None:
    async with BinanceServer() as server:
        config = load_config(overrides={
            "feed.name": "binance", "feeds.binance.url": server.url,
            "feeds.binance.symbols": ("BTCUSDT",), "engine.interval": "1m",
            "history.fetch": False,
        }, env={})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.header.state == "live" and app.book is not None,
                           "the feed to go live")
            await server.wait_subscribed("btcusdt@trade")
            await pilot.press("a", *"solusdt", "enter")
            await server.wait_subscribed("btcusdt@trade", "solusdt@trade")
            assert app.watchlist.symbols == ("BTCUSDT", "SOLUSDT")
            await server.trade("SOLUSDT", "142.10", "3")
            await wait_for(pilot, lambda: rows(app).get("SOLUSDT", ["", ""])[1] == "142.10", "the new price")
            app.watchlist.select("SOLUSDT")
            await pilot.press("d")
            await server.wait(lambda: all("solusdt@trade" not in c.subs for c in server.connections))
            assert app.watchlist.symbols == ("BTCUSDT",)
            await pilot.press("u")  # back in the list: subscribed again
            await server.wait_subscribed("btcusdt@trade", "solusdt@trade")

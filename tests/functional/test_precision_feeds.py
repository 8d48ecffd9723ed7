"""Each instrument at its own precision, in the running console: the tick size a live feed learns from its
service (Binance exchangeInfo, Coinbase products, Yahoo priceHint), from the stand-in servers on 127.0.0.1,
reaches the watchlist's rows; the sim, whose instruments have no tick size, shows precision taken from
the price."""

from __future__ import annotations

import time
from collections.abc import Callable

from console.app import build_app
from engine.backfill.yahoo import YahooHistory
from engine.config import Config
from engine.feeds.base import FeedCounters
from tests.functional.support import wait_for
from tests.functional.test_app import SIZE, rows
from tests.servers.binance_rest import BinanceHistoryServer
from tests.servers.coinbase import CoinbaseServer
from tests.servers.yahoo import YahooServer
from widgets import formatting as fmt


def shows(app: object, symbol: str, last: str) -> Callable[[], bool]:
    return lambda: rows(app).get(symbol, ["", ""])[1] == last  # type: ignore[arg-type]


async def test_binance_tick_sizes_from_exchange_info_set_the_decimals_of_each_row(
        make_config: Callable[..., Config]) -> None:
    async with BinanceHistoryServer() as server:
        server.rest.tick_sizes.update({"BTCUSDT": "0.01000000", "DOGEUSDT": "0.00001000",
                                       "BTCTRY": "1.00000000"})
        config = make_config({"feed.name": "binance", "feeds.binance.url": server.url,
                              "feeds.binance.rest_url": server.rest_url, "history.fetch": False,
                              "feeds.binance.symbols": ("BTCUSDT", "DOGEUSDT", "BTCTRY"),
                              "engine.interval": "1m"})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to go live")
            await server.wait_subscribed("btcusdt@trade", "dogeusdt@trade", "btctry@trade")
            now_ms = time.time_ns() // 1_000_000  # trades of now: the bar they make is still forming
            await server.trade("BTCUSDT", "64123.50000000", "0.25", at_ms=now_ms)
            await server.trade("DOGEUSDT", "0.12345000", "100", at_ms=now_ms)  # from its price alone: 0.1235
            await server.trade("BTCTRY", "2345678.00000000", "0.01", at_ms=now_ms)  # alone: 2,345,678.00
            await wait_for(pilot, shows(app, "DOGEUSDT", "0.12345"), "DOGEUSDT at its tick size")
            await wait_for(pilot, shows(app, "BTCTRY", "2,345,678"), "BTCTRY in whole lira")
            assert rows(app)["BTCUSDT"][1] == "64,123.50"
            await server.trade("DOGEUSDT", "0.12340000", "100", at_ms=now_ms + 1)
            await wait_for(pilot, lambda: rows(app)["DOGEUSDT"][2] == "-0.00005", "the change in ticks")
            asked = [q for path, q, _ in server.rest.requests if path == "/api/v3/exchangeInfo"]
            assert len(asked) == 1 and asked[0]["symbols"] == '["BTCUSDT","DOGEUSDT","BTCTRY"]'


async def test_binance_an_unknown_symbol_costs_only_its_own_tick_size(
        make_config: Callable[..., Config]) -> None:
    async with BinanceHistoryServer() as server:
        server.rest.tick_sizes.update({"DOGEUSDT": "0.00001000"})
        config = make_config({"feed.name": "binance", "feeds.binance.url": server.url,
                              "feeds.binance.rest_url": server.rest_url, "history.fetch": False,
                              "feeds.binance.symbols": ("NOSUCHUSDT", "DOGEUSDT"), "engine.interval": "1m"})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to go live")
            await server.wait_subscribed("dogeusdt@trade", "nosuchusdt@trade")
            await server.trade("DOGEUSDT", "0.12345000", "100")
            await wait_for(pilot, shows(app, "DOGEUSDT", "0.12345"), "DOGEUSDT at its tick size")
            statuses = [status for path, _, status in server.rest.requests if path == "/api/v3/exchangeInfo"]
            assert statuses == [400, 400, 200]  # the batch, then each alone


async def test_coinbase_quote_increments_set_the_decimals_of_each_row(
        make_config: Callable[..., Config]) -> None:
    async with CoinbaseServer(snapshot_size=0) as server:
        server.increments.update({"SOL-USD": "0.001", "ETH-USD": "1"})
        config = make_config({"feed.name": "coinbase", "feeds.coinbase.url": server.url,
                              "feeds.coinbase.rest_url": server.rest_url, "history.fetch": False,
                              "feeds.coinbase.products": ("SOL-USD", "ETH-USD"), "engine.interval": "1m"})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to go live")
            await server.until(lambda: server.subscribed("market_trades", "ETH-USD"))
            await server.trade("SOL-USD", "55.1234", "3")  # from its price alone: 55.12
            await server.trade("ETH-USD", "2000.5", "1")  # from its price alone: 2,000.50
            await wait_for(pilot, shows(app, "SOL-USD", "55.123"), "SOL-USD at its quote increment")
            await wait_for(pilot, shows(app, "ETH-USD", "2,000"), "ETH-USD in whole dollars")


async def test_yahoo_price_hints_set_the_decimals_of_each_row(make_config: Callable[..., Config]) -> None:
    now = int(time.time())
    market = {"EURUSD=X": [(now, 1.084321, 0)], "AAPL": [(now, 5.1234, 1000)]}
    async with YahooServer(market) as server:
        server.price_hints.update({"EURUSD=X": 5, "AAPL": 2})
        config = make_config({"feed.name": "yahoo", "feeds.yahoo.url": server.url,
                              "feeds.yahoo.cookie_url": server.cookie_url, "feeds.yahoo.consent_url": "",
                              "feeds.yahoo.stream_url": "", "feeds.yahoo.interval": 1.0,
                              "feeds.yahoo.symbols": ("EURUSD=X", "AAPL"), "history.fetch": False,
                              "engine.interval": "1m"})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            # from their prices alone: 1.084 and 5.123
            await wait_for(pilot, shows(app, "EURUSD=X", "1.08432"), "EURUSD=X at its price hint")
            await wait_for(pilot, shows(app, "AAPL", "5.12"), "AAPL at its price hint")


def test_yahoo_chart_meta_price_hint_reaches_the_feed_decimals() -> None:
    decimals: dict[str, int] = {}
    history = YahooHistory("http://127.0.0.1:9", None, FeedCounters("yahoo"), decimals=decimals)  # type: ignore[arg-type]
    chart = {"result": [{"meta": {"priceHint": 4, "exchangeTimezoneName": "America/New_York"},
                         "timestamp": [], "indicators": {"quote": [{}]}}]}
    history.chart_bars(chart, "PENNY", 0, 60, 60, 0)
    assert decimals == {"PENNY": 4}
    history.chart_bars({"result": [{"meta": {"priceHint": "x"}}]}, "ODD", 0, 60, 60, 0)
    assert "ODD" not in decimals


async def test_a_sim_row_shows_precision_from_its_price(make_config: Callable[..., Config]) -> None:
    app = build_app(make_config())
    async with app.run_test(size=SIZE) as pilot:
        def all_shown() -> bool:
            # every row, and at least one: all() of no rows is true before the first snapshot lands
            shown = rows(app)
            return bool(app.runtime and app.runtime.watch and shown and app.watchlist.snapshot) and all(
                cells[1] not in ("", fmt.MISSING) for cells in shown.values())

        await wait_for(pilot, all_shown, "every row priced")
        snapshot = app.watchlist.snapshot
        assert snapshot is not None
        book = snapshot.by_symbol()
        checked = 0
        for symbol, cells in rows(app).items():
            quote = book.get(symbol)
            if quote is None:
                continue
            decimals = fmt.decimals_for(quote.last)
            assert len(cells[1].rpartition(".")[2]) == decimals, (symbol, cells)
            assert not cells[2].startswith("-0.") or cells[2].strip("-0.") != ""  # never -0.00
            checked += 1
        assert checked


def test_the_detail_title_shows_the_symbol_at_its_precision() -> None:
    import numpy as np

    from engine.chart_data import ChartData
    from widgets.detail import render_title

    ohlcv = np.array([[0.12345, 0.12345, 0.12345, 0.12345, 1.0], [0.12345, 0.12345, 0.1234, 0.1234, 1.0]])
    data = ChartData("DOGEUSDT", 60_000_000_000, np.array([0, 60_000_000_000]), ohlcv, {}, {}, True)
    title = render_title("DOGEUSDT", data, ["1m"], 0, 5).plain
    assert title.startswith("DOGEUSDT  0.12340  -0.00005  -0.04%"), title
    flat = ohlcv.copy()
    flat[1, 3] = 128.001
    flat[0, 3] = 128.0
    title = render_title("X", ChartData("X", 60_000_000_000, data.t, flat, {}, {}, True), ["1m"], 0).plain
    assert title.startswith("X  128.00  0.00  0.00%"), title  # no -0.00, no +0.00 for a move below a cent

"""The headless service follows its positions: a held symbol outside the feed's symbol list is subscribed
(its P&L then live, its day P&L against a previous close the ring does not hold, from Binance's daily
kline), and a symbol the feed refuses is logged once with the feed's reason."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest

from engine.config import load_config
from engine.feeds.yahoo_answer import YahooQuote, previous_close
from engine.headless import Headless, StoppableFeed, prepare
from engine.positions import stored
from engine.positions.book import Lot, PositionBook
from engine.positions.portfolio import Portfolio, follow
from engine.positions.session import DAY_NS
from engine.runtime import Runtime
from engine.sinks.base import SinkGroup
from tests.servers.binance_rest import BinanceHistoryServer

pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)

MS = 1_000_000


def write_state(path: Path, feed: str, book: PositionBook) -> None:
    doc = {"version": 1, "feeds": {}, "positions": {feed: stored.encode(book)}}
    path.write_text(json.dumps(doc), encoding="utf-8")


def book_of(*lots: tuple[str, str, str]) -> PositionBook:
    book = PositionBook()
    for symbol, quantity, price in lots:
        book.add(symbol, Lot(Decimal(quantity), Decimal(price)))
    return book


async def until(condition: object, what: str, timeout: float = 30.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_a_held_symbol_outside_the_list_is_subscribed_and_valued_against_yesterdays_close(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    midnight_ms = time.time_ns() // DAY_NS * DAY_NS // MS
    now_ms = time.time_ns() // MS
    async with BinanceHistoryServer() as server:
        await server.trade("BTCUSDT", "101.50", "0.5", at_ms=midnight_ms - 2 * 3_600_000)  # yesterday's last
        # today's trades stay after midnight even when the test runs in the first seconds of a UTC day
        await server.trade("ETHUSDT", "20.00", "1", at_ms=max(now_ms - 20_000, midnight_ms + 500))
        await server.trade("BTCUSDT", "104.00", "0.5", at_ms=max(now_ms - 10_000, midnight_ms + 1_000))
        config = load_config(overrides={
            "feed.name": "binance", "feeds.binance.url": server.url,
            "feeds.binance.rest_url": server.rest_url,
            "feeds.binance.symbols": ("ETHUSDT",), "engine.interval": "1m", "history.backfill": 5,
            "history.store": ""}, env={})
        runtime, feed, _ = prepare(config, stdout_fd=None)
        path = tmp_path / "state.json"
        portfolio = Portfolio(path, "binance")
        service = Headless(runtime, feed, SinkGroup([]), status_every=0, portfolio=portfolio)
        caplog.set_level(logging.INFO, logger="tickdeck.positions")
        run = asyncio.create_task(service.run())
        try:
            await until(lambda: service.snapshot is not None, "a first snapshot")
            assert "BTCUSDT" not in runtime.watch
            write_state(path, "binance", book_of(("BTCUSDT", "2", "100")))  # a console enters a position
            await until(lambda: "BTCUSDT" in runtime.watch, "the held symbol subscribed")

            await until(lambda: (f := service.portfolio_figures()) is not None and f.day is not None,
                        "a day P&L for BTCUSDT")
            f = service.portfolio_figures()
            assert f is not None
            assert f.value == 208.0 and f.unrealized == 8.0  # 2 @ 104, bought at 100: live
            assert f.day == 5.0  # 2 x (104 - 101.50): the close before midnight, from the 1d kline
            assert server.rest.count("/api/v3/klines") >= 1
            assert any("subscribed BTCUSDT" in r.getMessage() for r in caplog.records)
        finally:
            service.request_stop("SIGTERM")
            assert await asyncio.wait_for(run, 30) == 0


class Universe:
    """A runtime's subscribing side, with a closed universe like the sim's."""

    def __init__(self) -> None:
        self.watch: tuple[str, ...] = ("AAA",)
        self.added: list[str] = []

    def check_symbol(self, name: str) -> str | None:
        return None if name in ("AAA", "BBB") else f"{name} is not traded on the sim feed"

    async def add_symbols(self, names: list[str]) -> None:
        self.added += names

    def set_watch(self, symbols: tuple[str, ...]) -> None:
        self.watch = tuple(symbols)


async def test_a_refused_symbol_is_logged_once_with_the_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    write_state(path, "sim", book_of(("AAA", "1", "10"), ("BBB", "1", "10"), ("ZZZ", "1", "10")))
    portfolio = Portfolio(path, "sim")
    portfolio.refresh()
    runtime = Universe()
    caplog.set_level(logging.INFO, logger="tickdeck.positions")
    assert await follow(runtime, portfolio) == ["BBB"]
    assert await follow(runtime, portfolio) == []  # already carried: not subscribed twice
    assert runtime.added == ["BBB"] and runtime.watch == ("AAA", "BBB")
    refused = [r.getMessage() for r in caplog.records if "not followed" in r.getMessage()]
    assert refused == ["positions: ZZZ is not followed: ZZZ is not traded on the sim feed"]


def test_the_headless_feed_wrapper_hands_on_the_previous_closes_its_feed_is_told(tmp_path: Path) -> None:
    config = load_config(overrides={"feed.name": "sim", "feeds.sim.symbols": 2}, env={})
    from engine.feeds.registry import build_feed
    from engine.runtime import build_engine

    engine = build_engine(config)
    inner = build_feed(config, engine)
    runtime = Runtime(config, engine=engine, feed=StoppableFeed(inner))
    q = YahooQuote("X", 10.0, 1, regular_market_previous_close=9.5)
    inner.previous_closes["X"] = previous_close(q) or 0.0  # as the Yahoo feed records it
    assert runtime.sessions.reported is not None and runtime.sessions.reported.get("X") == 9.5


async def test_a_headless_sim_refuses_a_held_symbol_it_does_not_trade(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(overrides={"feed.name": "sim", "feeds.sim.symbols": 3}, env={})
    runtime, _, _ = prepare(config, stdout_fd=None)
    path = tmp_path / "state.json"
    write_state(path, "sim", book_of((runtime.watch[0], "1", "10"), ("ZZZ", "1", "5")))
    portfolio = Portfolio(path, "sim")
    portfolio.refresh()
    caplog.set_level(logging.INFO, logger="tickdeck.positions")
    assert await follow(runtime, portfolio) == []
    assert "ZZZ" not in runtime.watch
    assert portfolio.refused == {"ZZZ": "ZZZ is not traded on the sim feed"}

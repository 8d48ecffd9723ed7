"""Building the configured feed: its name to a feed, with its symbols registered with the engine.

Importing this module imports no feed: each feed's module (and what it needs: aiohttp, numpy) is
imported only when that feed is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import Config
    from engine.feeds.base import Feed
    from engine.tick_engine import Engine

__all__ = ["FeedUnavailable", "build_feed", "register_symbols"]


class FeedUnavailable(RuntimeError):
    """The configured feed cannot be built (unknown name, or not available in this version)."""


def build_feed(config: Config, engine: Engine) -> Feed:
    """The configured feed, its symbols registered with the engine (imports only the feed used); a live
    feed loads its history from the bar store and its service (``engine.backfill``)."""
    name = config.feed.name
    feeds = config.feeds
    if name == "sim":
        from engine.feeds.sim import SimFeed

        sim = feeds.sim
        return SimFeed(engine.symbols, n_symbols=sim.symbols, seed=sim.seed, rate=sim.rate,
                       backfill=sim.backfill, bar_ns=engine.interval_ns)
    if name == "binance":
        from engine.backfill import attach
        from engine.feeds.binance import BinanceFeed

        register_symbols(engine, feeds.binance.symbols)
        binance = BinanceFeed(engine.symbols, feeds.binance.url, wanted=feeds.binance.symbols,
                              stream=feeds.binance.stream, stale_after=feeds.binance.stale_after,
                              rest_url=feeds.binance.rest_url)
        attach(binance, config, engine.interval_ns, refills=True)
        return binance
    if name == "coinbase":
        from engine.backfill import attach
        from engine.feeds.coinbase import CoinbaseFeed

        register_symbols(engine, feeds.coinbase.products)
        coinbase = CoinbaseFeed(engine.symbols, feeds.coinbase.url, wanted=feeds.coinbase.products,
                                stale_after=feeds.coinbase.stale_after, rest_url=feeds.coinbase.rest_url)
        attach(coinbase, config, engine.interval_ns, refills=True)
        return coinbase
    if name == "yahoo":
        from engine.backfill import attach
        from engine.feeds.yahoo import YahooFeed

        y = feeds.yahoo
        register_symbols(engine, y.symbols)
        yahoo = YahooFeed(engine.symbols, y.symbols, y.url, interval=y.interval, batch_size=y.batch_size,
                          requests_per_minute=y.requests_per_minute, burst=y.burst,
                          requests_per_hour=y.requests_per_hour, timeout=y.timeout, cookie_url=y.cookie_url,
                          consent_url=y.consent_url or None, stream_url=y.stream_url or None)
        attach(yahoo, config, engine.interval_ns, refills=True)
        return yahoo
    if name == "replay":
        from engine.feeds.replay import ReplayError, ReplayFeed

        r = feeds.replay
        if not r.file:
            raise FeedUnavailable("the replay feed needs a file: --file PATH (or feeds.replay.file)")
        replay = ReplayFeed(engine.symbols, r.file, speed=r.speed, loop=r.loop, symbol=r.symbol or None,
                            bar_interval=engine.interval_ns)  # OHLCV bars land on the engine's grid
        try:
            replay.load()
        except ReplayError as exc:
            raise FeedUnavailable(str(exc)) from None
        return replay
    raise FeedUnavailable(f"feed {name!r} is not available in this version")


def register_symbols(engine: Engine, names: Sequence[str]) -> None:
    """Give the feed's symbols their slots up front, so the watchlist shows them before a trade."""
    for name in names:
        engine.add_symbol(name)

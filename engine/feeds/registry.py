"""Every feed by its config name (``feed.name``, ``--feed``), each with a builder that imports its feed.

The one list of feeds: the config's check of ``feed.name``, ``tickdeck --help`` and :func:`build_feed`
all read :data:`FEEDS`. Importing this module imports no feed: a builder imports its feed's module (and
what that needs: numpy, aiohttp, the history loaders) only when it is called, so the command line and
the config stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import Config
    from engine.feeds.base import Feed
    from engine.tick_engine import Engine

__all__ = ["FEEDS", "FEED_NAMES", "FeedBuilder", "FeedUnavailable", "build_feed", "register_symbols"]

FeedBuilder = Callable[["Config", "Engine"], "Feed"]
"""Builds a feed from the config, its symbols registered with the engine; may raise FeedUnavailable."""


class FeedUnavailable(RuntimeError):
    """The configured feed cannot be built (unknown name, or it lacks what it needs, such as a file)."""


def _sim(config: Config, engine: Engine) -> Feed:
    from engine.feeds.sim import SimFeed

    sim = config.feeds.sim
    return SimFeed(engine.symbols, n_symbols=sim.symbols, seed=sim.seed, rate=sim.rate,
                   backfill=sim.backfill, bar_ns=engine.interval_ns)


def _replay(config: Config, engine: Engine) -> Feed:
    from engine.feeds.replay import ReplayError, ReplayFeed

    r = config.feeds.replay
    if not r.file:
        raise FeedUnavailable("the replay feed needs a file: --file PATH (or feeds.replay.file)")
    replay = ReplayFeed(engine.symbols, r.file, speed=r.speed, loop=r.loop, symbol=r.symbol or None,
                        bar_interval=engine.interval_ns)  # OHLCV bars land on the engine's grid
    try:
        replay.load()
    except ReplayError as exc:
        raise FeedUnavailable(str(exc)) from None
    return replay


def _binance(config: Config, engine: Engine) -> Feed:
    from engine.backfill import attach
    from engine.feeds.binance import BinanceFeed

    b = config.feeds.binance
    register_symbols(engine, b.symbols)
    binance = BinanceFeed(engine.symbols, b.url, wanted=b.symbols, stream=b.stream, stale_after=b.stale_after,
                          rest_url=b.rest_url)
    attach(binance, config, engine.interval_ns, refills=True)
    return binance


def _coinbase(config: Config, engine: Engine) -> Feed:
    from engine.backfill import attach
    from engine.feeds.coinbase import CoinbaseFeed

    c = config.feeds.coinbase
    register_symbols(engine, c.products)
    coinbase = CoinbaseFeed(engine.symbols, c.url, wanted=c.products, stale_after=c.stale_after,
                            rest_url=c.rest_url)
    attach(coinbase, config, engine.interval_ns, refills=True)
    return coinbase


def _yahoo(config: Config, engine: Engine) -> Feed:
    from engine.backfill import attach
    from engine.feeds.yahoo import YahooFeed

    y = config.feeds.yahoo
    register_symbols(engine, y.symbols)
    yahoo = YahooFeed(engine.symbols, y.symbols, y.url, interval=y.interval, batch_size=y.batch_size,
                      requests_per_minute=y.requests_per_minute, burst=y.burst,
                      requests_per_hour=y.requests_per_hour, timeout=y.timeout, cookie_url=y.cookie_url,
                      consent_url=y.consent_url or None, stream_url=y.stream_url or None)
    attach(yahoo, config, engine.interval_ns, refills=True)
    return yahoo


def _ccxt(config: Config, engine: Engine) -> Feed:
    from engine.backfill import attach
    from engine.feeds.ccxt_feed import CcxtFeed, make_exchange  # imports ccxt.pro: only when chosen

    c = config.feeds.ccxt
    exchange = make_exchange(c.exchange, c.options)
    register_symbols(engine, c.symbols)
    feed = CcxtFeed(engine.symbols, exchange, wanted=c.symbols, stale_after=c.stale_after)
    attach(feed, config, engine.interval_ns, refills=True)
    return feed


FEEDS: Mapping[str, FeedBuilder] = MappingProxyType({
    "sim": _sim,
    "replay": _replay,
    "binance": _binance,
    "coinbase": _coinbase,
    "yahoo": _yahoo,
    "ccxt": _ccxt,
})
"""Every feed ``feed.name`` may name, in the order ``--help`` and messages list them."""

FEED_NAMES: tuple[str, ...] = tuple(FEEDS)


def build_feed(config: Config, engine: Engine) -> Feed:
    """The configured feed, its symbols registered with the engine (imports only the feed used); a live
    feed loads its history from the bar store and its service (``engine.backfill``)."""
    name = config.feed.name
    builder = FEEDS.get(name)
    if builder is None:  # the config's check stops this first; a Config built in code can still get here
        raise FeedUnavailable(f"feed {name!r} is not available in this version; "
                              f"available: {', '.join(FEED_NAMES)}")
    return builder(config, engine)


def register_symbols(engine: Engine, names: Sequence[str]) -> None:
    """Give the feed's symbols their slots up front, so the watchlist shows them before a trade."""
    for name in names:
        engine.add_symbol(name)

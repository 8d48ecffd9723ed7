"""History for live feeds: fetched from the service's REST API while the feed starts streaming, and again
to refill a gap (see ``engine.backfill.loader`` for the seam; ``binance``, ``coinbase`` and ``yahoo`` for
each service's source)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.feeds.batching import TradeSequencer
from engine.ticks import BAR_DTYPE

if TYPE_CHECKING:
    from engine.backfill.loader import BarStore, HistoryLoader
    from engine.backfill.source import HistorySource
    from engine.config_model import Config
    from engine.feeds.backoff import Backoff
    from engine.feeds.base import FeedCounters
    from engine.ticks import SymbolTable


class LiveFeed(Protocol):
    """What ``attach`` needs of a live feed (``WsFeed``, ``YahooFeed``)."""

    name: str

    @property
    def symbols(self) -> SymbolTable: ...

    @property
    def counters(self) -> FeedCounters: ...

    @property
    def backoff(self) -> Backoff: ...

    def use_history(self, loader: HistoryLoader) -> None: ...

log = logging.getLogger("tickdeck.backfill")


def attach(feed: LiveFeed, config: Config, interval_ns: int, *, store: BarStore | None = None,
           refills: bool = False) -> None:
    """Give a live feed its history: the bar store (``history.store``; ``store`` replaces it) and the
    service's REST history (``history.fetch``); ``refills`` when the engine can re-run a symbol from a
    bar (``Engine.refill``), so gaps can be refilled and failed history tried again."""
    from engine.backfill.loader import HistoryLoader
    from engine.backfill.sizing import backfill_bars
    from engine.store import PERSISTED_FEEDS, open_store

    source = _source(feed, config) if config.history.fetch else None
    if store is None and config.history.store.strip() and feed.name in PERSISTED_FEEDS:
        store = StoreReader(functools.partial(open_store, config))
    if source is None and store is None:
        return
    # by trade id where the live side has ids: Binance's trade stream, Coinbase; by time: klines, Yahoo
    by_id = feed.name == "coinbase" or (feed.name == "binance" and config.feeds.binance.stream == "trade")
    sequencer = getattr(feed, "sequencer", None) or TradeSequencer()
    feed.use_history(HistoryLoader(feed.name, feed.symbols, feed.counters, sequencer, interval_ns,
                                   backfill_bars(config), source, store, refills=refills, by_id=by_id,
                                   backoff=feed.backoff))


def _source(feed: LiveFeed, config: Config) -> HistorySource | None:
    """The service's REST history for ``feed`` (None: the feed has none)."""
    if feed.name == "binance":
        from engine.backfill.binance import BinanceHistory

        return BinanceHistory(config.feeds.binance.rest_url, feed.counters)
    if feed.name == "coinbase":
        from engine.backfill.coinbase import CoinbaseHistory

        aliases = getattr(feed, "aliases", None)

        async def canonical(name: str) -> str:  # the book an alias trades on (looked up once a day)
            if aliases is None:
                return name
            await aliases.learn([name])
            return str(aliases.canonical(name))

        coinbase = CoinbaseHistory(config.feeds.coinbase.rest_url, feed.counters, canonical=canonical)
        if aliases is not None:
            aliases.share(coinbase.session, coinbase.limiter)  # one session, one limiter for the host
        return coinbase
    if feed.name == "ccxt":
        from engine.backfill.ccxt import CcxtHistory

        return CcxtHistory(feed.exchange, feed.counters)  # type: ignore[attr-defined]  # (its limiter)
    if feed.name == "yahoo":
        from engine.backfill.yahoo import YahooHistory

        return YahooHistory(config.feeds.yahoo.chart_url, feed.fetch, feed.counters,  # type: ignore[attr-defined]
                            decimals=getattr(feed, "decimals", None))
    return None


class StoreReader:
    """The bar store, read by the loader: opened at the first read (in the loader's worker thread, as
    opening applies the retention), never if nothing is read. A store that cannot be opened or read
    (``StoreError``: a damaged file, a full disk) is logged once and read as empty: the history then
    comes from the service alone."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._store: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        from engine.store import StoreError

        with self._lock:
            if self._store is None and not self._failed:
                try:
                    self._store = self._opener()
                except StoreError as exc:
                    self._failed = True
                    log.warning("%s: history without the bar store: %s", feed, exc)
            store = self._store
        if store is None:
            return np.zeros(0, dtype=BAR_DTYPE)
        try:
            return np.asarray(store.load(feed, symbol, interval_ns, since_ns))
        except StoreError as exc:
            log.warning("%s: %s: the bar store could not be read: %s", feed, symbol, exc)
            return np.zeros(0, dtype=BAR_DTYPE)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

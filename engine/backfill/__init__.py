"""History for live feeds: fetched from the service's REST API while the feed starts streaming, and again
to refill a gap (see ``engine.backfill.loader`` for the seam, ``engine.backfill.binance`` for Binance)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.ticks import BAR_DTYPE

if TYPE_CHECKING:
    from engine.backfill.loader import BarStore
    from engine.config_model import Config
    from engine.feeds.ws import WsFeed

log = logging.getLogger("tickdeck.backfill")


def attach(feed: WsFeed, config: Config, interval_ns: int, *, store: BarStore | None = None,
           refills: bool = False) -> None:
    """Give a live feed its history: the bar store (``history.store``; ``store`` replaces it) and the
    service's REST history (``history.fetch``); ``refills`` when the engine can re-run a symbol from a
    bar (``Engine.refill``), so gaps can be refilled."""
    from engine.backfill.loader import HistoryLoader
    from engine.backfill.sizing import backfill_bars
    from engine.store import PERSISTED_FEEDS, open_store

    source = None
    if config.history.fetch and feed.name == "binance":
        from engine.backfill.binance import BinanceHistory

        source = BinanceHistory(config.feeds.binance.rest_url, feed.counters)
    if store is None and config.history.store.strip() and feed.name in PERSISTED_FEEDS:
        store = StoreReader(functools.partial(open_store, config))
    if source is None and store is None:
        return
    by_id = feed.name != "binance" or config.feeds.binance.stream == "trade"
    feed.use_history(HistoryLoader(feed.name, feed.symbols, feed.counters, feed.sequencer, interval_ns,
                                   backfill_bars(config), source, store, refills=refills, by_id=by_id))


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

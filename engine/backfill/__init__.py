"""History for live feeds: fetched from the service's REST API while the feed starts streaming, and again
to refill a gap (see ``engine.backfill.loader`` for the seam, ``engine.backfill.binance`` for Binance)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.backfill.loader import BarStore
    from engine.config_model import Config
    from engine.feeds.ws import WsFeed


def attach(feed: WsFeed, config: Config, interval_ns: int, *, store: BarStore | None = None,
           refills: bool = False) -> None:
    """Give a live feed its history: the service's REST history (``history.fetch``) and the bar store;
    ``refills`` when the engine can re-run a symbol from a bar (so gaps can be refilled)."""
    from engine.backfill.loader import HistoryLoader
    from engine.backfill.sizing import backfill_bars

    source = None
    if config.history.fetch and feed.name == "binance":
        from engine.backfill.binance import BinanceHistory

        source = BinanceHistory(config.feeds.binance.rest_url, feed.counters)
    if source is None and store is None:
        return
    by_id = feed.name != "binance" or config.feeds.binance.stream == "trade"
    feed.use_history(HistoryLoader(feed.name, feed.symbols, feed.counters, feed.sequencer, interval_ns,
                                   backfill_bars(config), source, store, refills=refills, by_id=by_id))

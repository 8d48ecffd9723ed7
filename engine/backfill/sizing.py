"""How many bars of history a symbol starts with: ``history.backfill``, or (0, the default) as many as
the configured outputs and rules need to warm up, never more than the engine keeps (``ring_bars``); and
how many closed bars the engine keeps in memory per symbol."""

from __future__ import annotations

from engine.config_model import Config
from engine.indicators.catalogue import resolve

SPARE = 2
"""Bars beyond the longest warm-up: the first one gives the output a value, the second a previous value,
so a crossing rule can fire on the first live close."""


def warmup_bars(config: Config) -> int:
    """The longest warm-up (TA-Lib's lookback) of every output the engine computes for ``config``: the
    indicators, the watchlist's columns and what the enabled rules read, plus ``SPARE``."""
    from engine.signals.rules import load_rules, required_outputs

    names = set(config.engine.indicators) | set(config.ui.columns)
    names |= set(required_outputs(load_rules(config.rules)))
    return max((resolve(name).lookback for name in names), default=0) + SPARE


def ring_bars(config: Config) -> int:
    """Closed bars the engine keeps in memory per symbol: the chart's widest view (``CHART_BARS``, one
    column per bar) plus the warm-up of the chart's series, so its first bar has every series value
    (TA-Lib over the same bars); at least the outputs' warm-up, so history at start and a refill's
    rebuilt state start from enough bars; more when ``engine.history`` asks for more.

    The engine's own outputs need no bars kept (their state is incremental), nor do the rules (the
    detector keeps the previous values they compare). Older bars are read from the bar store when a
    longer timeframe or a backtest asks for them (``engine.stored_bars``)."""
    from engine.chart_data import CHART_BARS, SERIES

    chart = CHART_BARS + max(resolve(name).lookback for name in SERIES) + SPARE
    return max(chart, warmup_bars(config), config.engine.history)


def backfill_bars(config: Config) -> int:
    """``history.backfill`` (or the warm-up when it is 0), capped by what the engine keeps."""
    wanted = config.history.backfill or warmup_bars(config)
    return min(wanted, ring_bars(config))

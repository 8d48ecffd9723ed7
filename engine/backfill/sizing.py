"""How many bars of history a symbol starts with: ``history.backfill``, or (0, the default) as many as
the configured outputs and rules need to warm up, never more than the engine keeps (``engine.history``)."""

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


def backfill_bars(config: Config) -> int:
    """``history.backfill`` (or the warm-up when it is 0), capped by ``engine.history``."""
    wanted = config.history.backfill or warmup_bars(config)
    return min(wanted, config.engine.history)

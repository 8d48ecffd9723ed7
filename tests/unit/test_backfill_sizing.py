"""``history.backfill``: 0 means what the configured outputs and rules need to warm up (the longest
TA-Lib lookback among them, plus two bars), never more than the engine keeps in memory; and how many
that is (``ring_bars``): the chart's widest view plus its series' warm-up, at least the outputs' warm-up,
more when ``engine.history`` asks for more."""

from __future__ import annotations

from pathlib import Path

from engine.backfill.sizing import SPARE, backfill_bars, ring_bars, warmup_bars
from engine.chart_data import CHART_BARS
from engine.config import load_config


def test_the_default_warms_the_longest_output_the_rules_read() -> None:
    config = load_config(env={})
    assert warmup_bars(config) == 199 + SPARE == backfill_bars(config)  # golden_cross reads sma_200


def test_outputs_columns_and_rules_each_count(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nid = "rsi"\nkind = "cross"\na = "rsi_14"\nb = 30\n', encoding="utf-8")
    base = {"engine.indicators": ("rsi_14",), "ui.columns": ("rsi_14",)}
    assert warmup_bars(load_config(str(rules), base, env={})) == 14 + SPARE
    assert warmup_bars(load_config(str(rules), {**base, "ui.columns": ("sma_400",)}, env={})) == 399 + SPARE
    assert warmup_bars(load_config(str(rules), {**base, "engine.indicators": ("ema_50",)},
                                   env={})) == 49 + SPARE
    assert warmup_bars(load_config(overrides=base, env={})) == 199 + SPARE  # the default rules: sma_200


def test_an_explicit_count_and_the_engine_history_cap() -> None:
    assert backfill_bars(load_config(overrides={"history.backfill": 50}, env={})) == 50
    assert backfill_bars(load_config(overrides={"history.backfill": 5000}, env={})) == ring_bars(
        load_config(env={}))
    assert backfill_bars(load_config(overrides={"history.backfill": 5000, "engine.history": 3000},
                                     env={})) == 3000
    # engine.history below the needs does not cut the warm-up
    assert backfill_bars(load_config(overrides={"engine.history": 100}, env={})) == 199 + SPARE


def test_the_ring_is_the_charts_widest_view_plus_its_warm_up() -> None:
    config = load_config(env={})
    assert config.engine.history == 0  # derived, not a fixed count
    assert ring_bars(config) == CHART_BARS + 33 + SPARE == 535  # MACD 12/26/9 is the chart's longest
    assert ring_bars(load_config(overrides={"engine.history": 100}, env={})) == 535  # never fewer
    assert ring_bars(load_config(overrides={"engine.history": 5000}, env={})) == 5000  # more when asked


def test_an_output_that_warms_longer_than_the_chart_sizes_the_ring(tmp_path: Path) -> None:
    config = load_config(overrides={"ui.columns": ("sma_800",)}, env={})
    assert ring_bars(config) == 799 + SPARE == backfill_bars(config)

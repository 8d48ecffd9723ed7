"""Signal rules and the detector: crossings fire exactly where they should, and config mistakes are named."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.indicators.bank import IndicatorBank
from engine.signals import Rule, RuleError, Signal, load_rules, parse_rule, required_outputs
from engine.signals.detector import SignalDetector

T0 = 1_700_000_000_000_000_000
MIN = 60_000_000_000
NAN = math.nan
FILE = "config.toml"


def rules_of(*tables: Mapping[str, Any], file: str = FILE) -> tuple[Rule, ...]:
    return load_rules((t, file) for t in tables)


def detector(*tables: Mapping[str, Any], outputs: Sequence[str] = (), capacity: int = 4,
             names: Sequence[str] = ("BTC", "ETH", "SOL", "ADA"),
             buffer: int = 4096) -> tuple[SignalDetector, IndicatorBank]:
    rules = rules_of(*tables)
    bank = IndicatorBank(list(outputs) or required_outputs(rules) or ["sma_2"], capacity)
    det = SignalDetector(rules, bank, capacity, lambda s: names[s], clock=lambda: 42, buffer=buffer)
    return det, bank


def records(bank: IndicatorBank, columns: Mapping[str, Sequence[float]], *,
            slots: Sequence[int] | None = None, close: Sequence[float] | None = None,
            n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A batch with hand-built values: record i has bar time T0 + i minutes."""
    if n is None:
        n = len(next(iter(columns.values()))) if columns else len(close or ())
    values = np.full((n, bank.committed.shape[0]), np.nan)
    for name, col in columns.items():
        values[:, bank.row(name)] = col
    bars = np.full((n, 5), 100.0)
    if close is not None:
        bars[:, :4] = np.asarray(close, dtype=np.float64)[:, None]
    slot_arr = np.zeros(n, np.int64) if slots is None else np.asarray(slots, np.int64)
    return slot_arr, T0 + np.arange(n, dtype=np.int64) * MIN, bars, values


def fired(signals: Sequence[Signal]) -> list[tuple[int, str, str]]:
    """(record index, rule, direction) of each signal."""
    return [((s.bar_time - T0) // MIN, s.rule, s.direction) for s in signals]


# --- crossings ------------------------------------------------------------------------------------
def test_rsi_like_crossings_fire_at_the_known_records() -> None:
    det, bank = detector(
        {"id": "rsi-low", "kind": "cross", "a": "rsi_14", "b": 30, "direction": "down"},
        {"id": "rsi-high", "kind": "cross", "a": "rsi", "b": 70, "direction": "up"},
    )
    rsi = [NAN, NAN, NAN, 45, 35, 31, 29.1, 28, 32, 29, 75, 71, 69]
    signals = det.on_closed(*records(bank, {"rsi_14": rsi}, close=[float(i) for i in range(13)]))
    assert fired(signals) == [(6, "rsi-low", "down"), (9, "rsi-low", "down"), (10, "rsi-high", "up")]
    first = signals[0]
    assert first.values == {"rsi_14": 29.1, "level": 30.0}
    assert (first.symbol, first.price, first.bar_time, first.detected_ns) == ("BTC", 6.0, T0 + 6 * MIN, 42)
    assert signals[2].values == {"rsi_14": 75.0, "level": 70.0}


def test_macd_over_signal_fires_both_directions() -> None:
    det, bank = detector({"id": "macd-x", "kind": "cross", "a": "macd", "b": "macd_signal_12_26_9"})
    macd = [NAN, -1.0, -0.5, 0.2, 0.6, 0.3, -0.2, -0.4, 0.1]
    sig = [NAN, -0.8, -0.4, 0.0, 0.4, 0.4, 0.1, -0.1, -0.2]
    signals = det.on_closed(*records(bank, {"macd_12_26_9": macd, "macd_signal_12_26_9": sig}))
    assert fired(signals) == [(3, "macd-x", "up"), (5, "macd-x", "down"), (8, "macd-x", "up")]
    assert signals[1].values == {"macd_12_26_9": 0.3, "macd_signal_12_26_9": 0.4}


def test_close_over_upper_band() -> None:
    det, bank = detector({"id": "breakout", "kind": "cross", "a": "close", "b": "bb_upper_20_2",
                          "direction": "up"})
    close = [100.0, 101.0, 103.0, 104.0, 101.0, 102.5, 99.0]
    upper = [102.0, 102.0, 102.5, 103.0, 103.0, 102.4, 102.0]
    signals = det.on_closed(*records(bank, {"bb_upper_20_2": upper}, close=close))
    assert fired(signals) == [(2, "breakout", "up"), (5, "breakout", "up")]
    assert signals[0].values == {"close": 103.0, "bb_upper_20_2": 102.5}
    assert signals[0].price == 103.0


def _sma(x: np.ndarray, p: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    out[p - 1:] = np.convolve(x, np.ones(p) / p, mode="valid")
    return out


def _crossings(a: np.ndarray, b: np.ndarray) -> list[tuple[int, str]]:
    """The cross semantics, written plainly: NaN skips, the first valid pair primes."""
    out: list[tuple[int, str]] = []
    prev: tuple[float, float] | None = None
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if math.isnan(x) or math.isnan(y):
            continue
        if prev is not None:
            if prev[0] <= prev[1] and x > y:
                out.append((i, "up"))
            elif prev[0] >= prev[1] and x < y:
                out.append((i, "down"))
        prev = (x, y)
    return out


def test_sma_fast_over_sma_slow_with_a_real_bank() -> None:
    det, bank = detector({"id": "golden", "kind": "cross", "a": "sma_3", "b": "sma_8"}, capacity=2)
    rng = np.random.default_rng(5)
    close = 100 + 5 * np.sin(np.arange(120) / 7.0) + rng.normal(0, 0.3, 120)
    slot = 1
    k = close.size
    values = np.empty((k, bank.committed.shape[0]))
    for i, c in enumerate(close):
        bank.commit(slot, T0 + i * MIN, c, c, c, c, 1.0)
        values[i] = bank.committed[:, slot]
    bars = np.repeat(close[:, None], 5, axis=1)
    signals = det.on_closed(np.full(k, slot), T0 + np.arange(k) * MIN, bars, values)
    fast, slow = _sma(close, 3), _sma(close, 8)
    np.testing.assert_allclose(values[:, bank.row("sma_3")], fast, rtol=1e-12)
    expected = _crossings(fast, slow)
    assert len(expected) >= 4
    assert [(i, d) for i, _, d in fired(signals)] == expected
    assert {s.symbol for s in signals} == {"ETH"}
    assert set(signals[0].values) == {"sma_3", "sma_8"}


def test_volume_spike() -> None:
    det, bank = detector({"id": "spike", "kind": "volume_spike", "window": 20, "zscore": 3})
    z = [NAN, 0.5, 3.5, 4.0, 1.0, 3.0, 3.01, -5.0]
    signals = det.on_closed(*records(bank, {"volume_zscore_20": z}))
    assert fired(signals) == [(2, "spike", "up"), (6, "spike", "up")]
    assert signals[0].values == {"volume_zscore_20": 3.5, "level": 3.0}


def test_move_both_ways_and_one_way() -> None:
    roc = [0.0, 1.0, 2.5, 3.0, 1.0, -1.0, -2.5, -1.0, 2.1]
    det, bank = detector({"id": "move", "kind": "move", "window": 10, "pct": 2})
    signals = det.on_closed(*records(bank, {"roc_10": roc}))
    assert fired(signals) == [(2, "move", "up"), (6, "move", "down"), (8, "move", "up")]
    assert signals[1].values == {"roc_10": -2.5, "level": -2.0}
    det, bank = detector({"id": "drop", "kind": "move", "window": 10, "pct": 2, "direction": "down"})
    assert fired(det.on_closed(*records(bank, {"roc_10": roc}))) == [(6, "drop", "down")]


def test_price_alert_is_live_by_default_and_close_rules_ignore_live() -> None:
    det, bank = detector(
        {"id": "btc-100", "kind": "price", "above": 100},
        {"id": "close-rule", "kind": "cross", "a": "close", "b": 100},
    )
    close = [99.0, 99.5, 100.5, 100.2, 99.8, 101.0]
    live = det.on_live(*records(bank, {}, close=close))
    assert fired(live) == [(2, "btc-100", "up"), (5, "btc-100", "up")]
    assert live[0].values == {"close": 100.5, "level": 100.0}
    closed = det.on_closed(*records(bank, {}, close=close))
    assert fired(closed) == [(2, "close-rule", "up"), (4, "close-rule", "down"), (5, "close-rule", "up")]

    det, bank = detector({"id": "dip", "kind": "price", "below": 99.9, "on": "close"})
    assert det.on_live(*records(bank, {}, close=close)) == []
    assert fired(det.on_closed(*records(bank, {}, close=close))) == [(4, "dip", "down")]


@pytest.mark.parametrize("cooldown", ["3m", 180, 180.0, "180s", "0.05h"])
def test_cooldown_suppresses_then_expires(cooldown: object) -> None:
    det, bank = detector({"id": "osc", "kind": "cross", "a": "rsi_14", "b": 50, "cooldown": cooldown})
    rsi = [40.0, 60, 40, 60, 40, 60, 40, 60]
    # crossings at 1..7 (one a minute); fires at 1, then 4 (t' - t == cooldown), then 7
    signals = det.on_closed(*records(bank, {"rsi_14": rsi + rsi}, slots=[0] * 8 + [1] * 8, n=16))
    by_slot = [[i for i, _, _ in fired([s for s in signals if s.symbol == name])] for name in ("BTC", "ETH")]
    assert by_slot[0] == [1, 4, 7]
    assert by_slot[1] == [9, 12, 15]  # per (rule, slot): slot 1's own clock, unaffected by slot 0


def test_cooldown_zero_fires_every_crossing() -> None:
    det, bank = detector({"id": "osc", "kind": "cross", "a": "rsi_14", "b": 50})
    assert len(det.on_closed(*records(bank, {"rsi_14": [40.0, 60, 40, 60]}))) == 3


def test_symbol_filter() -> None:
    det, bank = detector(
        {"id": "btc-only", "kind": "cross", "a": "rsi_14", "b": 30, "symbols": ["BTC"]},
        {"id": "all", "kind": "cross", "a": "rsi_14", "b": 30},
        names=["BTC", "ETH", "BTC"],
    )
    det.set_symbol(0, "BTC")
    det.set_symbol(1, "ETH")
    batch = records(bank, {"rsi_14": [20.0, 20.0, 40.0, 40.0]}, slots=[0, 1, 0, 1])
    assert [(s.symbol, s.rule) for s in det.on_closed(*batch)] == [
        ("BTC", "btc-only"), ("BTC", "all"), ("ETH", "all")]
    unset = det.on_closed(*records(bank, {"rsi_14": [20.0, 40.0]}, slots=[2, 2]))
    assert [s.rule for s in unset] == ["all"]  # filtered rules skip a slot until set_symbol names it
    det.set_symbol(2, "BTC")  # a symbol added later: the filter now lets slot 2 through (state reset)
    signals = det.on_closed(*records(bank, {"rsi_14": [20.0, 40.0]}, slots=[2, 2]))
    assert [s.rule for s in signals] == ["btc-only", "all"]


def test_nan_does_not_update_previous_and_first_observation_only_primes() -> None:
    det, bank = detector({"id": "x", "kind": "cross", "a": "rsi_14", "b": "sma_5"})
    rsi = [35.0, NAN, 25.0, NAN, NAN, 35.0, 36.0, 20.0, 40.0]
    sma = [30.0, 30.0, 30.0, 30.0, 30.0, 30.0, NAN, NAN, 30.0]
    # 0 primes (35 > 30, no signal); 2: down; 5: up (previous is record 2); 6 and 7 skipped (NaN b);
    # 8: previous is record 5 (35 vs 30), still above: nothing
    assert fired(det.on_closed(*records(bank, {"rsi_14": rsi, "sma_5": sma}))) == [(2, "x", "down"),
                                                                                 (5, "x", "up")]


def test_interleaved_slots_in_one_batch() -> None:
    det, bank = detector({"id": "x", "kind": "cross", "a": "rsi_14", "b": 30})
    rsi = [25.0, 35.0, 35.0, 25.0, 25.0, 35.0, 35.0, 35.0]
    slots = [0, 1, 0, 1, 0, 1, 2, 2]
    signals = det.on_closed(*records(bank, {"rsi_14": rsi}, slots=slots))
    assert [(i, s.symbol, d) for (i, _, d), s in zip(fired(signals), signals, strict=True)] == [
        (2, "BTC", "up"), (3, "ETH", "down"), (4, "BTC", "down"), (5, "ETH", "up")]


def test_reset_forgets_previous_values_and_cooldown() -> None:
    det, bank = detector({"id": "x", "kind": "cross", "a": "rsi_14", "b": 30, "cooldown": "1d"})
    assert len(det.on_closed(*records(bank, {"rsi_14": [25.0, 35.0]}))) == 1
    det.reset(0)
    assert det.on_closed(*records(bank, {"rsi_14": [25.0]})) == []  # only primes
    assert len(det.on_closed(*records(bank, {"rsi_14": [35.0]}))) == 1  # cooldown forgotten too


def test_many_fires_in_one_batch_with_a_tiny_buffer() -> None:
    det, bank = detector({"id": "x", "kind": "cross", "a": "rsi_14", "b": 30}, buffer=1)
    rsi = [20.0, 40.0] * 50
    assert len(det.on_closed(*records(bank, {"rsi_14": rsi}))) == 99


def test_batch_shape_and_slot_errors() -> None:
    det, bank = detector({"id": "x", "kind": "cross", "a": "rsi_14", "b": 30})
    s, t, bars, values = records(bank, {"rsi_14": [1.0, 2.0]})
    with pytest.raises(ValueError, match="values"):
        det.on_closed(s, t, bars, values[:, :0])
    with pytest.raises(ValueError, match="slot 9"):
        det.on_closed(np.array([0, 9]), t, bars, values)
    assert det.on_closed(s[:0], t[:0], bars[:0], values[:0]) == []


def test_detector_rejects_a_bank_without_the_rule_outputs() -> None:
    rules = rules_of({"id": "needs-rsi", "kind": "cross", "a": "rsi_14", "b": 30})
    with pytest.raises(RuleError, match=r"needs-rsi.*rsi_14.*required_outputs"):
        SignalDetector(rules, IndicatorBank(["sma_5"], 2), 2, str)


def test_required_outputs_are_canonical_deduplicated_and_skip_disabled_rules() -> None:
    rules = rules_of(
        {"id": "a", "kind": "cross", "a": "MACD", "b": "macd_signal"},
        {"id": "b", "kind": "cross", "a": "macd_12_26_9", "b": "close"},
        {"id": "c", "kind": "volume_spike", "window": 30, "zscore": 2.5},
        {"id": "d", "kind": "move", "window": 5, "pct": 1.5},
        {"id": "e", "kind": "cross", "a": "cci", "b": 100, "enabled": False},
        {"id": "f", "kind": "price", "below": 10},
    )
    assert required_outputs(rules) == ["macd_12_26_9", "macd_signal_12_26_9", "volume_zscore_30", "roc_5"]


def test_disabled_rules_never_fire() -> None:
    det, bank = detector({"id": "off", "kind": "cross", "a": "rsi_14", "b": 30, "enabled": False},
                         outputs=["rsi_14"])
    assert det.on_closed(*records(bank, {"rsi_14": [20.0, 40.0]})) == []


def test_rule_defaults_and_cooldown_units() -> None:
    cross, price = rules_of({"id": "a", "kind": "cross", "a": "rsi_14", "b": 30},
                            {"id": "p", "kind": "price", "above": 5, "symbols": ["X", "X", "Y"]})
    assert (cross.direction, cross.on, cross.cooldown_ns, cross.symbols, cross.enabled) == (
        "both", "close", 0, None, True)
    assert (price.on, price.symbols, price.file) == ("live", ("X", "Y"), FILE)
    assert cross.describe() == "rsi_14 crosses 30"
    for text, seconds in [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), (2.5, 2.5)]:
        rule = parse_rule({"id": "c", "kind": "cross", "a": "close", "b": 1, "cooldown": text}, FILE)
        assert rule.cooldown_ns == round(seconds * 1e9)


def test_signal_to_dict_is_json_ready_and_round_trips() -> None:
    sig = Signal("BTC", "rsi-low", "down", T0, 101.5, {"rsi_14": 29.1, "level": 30.0}, 7)
    text = json.dumps(sig.to_dict(), allow_nan=False)
    assert Signal.from_dict(json.loads(text)) == sig
    assert json.loads(text)["values"] == {"rsi_14": 29.1, "level": 30.0}


# --- rule-loading errors --------------------------------------------------------------------------
BASE: dict[str, Any] = {"kind": "cross", "a": "rsi_14", "b": 30}

ERRORS = [
    # (table, rule label, key, words in the message)
    ({"id": "bad-ind", **BASE, "a": "rsx_14"}, "rule 'bad-ind'", "a", "unknown indicator 'rsx_14'"),
    ({"id": "bad-param", **BASE, "b": "rsi_1"}, "rule 'bad-param'", "b", "period must be between"),
    ({"id": "bad-type", **BASE, "b": [30]}, "rule 'bad-type'", "b", "a bar field"),
    ({"id": "spike", "kind": "volume_spike", "window": 1, "zscore": 3}, "rule 'spike'", "window",
     "integer >= 2"),
    ({"id": "spike", "kind": "volume_spike", "window": "20", "zscore": 3}, "rule 'spike'", "window",
     "integer >= 2"),
    ({"id": "mv", "kind": "move", "window": 0, "pct": 3}, "rule 'mv'", "window", "integer >= 1"),
    ({"id": "mv", "kind": "move", "window": 500_000, "pct": 3}, "rule 'mv'", "window", "between"),
    ({"id": "mv", "kind": "move", "window": 10, "pct": 0}, "rule 'mv'", "pct", "number > 0"),
    ({"id": "mv", "kind": "move", "window": 10}, "rule 'mv'", "pct", "required"),
    ({"id": "spike", "kind": "volume_spike", "window": 20, "zscore": -1}, "rule 'spike'", "zscore", "> 0"),
    ({"id": "dir", **BASE, "direction": "sideways"}, "rule 'dir'", "direction", "up, down, both"),
    ({"id": "dir", "kind": "volume_spike", "window": 20, "zscore": 3, "direction": "up"}, "rule 'dir'",
     "direction", "unknown key"),
    ({"id": "colour", **BASE, "colour": "red"}, "rule 'colour'", "colour", "unknown key"),
    ({"id": "k", "kind": "crossover", "a": 1}, "rule 'k'", "kind",
     "cross, move, pnl, price, stop, target, volume_spike"),
    ({"id": "k", "a": 1}, "rule 'k'", "kind", "required"),
    ({**BASE}, "rule #2", "id", "required"),
    ({"id": "Has Caps", **BASE}, "rule 'Has Caps'", "id", "lowercase letters"),
    ({"id": "cd", **BASE, "cooldown": "5 weeks"}, "rule 'cd'", "cooldown", '"15m"'),
    ({"id": "cd", **BASE, "cooldown": -1}, "rule 'cd'", "cooldown", ">= 0"),
    ({"id": "sy", **BASE, "symbols": "BTC"}, "rule 'sy'", "symbols", "list of symbol names"),
    ({"id": "sy", **BASE, "symbols": []}, "rule 'sy'", "symbols", "non-empty"),
    ({"id": "on", **BASE, "on": "tick"}, "rule 'on'", "on", "close, live"),
    ({"id": "en", **BASE, "enabled": "yes"}, "rule 'en'", "enabled", "true or false"),
    ({"id": "pr", "kind": "price", "above": 1, "below": 2}, "rule 'pr'", "below", "exactly one"),
    ({"id": "pr", "kind": "price"}, "rule 'pr'", "above", "exactly one"),
    ({"id": "pr", "kind": "price", "above": "high"}, "rule 'pr'", "above", "a number"),
    ({"id": "nn", "kind": "cross", "a": 1, "b": 2}, "rule 'nn'", "b", "never cross"),
    ({"id": "same", "kind": "cross", "a": "macd", "b": "macd_12_26_9"}, "rule 'same'", "b", "never cross"),
    ({"id": "inf", **BASE, "b": math.inf}, "rule 'inf'", "b", "finite"),
    ({"id": "bool", **BASE, "b": True}, "rule 'bool'", "b", "a number"),
]


@pytest.mark.parametrize(("table", "label", "key", "words"), ERRORS,
                         ids=[f"{e[2]}-{i}" for i, e in enumerate(ERRORS)])
def test_rule_errors_name_the_rule_file_and_key(table: dict[str, Any], label: str, key: str,
                                                words: str) -> None:
    good = {"id": "fine", **BASE}
    with pytest.raises(RuleError) as err:
        load_rules([(good, "other.toml"), (good | {"id": "fine2"}, FILE), (table, FILE)])
    text = str(err.value)
    assert text.startswith(f"{FILE}: {label}, key {key!r}: "), text
    assert words in text
    assert (err.value.rule, err.value.file, err.value.key) == (label, FILE, key)


def test_duplicate_id_names_both_files() -> None:
    rule = {"id": "twice", **BASE}
    with pytest.raises(RuleError) as err:
        load_rules([(rule, "defaults.toml"), (rule, "user.toml")])
    text = str(err.value)
    assert text.startswith("user.toml: rule 'twice', key 'id': duplicate id 'twice'")
    assert "defaults.toml" in text


def test_a_rule_that_is_not_a_table() -> None:
    with pytest.raises(RuleError, match=r"^config.toml: rule #1: must be a table"):
        load_rules([("rsi_14 < 30", FILE)])  # type: ignore[list-item]


# --- batching does not matter -----------------------------------------------------------------------
STREAM_RULES = (
    {"id": "lvl", "kind": "cross", "a": "rsi_14", "b": 2.5, "cooldown": "2m"},
    {"id": "ab", "kind": "cross", "a": "rsi_14", "b": "sma_5", "direction": "up"},
    {"id": "px", "kind": "price", "above": 2.5, "on": "close", "symbols": ["BTC", "SOL"]},
    {"id": "mv", "kind": "move", "window": 10, "pct": 1},
)
level = st.sampled_from([NAN, 1.0, 2.0, 2.5, 3.0, 4.0, -2.0])
price = st.sampled_from([1.0, 2.0, 2.5, 3.0, 4.0])  # a bar's close is never NaN
record = st.tuples(st.integers(0, 2), level, level, level, price)


@settings(max_examples=150, deadline=None)
@given(st.lists(record, min_size=1, max_size=60), st.lists(st.integers(0, 60), max_size=8),
       st.sampled_from([1, 4096]))
def test_any_split_into_batches_gives_the_same_signals(
        stream: list[tuple[int, float, float, float, float]], cuts: list[int], buffer: int) -> None:
    n = len(stream)
    one, bank = detector(*STREAM_RULES)
    split, _ = detector(*STREAM_RULES, buffer=buffer)
    for d in (one, split):
        for slot, name in enumerate(["BTC", "ETH", "SOL"]):
            d.set_symbol(slot, name)
    cols = list(zip(*stream, strict=True))
    slots, t, bars, values = records(
        bank, {"rsi_14": cols[1], "sma_5": cols[2], "roc_10": cols[3]}, slots=cols[0], close=cols[4])
    expected = one.on_closed(slots, t, bars, values)
    got: list[Signal] = []
    edges = sorted({0, n, *(c for c in cuts if c <= n)})
    for lo, hi in itertools.pairwise(edges):
        got += split.on_closed(slots[lo:hi], t[lo:hi], bars[lo:hi], values[lo:hi])
    assert got == expected


def test_engine_signals_never_import_textual_or_rich() -> None:
    code = ("import sys, engine.signals, engine.signals.detector; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'widgets', "
            "'console')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

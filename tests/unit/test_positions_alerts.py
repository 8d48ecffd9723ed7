"""Alerts on positions: the pnl, stop and target rules, through the same detector as every other rule,
and the position's figures their signals carry."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from engine.indicators.bank import IndicatorBank
from engine.positions.alerts import figures
from engine.positions.book import Lot, PositionBook
from engine.signals import RuleError, Signal, load_rules
from engine.signals.detector import SignalDetector

T0 = 1_700_000_000_000_000_000
MIN = 60_000_000_000
NAMES = ("AAPL", "TSLA", "BTC")


def detector(*tables: Mapping[str, Any]) -> SignalDetector:
    rules = load_rules((t, "config.toml") for t in tables)
    bank = IndicatorBank(["sma_2"], len(NAMES))
    det = SignalDetector(rules, bank, len(NAMES), lambda s: NAMES[s], clock=lambda: 42)
    for slot, name in enumerate(NAMES):
        det.set_symbol(slot, name)
    return det


def book(**positions: tuple[str, str]) -> PositionBook:
    """A book of one lot per symbol: ``AAPL=("10", "100")`` is 10 @ 100."""
    out = PositionBook()
    for symbol, (quantity, price) in positions.items():
        out.add(symbol, Lot(Decimal(quantity), Decimal(price)))
    return out


def run(det: SignalDetector, closes: Sequence[float], slot: int = 0, start: int = 0) -> list[Signal]:
    """Forming bars of ``slot`` closing at ``closes`` (live rules), one record per minute."""
    n = len(closes)
    bars = np.repeat(np.asarray(closes, dtype=np.float64)[:, None], 5, axis=1)
    t = T0 + (start + np.arange(n, dtype=np.int64)) * MIN
    return det.on_live(np.full(n, slot, np.int64), t, bars, np.full((n, det.width), np.nan))


def fired(signals: Sequence[Signal]) -> list[tuple[int, str, str]]:
    return [((s.bar_time - T0) // MIN, s.rule, s.direction) for s in signals]


STOP = {"id": "stop", "kind": "stop"}
TARGET = {"id": "target", "kind": "target"}


def test_a_long_stop_fires_when_the_price_falls_through_it_and_not_when_it_rises() -> None:
    det = detector(STOP)
    b = book(AAPL=("10", "100"))
    b.set_levels("AAPL", stop=Decimal("95"))
    det.set_positions(figures(b))
    assert fired(run(det, [100, 96, 94, 96, 93])) == [(2, "stop", "down"), (4, "stop", "down")]


def test_a_short_stop_fires_when_the_price_rises_through_it() -> None:
    det = detector(STOP)
    b = book(AAPL=("-10", "100"))
    b.set_levels("AAPL", stop=Decimal("105"))
    det.set_positions(figures(b))
    assert fired(run(det, [100, 104, 106, 104, 103])) == [(2, "stop", "up")]


def test_a_target_fires_in_the_positions_favour_for_a_long_and_a_short() -> None:
    det = detector(TARGET)
    b = book(AAPL=("10", "100"), TSLA=("-5", "200"))
    b.set_levels("AAPL", target=Decimal("110"))
    b.set_levels("TSLA", target=Decimal("180"))
    det.set_positions(figures(b))
    assert fired(run(det, [100, 111, 109])) == [(1, "target", "up")]
    assert fired(run(det, [200, 181, 179, 185], slot=1)) == [(2, "target", "down")]


@pytest.mark.parametrize(("quantity", "closes", "expected"), [
    ("10", [100, 104, 106, 104, 97, 96], [(2, "up"), (5, "down")]),  # long: +6 % up, -4 % down
    ("-10", [100, 96, 94, 96, 103, 104], [(2, "up"), (5, "down")]),  # short: P&L rises as the price falls
])
def test_pnl_fires_when_the_unrealized_percent_crosses_its_levels(quantity: str, closes: list[float],
                                                                  expected: list[tuple[int, str]]) -> None:
    det = detector({"id": "pnl", "kind": "pnl", "above": 5, "below": -3})
    det.set_positions(figures(book(AAPL=(quantity, "100"))))
    signals = run(det, closes)
    assert [(i, d) for i, _, d in fired(signals)] == expected
    first = signals[0]
    assert first.values["pnl_pct"] == pytest.approx(6.0) and first.values["level"] == 5.0


def test_the_signal_carries_the_positions_figures() -> None:
    det = detector({"id": "pnl", "kind": "pnl", "above": 5})
    b = PositionBook()
    b.add("AAPL", Lot(Decimal("10"), Decimal("100"), Decimal("10")))  # average 101, fees included
    b.set_levels("AAPL", stop=Decimal("90"))
    det.set_positions(figures(b))
    [signal] = run(det, [101, 107])
    assert signal.position is not None
    p = signal.position
    assert (p["quantity"], p["average_cost"], p["stop"]) == (10.0, 101.0, 90.0) and math.isnan(p["target"])
    assert p["unrealized"] == pytest.approx(60.0) and p["unrealized_pct"] == pytest.approx(60 / 10.10)
    out = signal.to_dict()["position"]
    assert out["target"] is None and out["quantity"] == 10.0
    assert Signal.from_dict(signal.to_dict()).to_dict() == signal.to_dict()


def test_other_rules_signals_have_no_position_and_their_json_is_unchanged() -> None:
    det = detector({"id": "p", "kind": "price", "above": 100})
    det.set_positions(figures(book(AAPL=("10", "100"))))
    [signal] = run(det, [99, 101])
    assert signal.position is None and "position" not in signal.to_dict()


def test_no_position_or_a_flat_one_never_fires() -> None:
    det = detector({"id": "pnl", "kind": "pnl", "above": 5, "below": -5}, STOP, TARGET)
    b = book(AAPL=("10", "100"))
    b.set_levels("AAPL", stop=Decimal("95"), target=Decimal("105"))
    b.add("AAPL", Lot(Decimal("-10"), Decimal("101")))  # closed: flat, realized P&L only
    det.set_positions(figures(b))
    assert run(det, [100, 110, 90, 110]) == []
    assert run(det, [100, 110, 90, 110], slot=1) == []  # TSLA: no position


def test_a_changed_position_only_primes_the_next_crossing() -> None:
    det = detector(STOP)
    b = book(AAPL=("10", "100"))
    b.set_levels("AAPL", stop=Decimal("95"))
    det.set_positions(figures(b))
    assert run(det, [100, 98]) == []
    b.set_levels("AAPL", stop=Decimal("99"))  # now above the price: setting it is not a crossing
    det.set_positions(figures(b))
    assert run(det, [98, 97], start=2) == []
    signals = run(det, [100, 98], start=4)  # back above it, then through it: that is one
    assert fired(signals) == [(5, "stop", "down")] and signals[0].values == {"close": 98.0, "stop": 99.0}


def test_a_symbol_that_gets_its_slot_later_gets_its_position() -> None:
    rules = load_rules([(STOP, "config.toml")])
    det = SignalDetector(rules, IndicatorBank(["sma_2"], 2), 2, lambda s: "LATE", clock=lambda: 42)
    b = book(LATE=("1", "100"))
    b.set_levels("LATE", stop=Decimal("90"))
    det.set_positions(figures(b))
    det.set_symbol(0, "LATE")
    assert fired(run(det, [95, 89])) == [(1, "stop", "down")]


def test_cooldown_and_warm_up_apply_to_position_rules_as_to_any() -> None:
    det = detector({**STOP, "cooldown": "10m"})
    b = book(AAPL=("10", "100"))
    b.set_levels("AAPL", stop=Decimal("95"))
    det.set_positions(figures(b))
    n = 4
    closes = np.array([96.0, 94, 96, 94])
    bars = np.repeat(closes[:, None], 5, axis=1)
    signals = det.on_live(np.zeros(n, np.int64), T0 + np.arange(n, dtype=np.int64) * MIN, bars,
                          np.full((n, det.width), np.nan), warmup=np.array([True, True, True, True]))
    assert [(s.direction, s.warmup) for s in signals] == [("down", True)]  # the second is in cooldown


@pytest.mark.parametrize(("table", "key", "words"), [
    ({"kind": "pnl"}, "above", "takes 'above' and/or 'below'"),
    ({"kind": "pnl", "above": "5%"}, "above", "must be a number, got '5%'"),
    ({"kind": "pnl", "above": 2, "below": 3}, "below", "must be below 'above' (2), got 3"),
    ({"kind": "pnl", "above": 5, "pct": 5}, "pct", "unknown key for a pnl rule"),
    ({"kind": "stop", "below": 90}, "below", "unknown key for a stop rule; allowed: id, kind, cooldown"),
    ({"kind": "target", "on": "tick"}, "on", "must be one of close, live, got 'tick'"),
])
def test_bad_position_rules_are_refused_naming_the_key(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(RuleError) as caught:
        load_rules([({"id": "mine", **table}, "rules.toml")])
    assert caught.value.key == key and words in str(caught.value)
    assert str(caught.value).startswith("rules.toml: rule 'mine'")


def test_position_rules_are_live_by_default_and_describe_themselves() -> None:
    pnl, stop = load_rules([({"id": "p", "kind": "pnl", "below": -3}, "f"), (STOP, "f")])
    assert (pnl.on, pnl.direction, stop.on) == ("live", "down", "live")
    assert pnl.describe() == "pnl_pct crosses below -3" and stop.describe() == (
        "close crosses below stop (above for a short)")
    assert load_rules([({"id": "p", "kind": "pnl", "above": 1, "on": "close"}, "f")])[0].on == "close"


def test_a_backtest_leaves_position_rules_out_and_refuses_them_by_name() -> None:
    from engine.backtest import BacktestError, select_rules

    tables = [({"id": "p", "kind": "price", "above": 1}, "f"), (STOP, "f"), ({"id": "pnl", "kind": "pnl",
                                                                               "above": 5}, "f")]
    assert [r.id for r in select_rules(tables)] == ["p"]
    with pytest.raises(BacktestError, match="rule 'stop' is a stop rule, on positions, which a backtest does "
                                            "not hold"):
        select_rules(tables, ["p", "stop"])

"""A gap refilled: ``Engine.refill`` re-runs one symbol from the bar where its gap began, so every output,
the history ring, the forming bar and the rule memory end exactly as an uninterrupted stream left them,
its signals are history (``warmup=True``) and no other symbol is touched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.feeds.base import Refill
from engine.signals.events import Signal
from engine.tick_engine import Engine
from engine.ticks import make_bars, make_ticks
from tests.data import Bars
from tests.unit.oracle import TALIB, assert_matches, scale_for
from tests.unit.refill_tape import (
    CLOSE_RULES,
    LIVE_RULES,
    MIN,
    NAMES,
    SEC,
    T0,
    Gap,
    Item,
    assert_same,
    cut,
    drive,
    gap_at,
    interrupted,
    make_engine,
    news,
    slot_state,
    steps,
    tape,
)


def split_at_refill(items: list[Item]) -> tuple[list[Item], Refill, list[Item]]:
    k = next(i for i, item in enumerate(items) if isinstance(item, Refill))
    refill = items[k]
    assert isinstance(refill, Refill)
    return items[:k], refill, items[k + 1:]


def run_with_gap(ticks: np.ndarray, batches: list[np.ndarray], gap: Gap, **engine: Any) -> dict[str, Any]:
    """The interrupted engine, checked around its refill: the refill changes nothing of the other
    symbols. Also returns the gap's symbol's ring just before the refill."""
    e = make_engine(**engine)
    before, refill, after = split_at_refill(interrupted(ticks, batches, gap))
    pre = drive(e, before)
    others = {s: slot_state(e, s) for s in range(len(NAMES)) if s != gap.slot}
    ring_before = e.history.tail(gap.slot)
    refilled = e.refill(refill.sym, refill.since_ns, refill.ticks)
    for s, state in others.items():
        assert_same(state, slot_state(e, s), f"{NAMES[s]} (not refilled): ")
    post = drive(e, after)
    return {"engine": e, "pre": pre, "refilled": refilled, "post": post, "ring_before": ring_before}


def of(signals: list[Signal], symbol: str, since: int | None = None) -> list[Signal]:
    return [s for s in signals if s.symbol == symbol and (since is None or s.bar_time >= since)]


def missed(ticks: np.ndarray, gap: Gap) -> int:
    return int(((ticks["sym"] == gap.slot) & (ticks["ts"] >= gap.lo) & (ticks["ts"] < gap.hi)).sum())


def test_a_refill_after_90_s_of_missed_trades_ends_exactly_where_an_uninterrupted_run_does() -> None:
    ticks = tape(150, seed=1)
    batches = cut(ticks, seed=2)
    gap = gap_at(ticks, 0, T0 + 61 * MIN + 13 * SEC, T0 + 62 * MIN + 43 * SEC)  # 90 s of AAA's trades
    whole = make_engine()
    signals = drive(whole, steps(batches))
    run = run_with_gap(ticks, batches, gap)
    e: Engine = run["engine"]
    # before the refill, the clock had closed AAA's bar at since with only part of its trades
    t_before, bars_before = run["ring_before"]
    t_whole, bars_whole = whole.history.tail(0)
    assert t_before[-1] == gap.since and missed(ticks, gap) > 20
    assert bars_before[-1, 4] < bars_whole[t_whole == gap.since][0, 4]
    # after it and the rest of the tape: every symbol's state, bit for bit
    for slot in range(len(NAMES)):
        assert_same(slot_state(whole, slot), slot_state(e, slot), f"{NAMES[slot]}: ")
    assert e.stats.bars == whole.stats.bars and e.stats.refills == 1 and whole.stats.refills == 0
    assert e.stats.ticks == whole.stats.ticks - missed(ticks, gap)  # refilled trades are not live ticks
    # the other symbols fired what they fired uninterrupted; AAA from since on too (refill, then live)
    got = run["pre"] + run["refilled"] + run["post"]
    for name in NAMES[1:]:
        assert news(of(got, name)) == news(of(signals, name))
    assert news(of(run["refilled"] + run["post"], "AAA", gap.since)) == news(of(signals, "AAA", gap.since))


def test_refill_signals_are_history_and_the_replayed_bars_fire_nothing_again() -> None:
    ticks = tape(150, seed=3)
    batches = cut(ticks, seed=4)
    gap = gap_at(ticks, 0, T0 + 90 * MIN + 7 * SEC, T0 + 108 * MIN + 31 * SEC)  # long enough to fire
    whole = make_engine()
    signals = drive(whole, steps(batches))
    run = run_with_gap(ticks, batches, gap)
    refilled: list[Signal] = run["refilled"]
    assert refilled and all(s.warmup for s in refilled) and {s.symbol for s in refilled} == {"AAA"}
    assert min(s.bar_time for s in refilled) >= gap.since  # the replayed ring fired nothing again...
    assert len(of(signals, "AAA")) - len(of(signals, "AAA", gap.since)) > 20  # ...of all it had fired
    # what the refilled bars fire is what they fired uninterrupted, now as history
    bars = {s.bar_time for s in refilled}
    want = [s for s in of(signals, "AAA", gap.since) if s.bar_time in bars]
    assert news(refilled) == news(want) and not any(s.warmup for s in want)
    # the bar left forming goes on with the live trades the feed held back and closes as a live bar
    assert of(run["post"], "AAA") and not any(s.warmup for s in run["post"])


def test_live_rules_keep_their_memory_and_see_the_refill_as_one_batch() -> None:
    """A live rule judges the forming bar once per batch, so its memory depends on how the tape was
    batched, which a refill cannot know: it sees the refill as one batch. Exactly what an engine does that
    got the missed trades late, in one batch (its clock not having closed the gap's bar meanwhile)."""
    ticks = tape(150, seed=5)
    ticks = ticks[ticks["sym"] == 0]
    batches = cut(ticks, seed=6, most=8)
    gap = gap_at(ticks, 0, T0 + 70 * MIN + 20 * SEC, T0 + 71 * MIN + 50 * SEC)
    rules = CLOSE_RULES + LIVE_RULES
    before, refill, after = split_at_refill(interrupted(ticks, batches, gap))
    e = make_engine(rules)
    pre = drive(e, before)  # its clock runs through the gap
    refilled = e.refill(refill.sym, refill.since_ns, refill.ticks)
    late = make_engine(rules)
    drive(late, [(b, now) for b, now in before if len(b)])  # (a step, not a refill: ``before`` has none)
    late_signals = late.ingest(ticks[(ticks["ts"] >= gap.lo) & (ticks["ts"] < gap.hi)])
    post = drive(e, after)
    assert news(post) == news(drive(late, after))
    assert_same(slot_state(late, 0), slot_state(e, 0))
    assert news(refilled) == news(late_signals) and all(s.warmup for s in refilled)
    assert any(s.rule == "live-x-ema" for s in pre + post)  # the live rule does fire on this tape


def trades(slot: int, *at: tuple[float, float]) -> list[np.ndarray]:
    """One batch per trade: (seconds after T0, price)."""
    out = []
    for sec, price in at:
        b = make_ticks(1)
        b["sym"], b["ts"], b["price"], b["size"] = slot, T0 + int(sec * SEC), price, 1.0
        out.append(b)
    return out


def test_cooldowns_come_out_as_uninterrupted_whatever_the_partial_bar_fired() -> None:
    """A close rule with a 15-minute cooldown, and a gap in the bar at 30 min whose first trade jumped
    above the level. AAA fired at 20 min, so uninterrupted it stays quiet until 35 min; BBB had not fired,
    so uninterrupted it fires at 31 min. Without the gap's trades, the clock closed the bar at 30 min
    on its jump: BBB fired there (a cooldown the true bar never started), AAA was still cooling down.
    After the refill both must fire exactly what they fired uninterrupted."""
    rules = ({"id": "above", "kind": "price", "above": 105, "on": "close", "cooldown": "15m"},)
    a_path = [(m * 60 + 30, 100.0) for m in range(20)] + [(20 * 60 + 30, 106.0)]
    a_path += [(m * 60 + 30, 100.0) for m in range(21, 30)]
    b_path = [(m * 60 + 30, 100.0) for m in range(30)]
    gap_ends = [(30 * 60 + 10, 106.0), (30 * 60 + 40, 100.0), (31 * 60 + 20, 107.0)]  # 30:20-31:30 missed
    later = [(31 * 60 + 40, 107.0), (32 * 60 + 30, 100.0)]
    whole_batches = sorted(trades(0, *a_path + gap_ends + later) + trades(1, *b_path + gap_ends + later),
                           key=lambda b: int(b["ts"][0]))
    end = (make_ticks(0), T0 + 40 * MIN)
    whole = make_engine(rules)
    signals = drive(whole, [*steps(whole_batches), end])
    since = T0 + 30 * MIN
    missed_trades = {slot: np.concatenate(trades(slot, *gap_ends)) for slot in (0, 1)}
    before = sorted(trades(0, *a_path + gap_ends[:1]) + trades(1, *b_path + gap_ends[:1]),
                    key=lambda b: int(b["ts"][0]))
    e = make_engine(rules)
    pre = drive(e, [*steps(before), (make_ticks(0), T0 + 31 * MIN + 5 * SEC)])  # the clock closes bar 30
    assert [(s.symbol, s.bar_time) for s in pre if s.bar_time == since] == [("BBB", since)]
    refilled = e.refill(0, since, missed_trades[0]) + e.refill(1, since, missed_trades[1])
    post = drive(e, [*steps(sorted(trades(0, *later) + trades(1, *later), key=lambda b: int(b["ts"][0]))),
                     end])
    for slot in (0, 1):
        assert_same(slot_state(whole, slot), slot_state(e, slot), f"{NAMES[slot]}: ")
    assert news([s for s in signals if s.bar_time >= since]) == news(refilled + post)
    assert [(s.symbol, (s.bar_time - T0) // MIN) for s in signals] == [("AAA", 20), ("BBB", 31)]


def test_a_ring_shorter_than_the_run_reseeds_the_state_from_its_oldest_bar() -> None:
    """Bars that left the ring cannot be replayed: the symbol is rebuilt as if it had started at the
    ring's oldest bar, exactly as a fresh engine given those bars, so equal to TA-Lib over the ring's
    window. Windowed outputs then equal the uninterrupted run's (to rounding); recursive ones (EMA family,
    Wilder's smoothing, OBV) differ by what the older bars had left in them."""
    depth = 60
    ticks = tape(200, seed=7)
    batches = cut(ticks, seed=8)
    gap = gap_at(ticks, 0, T0 + 180 * MIN + 5 * SEC, T0 + 181 * MIN + 35 * SEC)
    whole = make_engine(depth=depth)
    drive(whole, steps(batches))
    run = run_with_gap(ticks, batches, gap, depth=depth)
    e: Engine = run["engine"]
    t_before, bars_before = run["ring_before"]
    assert len(t_before) == depth  # full: older bars had left it
    kept = t_before < gap.since
    # a fresh engine that starts with the ring's bars, then gets the same trades
    fresh = make_engine(depth=depth)
    history = make_bars(int(kept.sum()))
    history["t"] = t_before[kept]
    for j, field in enumerate(("open", "high", "low", "close", "volume")):
        history[field] = bars_before[kept, j]
    fresh.ingest_history(history)
    _, refill, after = split_at_refill(interrupted(ticks, batches, gap))
    fresh.ingest(refill.ticks, warmup=True)
    drive(fresh, [(b[b["sym"] == 0], now) for b, now in after])
    a, b = slot_state(fresh, 0), slot_state(e, 0)
    del a["ring_head"], b["ring_head"]  # (the fresh ring was written fewer times)
    assert_same(a, b)
    # TA-Lib over the bars from the ring's oldest on: the refilled engine's last committed values
    t_now, bars_now = e.history.tail(0)
    rebuilt = t_now >= gap.since
    ohlcv = np.concatenate([bars_before[kept], bars_now[rebuilt]])
    window = Bars(np.concatenate([t_before[kept], t_now[rebuilt]]), *ohlcv.T)
    for name, oracle in TALIB.items():
        got = np.array([e.bank.committed[e.bank.row(name), 0]])
        assert_matches(name, got, oracle(window)[-1:], scale_for(name, window))
    # against the uninterrupted run: windowed outputs equal (to rounding), recursive ones do not
    row = e.bank.row
    for name in ("sma_20", "wma_20", "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2", "donchian_upper_20",
                 "donchian_lower_20", "willr_14", "roc_10", "mom_10", "aroon_up_14", "aroon_down_14",
                 "cci_20", "stoch_k_14_3_3", "stoch_d_14_3_3", "mfi_14", "ultosc_7_14_28", "zscore_20"):
        want, got_v = whole.bank.committed[row(name), 0], e.bank.committed[row(name), 0]
        assert got_v == pytest.approx(want, rel=1e-12, abs=1e-12), name
    for name in ("ema_20", "obv", "atr_14"):
        assert e.bank.committed[row(name), 0] != whole.bank.committed[row(name), 0], name
    assert e.bank.counts[0] < whole.bank.counts[0]  # bars seen: the ring's, not the whole run's


def test_a_refill_from_before_the_oldest_bar_rebuilds_everything_from_the_trades() -> None:
    ticks = tape(40, seed=9)
    batches = cut(ticks, seed=10)
    gap = Gap(1, T0 + 20 * MIN, T0 + 21 * MIN + 30 * SEC, T0 - 5 * MIN)
    whole = make_engine()
    drive(whole, steps(batches))
    run = run_with_gap(ticks, batches, gap)
    for slot in range(len(NAMES)):
        assert_same(slot_state(whole, slot), slot_state(run["engine"], slot), f"{NAMES[slot]}: ")


def test_an_empty_refill_drops_the_bars_from_since_and_leaves_nothing_forming() -> None:
    e = make_engine()
    drive(e, steps(cut(tape(30, seed=11), seed=12)))
    t, _ = e.history.tail(2)
    since = int(t[-5])
    assert e.refill(2, since, make_ticks(0)) == []
    assert e.history.tail(2)[0].tolist() == t[:-5].tolist() and e.forming_bar(2) is None


def test_a_refill_that_cannot_be_applied_says_what_is_wrong() -> None:
    e = make_engine()
    ok = make_ticks(2)
    ok["sym"], ok["ts"], ok["price"], ok["size"] = 1, T0 + np.array([1, 2]) * SEC, 10.0, 1.0
    other = ok.copy()
    other["sym"][1] = 2
    with pytest.raises(ValueError, match="TICK_DTYPE"):
        Refill(1, T0, np.zeros(3))
    with pytest.raises(ValueError, match="tick 1 is of slot 2"):
        Refill(1, T0, other)
    with pytest.raises(ValueError, match=r"tick 0 at \d+ ns is before since_ns"):
        Refill(1, T0 + 2 * SEC, ok)
    with pytest.raises(ValueError, match="not the open time of a bar"):
        e.refill(1, T0 + SEC, ok)
    with pytest.raises(ValueError, match="slot 3 holds no symbol"):
        e.refill(3, T0, make_ticks(0))
    with pytest.raises(ValueError, match="tick 1 is of slot 2"):  # the engine checks too
        e.refill(1, T0, other)
    assert len(Refill(1, T0, ok)) == 2


@settings(max_examples=50, deadline=None)
# the symbol's last trade falls in the gap: the refill comes after the clock passed that bar
@example(seed=672064052, slot=2, lo_s=2668, length_s=720, back=0, most=1)
@given(seed=st.integers(0, 2**32 - 1), slot=st.integers(0, len(NAMES) - 1),
       lo_s=st.integers(0, 60 * 60 - 1), length_s=st.integers(1, 12 * 60), back=st.integers(0, 4),
       most=st.integers(1, 30))
def test_any_gap_and_any_since_give_the_uninterrupted_result(seed: int, slot: int, lo_s: int,
                                                               length_s: int, back: int, most: int) -> None:
    """Wherever the gap falls (a quiet stretch, the first trades, the end of the tape), however long, and
    from whichever bar at or before the gap's the refill starts: every symbol ends bit for bit as
    uninterrupted, and what the refill fires is history."""
    ticks = tape(60, seed=seed % 10_000)
    batches = cut(ticks, seed=seed, most=most)
    feed_gap = gap_at(ticks, slot, T0 + lo_s * SEC, T0 + (lo_s + length_s) * SEC)
    gap = Gap(slot, feed_gap.lo, feed_gap.hi, feed_gap.since - back * MIN)
    whole = make_engine()
    drive(whole, steps(batches))
    run = run_with_gap(ticks, batches, gap)
    for s in range(len(NAMES)):
        assert_same(slot_state(whole, s), slot_state(run["engine"], s), f"{NAMES[s]}: ")
    assert run["engine"].stats.bars == whole.stats.bars
    assert all(s.warmup and s.bar_time >= gap.since for s in run["refilled"])

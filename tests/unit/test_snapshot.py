"""The per-frame snapshot equals, quote by quote, a plain per-symbol reading of the engine.

``build_snapshot`` gathers every symbol at once (it runs once a frame for up to thousands of symbols);
the reference here reads one symbol at a time through ``BarHistory.tail``, the obvious way, and the two
must agree on every field: symbols with a full window, a short history, only a forming bar, no bar at
all, and names the engine does not know.
"""

from __future__ import annotations

import math

import numpy as np

from engine.snapshot import MarketSnapshot, Quote, build_snapshot
from engine.tick_engine import Engine
from engine.ticks import NO_BAR, make_ticks

MIN = 60_000_000_000
T0 = 1_700_000_000_000_000_000 - 1_700_000_000_000_000_000 % MIN
OUTPUTS = ("rsi_14", "sma_5")


def reference(engine: Engine, name: str, spark: int) -> Quote | None:
    slot = engine.symbols.get(name)
    if slot is None:
        return None
    t, bars = engine.history.tail(slot, spark)
    closes = bars[:, 3]
    volume = float(bars[:, 4].sum())
    forming = engine.forming_start[slot] != NO_BAR
    src = engine.bank.provisional if forming else engine.bank.committed
    if forming:
        closes = np.append(closes, engine.forming[slot, 3])
        volume += float(engine.forming[slot, 4])
        bar_time = int(engine.forming_start[slot])
    else:
        bar_time = int(t[-1]) if len(t) else 0
    if not len(closes):
        return None
    first = float(bars[0, 0]) if len(bars) else float(engine.forming[slot, 0])
    change = float(closes[-1]) - first
    return Quote(name, float(closes[-1]), change, 100 * change / first, volume, closes,
                 {n: float(src[engine.bank.row(n), slot]) for n in OUTPUTS}, bar_time)


def trades(slot: int, minutes: int, start: int = 0) -> np.ndarray:
    """Three trades a minute for ``minutes`` minutes from minute ``start``, on a wavy price."""
    n = 3 * minutes
    ticks = make_ticks(n)
    ticks["sym"] = slot
    ticks["ts"] = T0 + start * MIN + np.arange(n) * (MIN // 3)
    ticks["recv"] = ticks["ts"]
    ticks["price"] = 100 + 5 * np.sin(np.arange(n) / 7) + slot
    ticks["size"] = 1 + np.arange(n) % 4
    return ticks


def same(a: Quote, b: Quote) -> bool:
    def eq(x: float, y: float) -> bool:
        return (math.isnan(x) and math.isnan(y)) or x == y

    return (a.symbol == b.symbol and eq(a.last, b.last) and eq(a.change, b.change)
            and math.isclose(a.change_pct, b.change_pct) and math.isclose(a.volume, b.volume)
            and np.array_equal(a.closes, b.closes) and a.bar_time == b.bar_time
            and a.values.keys() == b.values.keys() and all(eq(a.values[k], b.values[k]) for k in a.values))


def test_gathered_snapshot_equals_the_per_symbol_reading() -> None:
    engine = Engine(OUTPUTS, MIN, capacity=8, depth=50)
    names = ["FULL", "SHORT", "FORMING", "QUIET", "WRAPPED"]
    for name in names:
        engine.add_symbol(name)
    engine.ingest(trades(engine.symbols.get("FULL"), 40))
    engine.ingest(trades(engine.symbols.get("SHORT"), 4, start=36))
    engine.ingest(trades(engine.symbols.get("WRAPPED"), 45))
    engine.ingest(trades(engine.symbols.get("WRAPPED"), 30, start=45))  # now it has wrapped around
    engine.ingest(trades(engine.symbols.get("FORMING"), 1, start=39)[:1])  # one trade: a forming bar only
    engine.close_due(T0 + 39 * MIN)  # closes the others' bars before minute 39; FORMING's stays open
    for spark in (10, 60):
        shot = build_snapshot(engine, [*names, "UNKNOWN"], OUTPUTS, spark, 123)
        expected = [q for n in [*names, "UNKNOWN"] if (q := reference(engine, n, spark)) is not None]
        assert [q.symbol for q in shot.quotes] == [q.symbol for q in expected]
        assert "QUIET" not in {q.symbol for q in shot.quotes} and "FORMING" in {q.symbol for q in shot.quotes}
        for got, want in zip(shot.quotes, expected, strict=True):
            assert same(got, want), (got, want)
            assert not got.closes.flags.writeable
        assert shot.at_ns == 123 and shot.ticks == engine.stats.ticks


def test_an_empty_watch_is_an_empty_snapshot() -> None:
    engine = Engine(OUTPUTS, MIN, capacity=2, depth=10)
    assert build_snapshot(engine, [], OUTPUTS, 60, 1).quotes == ()
    assert build_snapshot(engine, ["NOPE"], OUTPUTS, 60, 1).quotes == ()


def test_prices_gathered_for_the_rows_equal_the_quotes_read_one_by_one() -> None:
    """``MarketSnapshot.market`` (arrays from the snapshot, three takes) against a loop over the quotes,
    for rows in another order, with a name the snapshot lacks, with and without the arrays (a snapshot
    decoded from a broadcast frame has none)."""
    from dataclasses import replace

    def market_arrays(quotes: dict[str, Quote], symbols: list[str]) -> tuple[np.ndarray, ...]:
        n = len(symbols)
        last, known, previous = np.full(n, np.nan), np.full(n, -1), np.full(n, np.nan)
        for i, symbol in enumerate(symbols):
            if (quote := quotes.get(symbol)) is not None:
                last[i], previous[i] = quote.last, quote.previous_close
                known[i] = -1 if quote.decimals is None else quote.decimals
        return last, known, previous

    engine = Engine(OUTPUTS, MIN, capacity=8, depth=50)
    for name in ("AAA", "BBB", "CCC", "QUIET"):
        engine.add_symbol(name)
    engine.ingest(trades(engine.symbols.get("AAA"), 10))
    engine.ingest(trades(engine.symbols.get("BBB"), 10))
    engine.ingest(trades(engine.symbols.get("CCC"), 1, start=9)[:1])  # a forming bar only
    engine.close_due(T0 + 9 * MIN)
    shot = build_snapshot(engine, ["AAA", "BBB", "CCC", "QUIET"], OUTPUTS, 20, 1, decimals={"BBB": 3})
    assert shot.prices is not None and len(shot.prices.last) == len(shot.quotes) == 3
    rows = ["CCC", "NEW", "QUIET", "BBB", "AAA"]
    want = market_arrays(shot.by_symbol(), rows)
    for snap in (shot, replace(shot, prices=None)):
        got = snap.market(rows)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert list(want[1]) == [-1, -1, -1, 3, -1] and np.isnan(want[0][1]) and np.isnan(want[0][2])
    assert MarketSnapshot(1, (), 0, 0).market(["AAA"])[0].shape == (1,)

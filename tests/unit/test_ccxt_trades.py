"""The ccxt feed's trade checks on their own: ccxt's unified trades in, usable ticks out."""

from __future__ import annotations

from typing import Any

from engine.feeds.base import FeedCounters
from engine.feeds.ccxt_trades import RECENT_IDS, TradeTape


def trade(tid: Any, ms: int, price: Any = 100.0, amount: Any = 1.0, side: str = "buy") -> dict[str, Any]:
    return {"symbol": "BTC/USD", "id": tid, "timestamp": ms, "price": price, "amount": amount, "side": side}


def test_a_replay_is_dropped_and_a_renumbering_starts_the_sequence_again() -> None:
    tape = TradeTape("kraken", FeedCounters("ccxt"))
    got = tape.trades(0, "BTC/USD", [trade(7, 1_000), trade(8, 1_001)], 5)
    assert [t[0][6] for t in got] == [7, 8]
    # a reconnect's snapshot: the same trades, their old times
    assert tape.trades(0, "BTC/USD", [trade(7, 1_000), trade(8, 1_001)], 6) == []
    assert tape.counters.duplicates == 2
    # ids from 1 again, with later times: the exchange renumbered, nothing is a repeat
    got = tape.trades(0, "BTC/USD", [trade(1, 2_000), trade(2, 2_001)], 7)
    assert [(t[0][6], t[1]) for t in got] == [(1, 0), (2, 0)]
    assert tape.counters.duplicates == 2


def test_sequential_ids_count_gaps_on_kraken_only() -> None:
    kraken, okx = TradeTape("kraken", FeedCounters("ccxt")), TradeTape("okx", FeedCounters("ccxt"))
    for tape, gap in ((kraken, 3), (okx, 0)):
        got = tape.trades(0, "BTC/USD", [trade("10", 1), trade("14", 2)], 0)
        assert [t[1] for t in got] == [0, gap]


def test_bad_trades_are_counted_by_reason_and_text_ids_are_deduplicated() -> None:
    tape = TradeTape("bitstamp", FeedCounters("ccxt"))
    rows = [trade("a", 1, price=0.0), trade("b", 2, price=float("nan")), trade("c", 3, amount=-1.0),
            trade("d", "soon"), trade("e", 5, price="12.5"), trade("e", 5, price="12.5"), "nonsense",
            {**trade("f", 6), "symbol": "ETH/USD"}]
    got = tape.trades(0, "BTC/USD", rows, 0)
    assert [(t[0][3], t[0][6]) for t in got] == [(12.5, -1)]
    assert dict(tape.counters.bad) == {"bad price": 2, "bad size": 1, "bad time": 1, "not a trade": 1,
                                       "another symbol": 1}
    assert tape.counters.duplicates == 1
    for i in range(RECENT_IDS + 10):  # the remembered ids stay bounded
        tape.trades(0, "BTC/USD", [trade(f"x{i}", 10 + i)], 0)
    assert len(tape._recent[0][0]) == RECENT_IDS

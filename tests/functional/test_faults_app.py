"""The console against a Binance-protocol server that keeps failing (``bench.faults.FaultServer``, the server
of ``tickdeck bench --faults``): clean closes, dropped TCP connections and refused handshakes, with
garbage and duplicates in between. The app stays up, the header goes reconnecting -> live after each
fault, and the feed's counters match what the server sent."""

from __future__ import annotations

from collections.abc import Callable

from bench.faults import FaultServer
from console.app import RUNTIME_GROUP, build_app
from engine.config import Config
from tests.functional.support import wait_for
from tests.functional.test_app import SIZE, rows
from widgets.formatting import MISSING

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FAULTS = 4


def recoveries(states: list[str]) -> int:
    """How many times the header went to reconnecting and later came back to live."""
    count, down = 0, False
    for state in states:
        if state == "reconnecting":
            down = True
        elif state == "live" and down:
            count, down = count + 1, False
    return count


async def test_the_console_stays_up_and_the_header_shows_each_reconnect(
        make_config: Callable[..., Config]) -> None:
    async with FaultServer(SYMBOLS, rate=200.0, every=1.0, faults=("close", "abort", "refuse"), garbage=2,
                           duplicates=2, seed=11) as server:
        config = make_config({"feed.name": "binance", "feeds.binance.url": server.url,
                              "feeds.binance.symbols": SYMBOLS, "history.fetch": False})
        app = build_app(config)
        states: list[str] = []
        async with app.run_test(size=SIZE) as pilot:
            app.watch(app.header, "state", lambda state: states.append(state), init=False)
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to go live")
            server.start()
            await wait_for(pilot, lambda: sum(server.book.faults.values()) >= FAULTS, "the faults")
            await server.finish()
            await wait_for(pilot, lambda: app.header.state == "live", "the feed to come back")
            assert app.runtime is not None
            counters = app.runtime.feed.counters
            await wait_for(pilot, lambda: counters.ticks + counters.gaps + counters.bad["bad price"]
                           == server.book.trade_ids, "every trade id accounted for")
            workers = [w for w in app.workers if w.group == RUNTIME_GROUP]
            assert len(workers) == 1 and workers[0].is_running  # the runtime survived every fault
            assert app.is_running
            shown = rows(app)
            assert set(SYMBOLS) <= set(shown) and all(shown[s][1] != MISSING for s in SYMBOLS)
            assert counters.bad_total == server.book.garbage_total
            assert counters.duplicates == server.book.duplicates
            assert counters.reconnects == sum(server.book.faults.values()) + server.book.refused
    assert "failed" not in states
    assert recoveries(states) >= FAULTS
    assert states[-1] == "live"

"""Each instrument at its own precision: from its tick size where the feed knows it, from its price
otherwise; never a negative zero, and a change too small to show is neither up nor down."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.precision import hint_decimals, tick_decimals
from engine.sinks.frames import decode_quote, dumps, quote_frame
from engine.snapshot import Quote
from widgets import formatting as fmt
from widgets.watchlist_layout import layout, row_cells


def quote(last: float, first: float, decimals: int | None = None) -> Quote:
    closes = np.linspace(first, last, 10)
    closes.flags.writeable = False
    change = last - first
    return Quote("X", last, change, 100 * change / first, 1_000.0, closes, {}, 0, decimals)


def cells(q: Quote) -> dict[str, tuple[str, str]]:
    specs = layout(80, [], 6)
    return {spec.key: (cell.text, cell.role) for spec, cell in zip(specs, row_cells("X", q, None, specs),
                                                                    strict=True)}


@pytest.mark.parametrize(("value", "shown"), [
    (43210.5, "43,210.50"), (128.16, "128.16"), (5.12, "5.120"), (0.5, "0.5000"), (0.0001234, "0.0001234"),
    (0.12345, "0.1235"), (12345.678, "12,345.68"),
])
def test_a_price_without_a_tick_size_shows_four_significant_digits_and_at_least_two_decimals(
        value: float, shown: str) -> None:
    assert fmt.price(value) == shown


@pytest.mark.parametrize(("tick", "decimals", "price", "shown"), [
    ("0.01000000", 2, 5.1234, "5.12"), ("0.00001", 5, 1.0843217, "1.08432"), ("1", 0, 43210.5, "43,210"),
    ("1.00000000", 0, 2.0, "2"), ("0.5", 1, 7.25, "7.2"),
])
def test_a_tick_size_sets_the_decimals_of_price_and_change(tick: str, decimals: int, price: float,
                                                          shown: str) -> None:
    assert tick_decimals(tick) == decimals
    assert fmt.price(price, decimals) == shown
    assert fmt.change(3 * 10.0 ** -decimals, price, decimals) == f"+{3 * 10.0 ** -decimals:.{decimals}f}"


def test_what_is_not_a_tick_size_is_unknown() -> None:
    assert [tick_decimals(t) for t in ("0.00000000", "-0.01", "abc", "", "nan", "1e-20")] == [None] * 6
    hints = [hint_decimals(h) for h in (2, 4.0, True, -1, "2", None, 99)]
    assert hints == [2, 4, None, None, None, None, None]


def test_never_a_negative_zero() -> None:
    assert fmt.change(-0.001, 128.0) == "0.00"
    assert fmt.change(-0.0, 5.0) == "0.000"
    assert fmt.change(-0.4, 43210.0, 0) == "0"
    assert fmt.price(-0.0) == "0.00" and fmt.price(-0.0001, 2) == "0.00"
    assert fmt.percent(-0.0) == "0.00%" and fmt.percent(0.0) == "0.00%"
    q = cells(quote(128.0, 128.001))  # fell by a thousandth of a cent-ticked stock: no move at all
    assert q["change"] == ("0.00", "flat") and q["change_pct"] == ("0.00%", "flat")
    assert q["spark"][1] == "flat"


def test_a_five_dollar_stock_shows_its_small_real_moves() -> None:
    q = cells(quote(5.124, 5.12))
    assert q["last"][0] == "5.124"
    assert q["change"] == ("+0.004", "up")
    assert q["change_pct"] == ("+0.08%", "up")
    q = cells(quote(43212.3, 43210.5))  # a small move of a large price: three decimals, not +0.00%
    assert q["change"] == ("+1.80", "up") and q["change_pct"] == ("+0.004%", "up")
    q = cells(quote(5.1198, 5.12))
    assert q["change"] == ("0.000", "flat") and q["change_pct"] == ("0.00%", "flat")


def test_a_sub_cent_instrument_shows_its_moves() -> None:
    q = cells(quote(0.0001236, 0.0001234))
    assert q["last"][0] == "0.0001236"
    assert q["change"] == ("+2.0e-07", "up")  # +0.0000002 takes ten cells; the column has eight
    q = cells(quote(0.00012, 0.00013, decimals=8))  # tick size 0.00000001
    assert q["last"][0] == ".00012000" and q["change"] == ("-.000010", "down")


def test_a_number_too_wide_for_its_column_is_squeezed_never_cut() -> None:
    assert fmt.price(2_345_678.0, None, 9) == "2345678.0"  # no separators, then fewer decimals
    assert fmt.price(2_345_678.0, 0, 9) == "2,345,678"
    assert fmt.change(-0.00005, 0.1234, 5, 8) == "-0.00005"
    assert fmt.change(1234.5, 43210.0, 2, 8) == "+1234.50"
    assert fmt.change(-0.00001, 0.00012, 8, 8) == "-.000010"
    assert fmt.change(0.0000002, 0.0001236, None, 8) == "+2.0e-07"  # fewer decimals would read zero
    for value, ref, decimals in ((0.0000002, 0.0001, 8), (-9_999_999.0, 1e9, 2), (123.456789, 5e6, 6)):
        for width in (6, 7, 8, 9):
            assert len(fmt.change(value, ref, decimals, width)) <= width
            assert len(fmt.price(ref, decimals, width)) <= width


def test_a_percentage_shows_a_move_two_decimals_would_hide() -> None:
    assert fmt.percent(0.004) == "+0.004%"
    assert fmt.percent(-0.0042) == "-0.004%"
    assert fmt.percent(0.0002) == "+<.001%" and fmt.percent(-0.0002) == "-<.001%"
    assert fmt.percent(1.234) == "+1.23%"
    assert fmt.percent(math.nan) == fmt.MISSING
    assert all(len(fmt.percent(v)) <= 7 for v in (0.0002, -0.0042, 9.99, -9.994))


def test_the_tick_size_decimals_travel_in_snapshot_frames_and_old_frames_still_decode() -> None:
    import json

    q = quote(5.12, 5.0, decimals=5)
    frame = json.loads(dumps(quote_frame(q)))
    assert frame["decimals"] == 5 and decode_quote(frame).decimals == 5
    unknown = json.loads(dumps(quote_frame(quote(5.12, 5.0))))
    assert "decimals" not in unknown and decode_quote(unknown).decimals is None  # as an older publisher
    for bad in (-1, 99, "2", 2.5, True, None):
        assert decode_quote({**frame, "decimals": bad}).decimals is None


async def test_binance_tick_sizes_are_asked_once_per_symbol_even_while_a_request_is_under_way() -> None:
    import asyncio

    from bench.servers.history_tape import EXCHANGE_INFO, RestHistory, Tape
    from engine.feeds.base import FeedCounters
    from engine.feeds.binance_ticks import TickSizes

    rest = RestHistory(Tape())
    await rest.start()
    try:
        rest.tick_sizes.update({"BTCUSDT": "0.01000000", "SHIBUSDT": "0.00000001", "BTCTRY": "1.00000000"})
        rest.gate = asyncio.Event()  # the first request waits at the server
        decimals: dict[str, int] = {}
        ticks = TickSizes(rest.url, FeedCounters("binance"), decimals)
        ticks.want(["BTCUSDT", "SHIBUSDT"])
        async with asyncio.timeout(5):
            while not ticks._asking:
                await asyncio.sleep(0.01)
        ticks.want(["BTCUSDT", "SHIBUSDT", "BTCTRY"])  # a subscription while the first is in flight
        rest.gate.set()
        async with asyncio.timeout(5):
            await ticks.wait()
        assert decimals == {"BTCUSDT": 2, "SHIBUSDT": 8, "BTCTRY": 0}
        asked = [q["symbols"] for path, q, _ in rest.requests if path == EXCHANGE_INFO]
        assert asked == ['["BTCUSDT","SHIBUSDT"]', '["BTCTRY"]']
        ticks.want(["BTCUSDT", "BTCTRY"])  # known: nothing is asked again
        await ticks.wait()
        assert rest.count(EXCHANGE_INFO) == 2
        await ticks.aclose()
    finally:
        await rest.stop()


def test_the_headless_service_passes_on_the_tick_sizes_its_feed_learns() -> None:
    from engine.feeds.sim import SimFeed
    from engine.headless import StoppableFeed
    from engine.ticks import SymbolTable

    feed = SimFeed(SymbolTable(8), n_symbols=2, seed=1)
    wrapped = StoppableFeed(feed)
    feed.decimals["AAPL"] = 2  # learned later, as a live feed learns them
    assert wrapped.decimals == {"AAPL": 2}

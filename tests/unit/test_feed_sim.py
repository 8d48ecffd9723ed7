"""The simulated market: deterministic, well-formed ticks, and the statistical shape of a real one."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

import numpy as np
import pytest

from engine.feeds.base import FeedItem, FeedStatus, HistoryBars
from engine.feeds.sim import MARKET, SECTORS, TICKERS, SimFeed, measure, universe
from engine.ticks import BAR_DTYPE, SymbolTable

SEC = 1_000_000_000
DAY = 23_400 * SEC  # the sim's default session
OPEN = 1_800_000_000 * SEC // DAY * DAY  # a session start
BAR = 300 * SEC


def sim(n_symbols: int = 40, seed: int = 7, **kwargs: Any) -> SimFeed:
    return SimFeed(SymbolTable(max(n_symbols, 1)), n_symbols=n_symbols, seed=seed, **kwargs)


def closes(feed: SimFeed, ticks: np.ndarray, start: int, bar_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Bar ends and each symbol's last price at or before each end, shape (bars, symbols)."""
    ends = np.arange(start + bar_ns, int(ticks["ts"].max()) + 1, bar_ns)
    out = np.full((len(ends), len(feed.names)), np.nan)
    order = np.argsort(ticks["sym"], kind="stable")
    sym, ts, price = ticks["sym"][order], ticks["ts"][order], ticks["price"][order]
    bounds = np.searchsorted(sym, feed.slots, side="left"), np.searchsorted(sym, feed.slots, side="right")
    for i, (a, b) in enumerate(zip(*bounds, strict=True)):
        j = np.searchsorted(ts[a:b], ends, side="right") - 1
        out[j >= 0, i] = price[a:b][j[j >= 0]]
    return ends, out


def bar_returns(feed: SimFeed, ticks: np.ndarray, start: int, bar_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Log returns of bars every symbol has traded by, and the end time of each."""
    ends, c = closes(feed, ticks, start, bar_ns)
    r = np.diff(np.log(c), axis=0)
    keep = ~np.isnan(r).any(axis=1)
    return ends[1:][keep], r[keep]


def run(feed: SimFeed, days: int, per_day: int, batches_per_day: int) -> np.ndarray:
    """``per_day`` ticks a session in equal batches, arriving as the intraday profile has them."""
    step = DAY // batches_per_day
    out = []
    for i in range(days * batches_per_day):
        end = OPEN + (i + 1) * step
        n = round(per_day * feed.expected_ticks(end - step, end) / feed.expected_ticks(OPEN, OPEN + DAY))
        out.append(feed.next_batch(n, end, step / SEC))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def market() -> tuple[SimFeed, np.ndarray]:
    """Twenty sessions of forty symbols, one batch a session: two million ticks."""
    feed = sim(seed=11)
    return feed, run(feed, days=20, per_day=100_000, batches_per_day=1)


def check_batch(feed: SimFeed, ticks: np.ndarray, now: int, dt_s: float, first_id: int) -> None:
    """Everything a well-formed batch promises."""
    assert np.all(np.diff(ticks["ts"]) >= 0)
    assert np.all(ticks["ts"] >= now - round(dt_s * SEC)) and np.all(ticks["ts"] <= now)
    assert np.all(ticks["recv"] == now)
    assert np.all(np.isfinite(ticks["price"])) and np.all(ticks["price"] > 0)
    assert np.all(np.isfinite(ticks["size"])) and np.all(ticks["size"] >= 1)
    assert np.all(ticks["size"] == np.round(ticks["size"]))
    assert set(np.unique(ticks["side"])) <= {-1, 1}
    assert np.all(np.isin(ticks["sym"], feed.slots))
    np.testing.assert_array_equal(ticks["trade_id"], np.arange(first_id, first_id + len(ticks)))


def calls(feed: SimFeed) -> list[np.ndarray]:
    """A mixed session: backfill, dense and sparse live batches, a long gap, one reaching back."""
    now = OPEN + 2 * 3600 * SEC
    out = [feed.backfill(now)]
    for n, step in ((20_000, 0.05), (10, 0.05), (3, 0.05), (500, 5.0), (40_000, 60.0), (7, 4000.0)):
        now += round(step * SEC)
        out.append(feed.next_batch(n, now, step))
    out.append(feed.next_batch(100, now - 30 * SEC, 10.0))
    return out


def test_same_seed_and_calls_give_identical_ticks() -> None:
    a, b = sim(seed=3, backfill=30), sim(seed=3, backfill=30)
    for x, y in zip(calls(a), calls(b), strict=True):
        np.testing.assert_array_equal(x, y)
    times = np.arange(OPEN, OPEN + 4 * 3600 * SEC, 60 * SEC)
    np.testing.assert_array_equal(a.regimes_at(times), b.regimes_at(times))
    assert a.jumps == b.jumps
    other = calls(sim(seed=4, backfill=30))
    assert not np.array_equal(other[1]["price"], calls(sim(seed=3, backfill=30))[1]["price"])


def test_every_batch_is_well_formed_even_at_extreme_volatility() -> None:
    feed = sim(n_symbols=60, seed=5, backfill=60)
    now = OPEN + 3600 * SEC
    bars = feed.backfill(now)
    check_bars(feed, bars, now, 60)
    next_id = int(bars["trades"].sum())  # the tape's trade ids go on after the history's trades
    assert feed.trade_id == next_id
    plan = [(20_000, 0.05, 1.0), (1, 0.05, 1.0), (0, 0.05, 1.0), (500, 0.0, 1.0), (5_000, 0.5, 1.0),
            (50_000, 7200.0, 40.0), (200, 86_400.0 * 30, 25.0), (10, 0.01, 1.0)]
    for n, step, vol in plan:
        now += round(step * SEC)
        batch = feed.next_batch(n, now, step, vol_scale=vol)
        assert len(batch) == n
        check_batch(feed, batch, now, step, next_id)
        next_id += n
    back = feed.next_batch(1000, now - 3600 * SEC, 60.0)  # a window before ticks already sent
    check_batch(feed, back, now - 3600 * SEC, 60.0, next_id)
    assert np.all(np.isfinite(feed.price)) and np.all(feed.price > 0)


def test_names_are_distinct_well_known_first_then_pronounceable_inventions() -> None:
    names = universe(5000, 1)
    assert len(set(names)) == 5000
    assert names[: len(TICKERS)] == list(TICKERS)
    assert universe(40, 1) == list(TICKERS[:40]) and universe(40, 1)[:3] == ["AAPL", "MSFT", "NVDA"]
    invented = names[len(TICKERS):]
    syllable = r"(?:BR|CR|DR|FL|GR|KL|PR|ST|TR|SK|[BCDFGHJKLMNPRSTVWZ])[AEIOU]"
    pattern = re.compile(rf"{syllable}(?:{syllable})?[NRSXLTKM]?")
    assert all(pattern.fullmatch(name) and 3 <= len(name) <= 5 for name in invented)
    assert universe(5000, 1) == names and universe(5000, 2) != names  # seeded inventions

    table = SymbolTable(5000)
    feed = SimFeed(table, n_symbols=5000, seed=1)
    assert feed.universe() == tuple(names) and len(table) == 5000
    assert [table.name(int(s)) for s in feed.slots] == names
    assert feed.sector("AAPL") == "Technology" and feed.sector("JPM") == "Financials"
    assert feed.sector("BTC-USD") == "Crypto" and feed.sector("XOM") == "Energy"
    invented_sectors = {SECTORS[s] for s in feed.sector_ids[len(TICKERS):]}
    assert invented_sectors == set(SECTORS) - {"Crypto"}


def test_bar_returns_are_normal_in_the_body_with_fat_tails_from_jumps(market: tuple[SimFeed, np.ndarray]
                                                                      ) -> None:
    feed, ticks = market
    _, r = bar_returns(feed, ticks, OPEN, BAR)
    assert r.shape[0] > 1400  # 5-minute bars of twenty sessions
    z = ((r - r.mean(axis=0)) / r.std(axis=0)).ravel()
    assert np.mean(z**4) - 3.0 > 1.0  # excess kurtosis: fat tails
    med = np.median(r, axis=0)
    robust = ((r - med) / (1.4826 * np.median(np.abs(r - med), axis=0))).ravel()
    np.testing.assert_allclose(np.quantile(robust, [0.25, 0.75]), [-0.6745, 0.6745], atol=0.03)
    np.testing.assert_allclose(np.quantile(robust, [0.1, 0.9]), [-1.2816, 1.2816], atol=0.15)
    assert 0.63 < np.mean(np.abs(robust) < 1.0) < 0.73  # a normal has 0.683 within one sigma
    assert np.mean(np.abs(robust) > 5.0) > 100 * 5.7e-7  # a normal has 5.7e-7 beyond five sigma
    assert feed.jumps > 20  # about one jump per symbol every ten sessions
    assert np.abs(robust).max() > 10.0


def test_turbulent_regimes_raise_realised_volatility(market: tuple[SimFeed, np.ndarray]) -> None:
    feed, ticks = market
    ends, r = bar_returns(feed, ticks, OPEN, BAR)
    start, end = feed.regimes_at(ends - BAR), feed.regimes_at(ends)
    assert not np.array_equal(start, end)  # the chains switch
    turbulent_share = (start & end).mean(axis=0)
    assert np.all(turbulent_share > 0.02) and np.all(turbulent_share < 0.5)  # spells of both kinds
    z = np.abs(r / r.std(axis=0))
    sector_turbulent = (start & end)[:, feed.sector_ids]
    sector_calm = (~start & ~end)[:, feed.sector_ids]
    market_calm = (~start[:, MARKET] & ~end[:, MARKET])[:, None]
    ratio = np.median(z[sector_turbulent & market_calm]) / np.median(z[sector_calm & market_calm])
    assert ratio > 1.4
    market_turbulent = (start[:, MARKET] & end[:, MARKET])[:, None]
    assert np.median(z[sector_calm & market_turbulent]) > 1.2 * np.median(z[sector_calm & market_calm])


def test_same_sector_returns_correlate_more_than_cross_sector(market: tuple[SimFeed, np.ndarray]) -> None:
    feed, ticks = market
    _, r = bar_returns(feed, ticks, OPEN, BAR)
    corr = np.corrcoef(r.T)
    same = feed.sector_ids[:, None] == feed.sector_ids[None, :]
    within = corr[same & ~np.eye(len(corr), dtype=bool)].mean()
    across = corr[~same].mean()
    assert within > across + 0.1 and across > 0.05  # a market factor, and sectors on top of it


def test_volume_profile_is_u_shaped() -> None:
    feed = sim(seed=2)
    ticks = feed.next_batch(300_000, OPEN + DAY, DAY / SEC)
    hour = ((ticks["ts"] - OPEN) // (3600 * SEC)).astype(np.intp)  # 6.5 hours: the last is half
    per_hour = np.bincount(hour, minlength=7) / np.array([1, 1, 1, 1, 1, 1, 0.5])
    middle = per_hour[2:5].max()
    assert per_hour[0] > 1.5 * middle and per_hour[6] > 1.5 * middle
    half = ((ticks["ts"] - OPEN) // (1800 * SEC)).astype(np.intp)
    sizes = np.array([np.median(ticks["size"][half == h]) for h in range(13)])
    assert sizes[0] > 1.2 * sizes[4:9].max() and sizes[12] > 1.2 * sizes[4:9].max()
    # the live rate follows the same profile, and averages ``rate`` over a session
    minute = 60 * SEC
    at_open = feed.expected_ticks(OPEN, OPEN + minute)
    at_noon = feed.expected_ticks(OPEN + DAY // 2, OPEN + DAY // 2 + minute)
    assert at_open > 2.0 * at_noon > 0
    assert feed.expected_ticks(OPEN, OPEN + DAY) == pytest.approx(feed.rate * DAY / SEC, rel=1e-6)


def test_dense_and_sparse_batches_give_the_same_volatility_and_jumps(monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    """Busy batches interpolate a grid of each symbol's path; quiet ones step it trade by trade."""
    used: dict[str, int] = {"_dense": 0, "_sparse": 0}

    def spy(feed: SimFeed, name: str) -> None:
        real: Callable[..., Any] = getattr(feed, name)

        def counted(*args: Any) -> Any:
            used[name] += 1
            return real(*args)

        monkeypatch.setattr(feed, name, counted)

    vols = []
    for per_minute, path in ((3_000, "_dense"), (150, "_sparse")):
        used.update(_dense=0, _sparse=0)
        feed = sim(n_symbols=20, seed=9, jumps_per_day=5.0, turbulence=1.0)  # no regimes: less noise
        spy(feed, "_dense")
        spy(feed, "_sparse")
        ticks = run(feed, days=1, per_day=390 * per_minute, batches_per_day=390)
        assert used[path] == 390 and sum(used.values()) == 390
        _, r = bar_returns(feed, ticks, OPEN, 60 * SEC)
        med = np.median(r, axis=0)
        robust = 1.4826 * np.median(np.abs(r - med), axis=0)
        vols.append(robust / (feed.sigma / np.sqrt(252 * 390)))
        assert 50 < feed.jumps < 150  # five a session for each of twenty symbols
        assert np.sum(np.abs(r - med) > 6 * robust) > 0.4 * feed.jumps  # and they move prices
    dense, sparse = vols
    assert 0.85 < np.median(dense) < 1.2 and 0.85 < np.median(sparse) < 1.2  # the symbol's own sigma
    assert 0.9 < np.median(dense) / np.median(sparse) < 1.15


def check_bars(feed: SimFeed, bars: np.ndarray, now: int, count: int, bar_ns: int = 60 * SEC) -> None:
    """Everything a well-formed history promises: ``count`` whole bars before the one forming at ``now``
    and that one, in time order, each a bar with trades that rebuilds from its trades."""
    assert bars.dtype == BAR_DTYPE
    start = now - now % bar_ns - count * bar_ns
    assert np.all(np.diff(bars["t"]) >= 0) and np.all(bars["t"] % bar_ns == 0)
    forming = now - now % bar_ns
    assert bars["t"].min() == start and bars["t"].max() == (forming if now > forming else forming - bar_ns)
    assert np.all(np.isin(bars["sym"], feed.slots))
    for name in ("open", "high", "low", "close"):
        assert np.all(np.isfinite(bars[name])) and np.all(bars[name] > 0)
    assert np.all(bars["high"] >= np.maximum(bars["open"], bars["close"]))
    assert np.all(bars["low"] <= np.minimum(bars["open"], bars["close"]))
    assert np.all(bars["trades"] >= 1) and np.all(bars["volume"] >= bars["trades"])  # a trade is >= 1
    assert np.all(bars["volume"] == np.round(bars["volume"]))
    one = bars["trades"] == 1
    assert np.all(bars["open"][one] == bars["close"][one]) and np.all(bars["high"][one] == bars["low"][one])
    keys = bars["t"].astype(np.int64) * 100_000 + bars["sym"]
    assert len(np.unique(keys)) == len(bars)  # one bar per symbol and bar time


def test_backfill_spans_its_window_in_bars() -> None:
    now = OPEN + 5 * 3600 * SEC + 17 * SEC
    feed = sim(seed=3, backfill=300)
    bars = feed.backfill(now)
    check_bars(feed, bars, now, 300)
    assert set(np.unique(bars["sym"])) == set(feed.slots)
    assert len(bars) == 40 * 301  # 40 busy symbols: every one trades in every bar
    live = feed.next_batch(4000, now + SEC, 1.0)
    last = {int(s): c for s, c in zip(bars["sym"], bars["close"], strict=True)}
    moved = [abs(np.log(p / last[int(s)])) for s, p in zip(live["sym"], live["price"], strict=True)]
    assert np.median(moved) < 0.002  # a second later prices are where history left them
    quiet = sim(n_symbols=5000, seed=3, backfill=10).backfill(now)  # most of 5000 names rarely trade
    assert 0 < len(quiet) < 5000 * 11 and np.all(quiet["trades"] >= 1)


async def test_stream_reports_live_then_backfill_then_batches_and_counts_them() -> None:
    feed = sim(seed=4, rate=50_000.0, batch_hz=200.0, backfill=2)
    stream = feed.stream()
    assert isinstance(stream, AsyncGenerator)  # so it can be closed
    items: list[FeedItem] = []
    try:
        while sum(isinstance(i, np.ndarray) for i in items) < 3:
            items.append(await asyncio.wait_for(anext(stream), 5.0))
    finally:
        await stream.aclose()
    status, backfill, *live = items
    assert isinstance(status, FeedStatus) and status.state == "live" and status.feed == "sim"
    assert isinstance(backfill, HistoryBars) and backfill.bars.dtype == BAR_DTYPE
    assert len(np.unique(backfill.bars["t"])) in (2, 3)  # two whole bars, and the one forming if it traded
    batches = [b for b in live if isinstance(b, np.ndarray)]
    assert len(batches) == 3 and len(live) == 3
    next_id = int(backfill.bars["trades"].sum())
    for batch in batches:
        assert len(batch) > 0 and np.all(np.diff(batch["ts"]) >= 0)
        np.testing.assert_array_equal(batch["trade_id"], np.arange(next_id, next_id + len(batch)))
        assert np.all(batch["price"] > 0) and np.all(batch["ts"] <= batch["recv"])
        next_id += len(batch)
    c = feed.counters
    assert c.messages == 4 and c.ticks == next_id - int(backfill.bars["trades"].sum())  # the live tape's
    assert (c.reconnects, c.duplicates, c.gaps, c.out_of_order, c.bad_total) == (0, 0, 0, 0, 0)


def test_rejects_settings_it_cannot_honour() -> None:
    for kwargs, message in (({"n_symbols": 0}, "between 1 and 5000"), ({"n_symbols": 5001}, "5000"),
                            ({"rate": 0.0}, "rate"), ({"rate": float("nan")}, "rate"),
                            ({"batch_hz": -1.0}, "batch_hz"), ({"day_s": 10.0}, "day_s"),
                            ({"turbulence": 0.5}, "turbulence"), ({"calm_s": 0.0}, "calm_s"),
                            ({"jumps_per_day": -1.0}, "jumps_per_day"), ({"backfill": -1}, "backfill"),
                            ({"bar_ns": 0}, "backfill")):
        with pytest.raises(ValueError, match=message):
            SimFeed(SymbolTable(6000), **{"n_symbols": 40, **kwargs})  # type: ignore[arg-type]


def test_generation_rate_is_reported() -> None:
    """The generator's throughput, printed (run with -s to see it); never asserted against a clock."""
    for n_symbols in (40, 5000):
        rate = measure(n_symbols, rate=200_000.0, seconds=0.5)
        print(f"sim generates {rate:,.0f} ticks/s for {n_symbols} symbols (batches of 10,000)")
        assert rate > 0

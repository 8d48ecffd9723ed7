"""Replay and record: files in, the same ticks and bars out; pacing on an injected clock; bad files."""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import load_config
from engine.feeds.base import FeedStatus
from engine.feeds.record import Recorder, RecorderError, read_jsonl
from engine.feeds.replay import ReplayError, ReplayFeed, bars_to_ticks, parse_speed, read_replay_file
from engine.feeds.sim import SimFeed
from engine.runtime import Runtime, Update, build_engine
from engine.tick_engine import Engine
from engine.ticks import TICK_DTYPE, SymbolTable, make_ticks

SEC = 1_000_000_000
MIN = 60 * SEC
T0 = 1_700_000_000 * SEC - (1_700_000_000 * SEC) % (86_400 * SEC)  # a UTC midnight
OUTS = ["sma_5", "ema_5", "rsi_3"]
BAR_FIELDS = ["open", "high", "low", "close", "volume"]
TICK_FIELDS = ["ts", "recv", "price", "size", "side", "trade_id"]


# --- helpers ---------------------------------------------------------------------------------------

class FakeTime:
    """A monotonic clock that only moves when the feed sleeps (or the test moves it)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []
        self.gate: asyncio.Event | None = None  # when set, sleep waits for it and does not move time
        self.parked = asyncio.Event()

    def clock(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.gate is None:
            self.t += seconds
            await asyncio.sleep(0)
            return
        self.parked.set()
        await self.gate.wait()
        self.gate.clear()
        self.parked.clear()


async def collect(feed: ReplayFeed, limit: int = 10_000) -> tuple[list[FeedStatus], list[np.ndarray]]:
    statuses: list[FeedStatus] = []
    batches: list[np.ndarray] = []
    async for item in feed.stream():
        if isinstance(item, FeedStatus):
            statuses.append(item)
        else:
            batches.append(item)
        assert len(batches) < limit
    return statuses, batches


async def drive(feed: ReplayFeed, engine: Engine, max_ticks: int | None = None) -> list[FeedStatus]:
    """What the runtime does with each batch: ingest, then close bars due by the feed's clock."""
    statuses: list[FeedStatus] = []
    seen = 0
    stream = feed.stream()
    async for item in stream:
        if isinstance(item, FeedStatus):
            statuses.append(item)
            continue
        engine.ingest(item)
        now = feed.now_ns()
        engine.close_due(now - now % engine.interval_ns)
        seen += len(item)
        if max_ticks is not None and seen >= max_ticks:
            await stream.aclose()  # type: ignore[attr-defined]
            break
    return statuses


def states(statuses: list[FeedStatus]) -> list[str]:
    return [s.state for s in statuses]


def make_bars(n: int, seed: int = 1, step: int = MIN) -> pd.DataFrame:
    """Aligned bars with gaps, 2-decimal prices and volumes with many significant digits."""
    rng = np.random.default_rng(seed)
    t = T0 + step * np.cumsum(rng.choice([1, 1, 1, 2, 7], n))
    o = np.round(100 + np.cumsum(rng.normal(0, 1, n)), 2)
    c = np.round(o + rng.normal(0, 1, n), 2)
    h = np.round(np.maximum(o, c) + rng.uniform(0, 1, n), 2)
    lo = np.round(np.minimum(o, c) - rng.uniform(0, 1, n), 2)
    v = rng.lognormal(5, 2, n)
    v[::17] = 0.0
    v[5:6] = 0.1
    return pd.DataFrame({"t": t, "open": o, "high": h, "low": lo, "close": c, "volume": v})


def write_bars_csv(path: Path, df: pd.DataFrame, symbol: str | None = None) -> None:
    out = pd.DataFrame({"Date": pd.to_datetime(df["t"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")})
    if symbol is not None:
        out["Symbol"] = symbol
    for name in BAR_FIELDS:
        out[name.capitalize()] = df[name]
    out.to_csv(path, index=False)


def assert_history(engine: Engine, symbol: str, df: pd.DataFrame, ended: bool = False) -> None:
    """Every bar of ``df`` but the last is closed history; the last is the forming bar, all exact.
    With ``ended`` (the runtime saw the file end), the last bar is closed history too."""
    slot = engine.symbols.get(symbol)
    assert slot is not None
    t, bars = engine.history.tail(slot)
    if ended:
        np.testing.assert_array_equal(t, df["t"].to_numpy())
        np.testing.assert_array_equal(bars, df[BAR_FIELDS].to_numpy())
        assert engine.forming_bar(slot) is None
        return
    np.testing.assert_array_equal(t, df["t"].to_numpy()[:-1])
    np.testing.assert_array_equal(bars, df[BAR_FIELDS].to_numpy()[:-1])
    forming = engine.forming_bar(slot)
    assert forming is not None
    assert forming[0] == df["t"].iat[-1]
    np.testing.assert_array_equal(forming[1], df[BAR_FIELDS].to_numpy()[-1])


def write_ticks_csv(path: Path, rows: list[tuple[str, int, float, float]]) -> None:
    lines = ["symbol,ts,price,size"] + [f"{s},{t},{p!r},{q!r}" for s, t, p, q in rows]
    path.write_text("\n".join(lines) + "\n")


def sim_batches(symbols: SymbolTable, sizes: list[int]) -> list[np.ndarray]:
    sim = SimFeed(symbols, n_symbols=25, seed=11)
    now = 1_800_000_000 * SEC
    return [sim.next_batch(n, now + k * SEC, 1.0) for k, n in enumerate(sizes)]


def named(ticks: np.ndarray, symbols: SymbolTable) -> pd.DataFrame:
    out = pd.DataFrame({f: ticks[f] for f in TICK_FIELDS})
    out.insert(0, "symbol", np.array(symbols.names, dtype=object)[ticks["sym"]])
    return out


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


# --- bars as ticks ---------------------------------------------------------------------------------

def test_bars_become_four_ticks_that_rebuild_them_exactly() -> None:
    v = np.array([100.0, 0.1, 1 / 3, 0.0, 5e-324, 1e308, 2.0**53 + 2, 7.3])
    n = len(v)
    o = np.array([10.0, 10.0, 5.0, 5.0, 1.0, 2.0, 3.0, 4.0])
    c = np.array([11.0, 9.0, 5.0, 4.0, 1.0, 2.5, 2.0, 4.5])
    h = np.maximum(o, c) + 1
    lo = np.minimum(o, c) - 0.5
    t = T0 + MIN * np.arange(n)
    ticks = bars_to_ticks(t, o, h, lo, c, v, MIN).reshape(n, 4)
    for k in range(n):
        bar = ticks[k]
        assert bar["ts"].tolist() == [t[k], t[k] + MIN // 4, t[k] + MIN // 2, t[k] + MIN - 1]
        assert bar["recv"].tolist() == bar["ts"].tolist()
        extremes = [lo[k], h[k]] if c[k] >= o[k] else [h[k], lo[k]]  # low first on an up bar
        assert bar["price"].tolist() == [o[k], *extremes, c[k]]
        total = bar["size"][0]
        for q in bar["size"][1:]:
            total += q  # the bar builder's order
        assert total == v[k] and (bar["size"] >= 0).all()
        assert bar["side"].tolist() == [0] * 4 and bar["trade_id"].tolist() == [-1] * 4


async def test_ohlcv_csv_through_the_engine_rebuilds_every_bar(tmp_path: Path) -> None:
    df = make_bars(300)
    path = tmp_path / "ACME.csv"
    write_bars_csv(path, df)
    engine = Engine(OUTS, MIN, capacity=4, depth=500)
    feed = ReplayFeed(engine.symbols, path, speed="max")
    statuses = await drive(feed, engine)
    assert states(statuses) == ["connecting", "live", "stopped"]
    assert statuses[-1].reason == "end of ACME.csv"
    assert feed.universe() == ("ACME",) and feed.interval == MIN
    assert_history(engine, "ACME", df)
    assert engine.stats.late_ticks == 0 and engine.stats.bad_ticks == 0 and engine.stats.ticks == 4 * 300
    c = feed.counters
    assert (c.messages, c.ticks, c.bad_total, c.duplicates, c.gaps, c.out_of_order, c.reconnects) == (
        300, 1200, 0, 0, 0, 0, 0)
    assert feed.now_ns() == df["t"].iat[-1] + MIN - 1  # the end: the last tick's time


async def test_ohlcv_parquet_with_an_index_and_several_symbols(tmp_path: Path) -> None:
    a, b = make_bars(120, seed=2), make_bars(90, seed=3)
    both = pd.concat([a.assign(symbol="AAA"), b.assign(symbol="BBB")]).sort_values("t", kind="stable")
    frame = both.set_index(pd.DatetimeIndex(pd.to_datetime(both["t"], utc=True), name=None))
    frame = frame.drop(columns="t")[["symbol", *BAR_FIELDS]]
    frame.index.name = None
    frame.columns = ["SYMBOL", "Open", "HIGH", "low", "Close", "Volume"]
    path = tmp_path / "two.parquet"
    frame.to_parquet(path)  # the unnamed DatetimeIndex is stored as __index_level_0__
    engine = Engine(OUTS, MIN, capacity=4, depth=500)
    feed = ReplayFeed(engine.symbols, path, speed="max")
    await drive(feed, engine)
    assert sorted(feed.universe()) == ["AAA", "BBB"]
    assert feed.interval == MIN  # the smallest spacing of any one symbol (bars of both share times)
    assert_history(engine, "AAA", a)
    assert_history(engine, "BBB", b)
    assert engine.stats.late_ticks == 0 and feed.counters.messages == 210


async def test_bar_interval_argument_and_symbol_argument(tmp_path: Path) -> None:
    df = make_bars(1).assign(t=T0)  # a multiple of 5 minutes
    path = tmp_path / "one.csv"
    write_bars_csv(path, df)
    with pytest.raises(ReplayError, match="bar interval is unknown"):
        ReplayFeed(SymbolTable(4), path).load()
    engine = Engine(OUTS, 5 * MIN, capacity=4, depth=50)
    feed = ReplayFeed(engine.symbols, path, speed="max", symbol="XYZ", bar_interval="5m")
    await drive(feed, engine)
    assert feed.universe() == ("XYZ",) and feed.interval == 5 * MIN
    forming = engine.forming_bar(engine.symbols.slot("XYZ"))
    assert forming is not None
    np.testing.assert_array_equal(forming[1], df[BAR_FIELDS].to_numpy()[0])
    two = tmp_path / "two.csv"
    write_bars_csv(two, make_bars(2).assign(t=[T0, T0 + MIN]))
    with pytest.raises(ReplayError, match="bar interval of 300000000000 ns is longer than the 6"):
        ReplayFeed(SymbolTable(4), two, bar_interval="5m").load()


async def test_looping_bars_keeps_time_moving_and_rebuilds_every_lap(tmp_path: Path) -> None:
    df = make_bars(40, seed=5)
    path = tmp_path / "L.csv"
    write_bars_csv(path, df)
    engine = Engine(OUTS, MIN, capacity=4, depth=500)
    feed = ReplayFeed(engine.symbols, path, speed="max", loop=True)
    feed.max_batch = 50  # several batches per lap
    await drive(feed, engine, max_ticks=3 * 160)
    span = int(df["t"].iat[-1] - df["t"].iat[0]) + MIN
    assert feed.span == span and feed.laps == 2
    three = pd.concat([df.assign(t=df["t"] + k * span) for k in range(3)], ignore_index=True)
    assert_history(engine, "L", three)
    assert engine.stats.late_ticks == 0
    assert feed.counters.ticks == 480 and feed.counters.messages == 40


# --- round trips -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rec.parquet", "rec.jsonl.gz", "rec.jsonl"])
async def test_record_then_replay_is_tick_for_tick_equal(tmp_path: Path, name: str) -> None:
    source = SymbolTable(64)
    batches = sim_batches(source, [5000, 1, 70_000, 333])
    path = tmp_path / name
    recorder = Recorder(path, source, row_group_ticks=10_000)
    for batch in batches:
        recorder(batch)
    stats = recorder.close()
    total = sum(len(b) for b in batches)
    assert (stats.written_ticks, stats.written_batches, stats.dropped_ticks, stats.pending_ticks) == (
        total, 4, 0, 0)
    assert stats.error == ""
    if name.endswith(".parquet"):
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows == total and meta.num_row_groups == math.ceil(total / 10_000)
        assert pq.read_schema(path).field("symbol").type == pa.string()
    target = SymbolTable(64)
    feed = ReplayFeed(target, path, speed="max")
    statuses, got = await collect(feed)
    assert states(statuses) == ["connecting", "live", "stopped"]
    assert [len(b) for b in got] == [65_536, total - 65_536]
    expected = named(np.concatenate(batches), source)
    pd.testing.assert_frame_equal(named(np.concatenate(got), target), expected)
    c = feed.counters
    assert (c.messages, c.ticks, c.bad_total) == (total, total, 0)
    assert (c.duplicates, c.gaps, c.out_of_order, c.reconnects) == (0, 0, 0, 0)
    assert set(feed.universe()) == set(expected["symbol"])


async def test_runtime_replays_with_a_recorder_tap_and_a_slow_engine(tmp_path: Path) -> None:
    """The engine is slower than both feed and recorder: batches coalesce, no tick is lost or late,
    the recording is complete, and the runtime stops at the end of the file."""
    df = make_bars(500, seed=9)
    src = tmp_path / "SLOW.csv"
    write_bars_csv(src, df)
    config = load_config(overrides={"engine.interval": "1m", "feeds.sim.backfill": 0}, env={})
    engine = build_engine(config)
    feed = ReplayFeed(engine.symbols, src, speed="max")
    feed.max_batch = 6  # bars straddle batches: closing one too early would make its last ticks late
    feed.load()
    rt = Runtime(config, engine=engine, feed=feed)
    rt.queue_batches = 4
    recorder = Recorder(tmp_path / "out.jsonl.gz", engine.symbols)
    rt.taps.append(recorder)
    real = rt.process

    def slow(ticks: np.ndarray | None, now_ns: int | None = None) -> Update:
        time.sleep(0.001)
        return real(ticks, now_ns)

    rt.process = slow  # type: ignore[method-assign]
    statuses: list[FeedStatus] = []
    await asyncio.wait_for(rt.run(lambda u: None, statuses.append), 60)
    stats = await recorder.aclose()
    assert states(statuses) == ["connecting", "live", "stopped"]
    assert rt.watch == ("SLOW",)
    assert rt.metrics.batches == math.ceil(2000 / 6) and rt.metrics.coalesced > 0
    assert engine.stats.ticks == 2000 and engine.stats.late_ticks == 0
    assert_history(engine, "SLOW", df, ended=True)
    assert (stats.written_ticks, stats.dropped_ticks) == (2000, 0)
    replay = ReplayFeed(SymbolTable(4), tmp_path / "out.jsonl.gz", speed="max")
    _, got = await collect(replay)
    o, h, lo, c, v = (df[f].to_numpy() for f in BAR_FIELDS)
    expected = bars_to_ticks(df["t"].to_numpy(), o, h, lo, c, v, MIN)
    np.testing.assert_array_equal(np.concatenate(got)[TICK_FIELDS], expected[TICK_FIELDS])


# --- pacing and the replayed clock -----------------------------------------------------------------

def _paced_file(tmp_path: Path) -> Path:
    path = tmp_path / "paced.csv"
    write_ticks_csv(path, [("A", T0, 10.0, 1.0), ("B", T0, 20.0, 1.0), ("A", T0 + SEC, 11.0, 2.0),
                           ("A", T0 + 3 * SEC // 2, 12.0, 3.0), ("B", T0 + 3 * SEC, 21.0, 4.0)])
    return path


@pytest.mark.parametrize(("speed", "sleeps"), [
    (1, [1.0, 0.5, 1.5]), ("1x", [1.0, 0.5, 1.5]), ("10x", [0.1, 0.05, 0.15]), (4.0, [0.25, 0.125, 0.375]),
    ("max", []),
])
async def test_pacing_follows_the_file_times(tmp_path: Path, speed: float | str, sleeps: list[float]) -> None:
    clock = FakeTime()
    feed = ReplayFeed(SymbolTable(4), _paced_file(tmp_path), speed=speed, clock=clock.clock,
                      sleep=clock.sleep)
    statuses, batches = await collect(feed)
    assert clock.sleeps == pytest.approx(sleeps)
    sizes = [5] if speed == "max" else [2, 1, 1, 1]
    assert [len(b) for b in batches] == sizes
    assert np.concatenate(batches)["price"].tolist() == [10.0, 20.0, 11.0, 12.0, 21.0]
    assert states(statuses) == ["connecting", "live", "stopped"]
    label = "max speed" if speed == "max" else f"{parse_speed(speed):g}x"
    assert statuses[1].reason == f"replaying paced.csv at {label}"
    assert feed.counters.ticks == 5 and feed.counters.messages == 5 and feed.counters.bad_total == 0


async def test_ticks_already_due_go_out_together(tmp_path: Path) -> None:
    """A consumer that took long (the clock jumped 2.2 s during one sleep): everything due is one batch."""
    clock = FakeTime()

    async def late_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        clock.t += seconds + 1.2
        await asyncio.sleep(0)

    feed = ReplayFeed(SymbolTable(4), _paced_file(tmp_path), speed=1, clock=clock.clock, sleep=late_sleep)
    _, batches = await collect(feed)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert clock.sleeps == pytest.approx([1.0, 0.8])  # the second sleep makes up for the lateness


async def test_max_speed_hands_over_batches_of_65536(tmp_path: Path) -> None:
    n = 150_000
    path = tmp_path / "many.parquet"
    ts = T0 + np.arange(n, dtype=np.int64) * 1000
    pq.write_table(pa.table({"Symbol": ["S"] * n, "TS": ts, "Price": np.full(n, 1.5), "Size": np.ones(n)}),
                   path)
    clock = FakeTime()
    feed = ReplayFeed(SymbolTable(4), path, speed="max", clock=clock.clock, sleep=clock.sleep)
    _, batches = await collect(feed)
    assert [len(b) for b in batches] == [65_536, 65_536, n - 2 * 65_536]
    assert clock.sleeps == []
    np.testing.assert_array_equal(np.concatenate(batches)["ts"], ts)
    np.testing.assert_array_equal(np.concatenate(batches)["recv"], ts)  # no recv column: recv = ts


async def test_now_ns_is_replayed_time_capped_at_the_next_tick(tmp_path: Path) -> None:
    clock = FakeTime()
    clock.gate = asyncio.Event()
    feed = ReplayFeed(SymbolTable(4), _paced_file(tmp_path), speed=1, clock=clock.clock, sleep=clock.sleep)
    assert feed.now_ns() == 0  # nothing read yet
    feed.load()
    assert feed.now_ns() == T0 and feed.universe() == ("A", "B")
    stream = feed.stream()
    assert (await anext(stream)).state == "connecting"  # type: ignore[union-attr]
    assert (await anext(stream)).state == "live"  # type: ignore[union-attr]
    first = await anext(stream)
    assert isinstance(first, np.ndarray) and len(first) == 2
    clock.t += 0.4
    assert feed.now_ns() == T0  # the batch is not handed over until the consumer asks for more
    nxt = asyncio.ensure_future(anext(stream))
    await asyncio.wait_for(clock.parked.wait(), 5)  # handed over; sleeping until T0 + 1 s
    assert clock.sleeps == pytest.approx([0.6])
    assert feed.now_ns() == T0 + 4 * SEC // 10
    clock.t += 0.3
    assert feed.now_ns() == T0 + 7 * SEC // 10
    clock.t += 5.0
    assert feed.now_ns() == T0 + SEC  # never past a tick still to come
    clock.gate.set()
    second = await asyncio.wait_for(nxt, 5)
    assert isinstance(second, np.ndarray) and second["price"].tolist() == [11.0, 12.0, 21.0]  # all due
    assert feed.now_ns() == T0 + SEC  # not yet handed over
    rest = [item async for item in stream]
    assert states(rest) == ["stopped"]  # type: ignore[arg-type]
    assert feed.now_ns() == T0 + 3 * SEC


async def test_looping_ticks_shift_by_the_span_each_lap(tmp_path: Path) -> None:
    path = _paced_file(tmp_path)
    clock = FakeTime()
    feed = ReplayFeed(SymbolTable(4), path, speed=2, loop=True, clock=clock.clock, sleep=clock.sleep)
    got: list[np.ndarray] = []
    clocks: list[int] = []
    stream = feed.stream()
    async for item in stream:
        if isinstance(item, np.ndarray):
            got.append(item)
            clocks.append(feed.now_ns())
        if sum(len(b) for b in got) >= 15:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    ticks = np.concatenate(got)
    span = 3 * SEC + 1
    assert feed.span == span and feed.laps == 2
    base = [T0, T0, T0 + SEC, T0 + 3 * SEC // 2, T0 + 3 * SEC]
    assert ticks["ts"].tolist() == [t + k * span for k in range(3) for t in base]
    assert ticks["recv"].tolist() == ticks["ts"].tolist()
    assert np.all(np.diff(ticks["ts"]) >= 0) and clocks == sorted(clocks)
    # paced across laps: from the last tick of a lap to the first of the next is 1 ns of replay time
    assert clock.sleeps == pytest.approx([0.5, 0.25, 0.75, 0.5e-9, 0.5, 0.25, 0.75, 0.5e-9, 0.5, 0.25, 0.75])
    assert feed.counters.ticks == 15 and feed.counters.messages == 5


def test_speed_and_interval_arguments() -> None:
    assert parse_speed("max") == math.inf and parse_speed(" 2.5X ") == 2.5 and parse_speed(3) == 3.0
    for bad in (0, -1, "fast", "x", "nan", ""):
        with pytest.raises(ValueError, match="replay speed must be"):
            parse_speed(bad)
    assert ReplayFeed(SymbolTable(1), "x.csv", bar_interval="15m").bar_interval == 15 * MIN
    with pytest.raises(ValueError, match="must be a duration"):
        ReplayFeed(SymbolTable(1), "x.csv", bar_interval="15 minutes")
    with pytest.raises(ValueError, match="bar interval must be positive"):
        ReplayFeed(SymbolTable(1), "x.csv", bar_interval=0)


# --- bad files and bad rows ------------------------------------------------------------------------

HEAD = "Date,Open,High,Low,Close,Volume\n"
ROW1 = "2024-01-02T09:30:00Z,10,11,9,10.5,100\n"
ROW2 = "2024-01-02T09:31:00Z,10.5,10.7,10.1,10.2,5\n"


@pytest.mark.parametrize(("text", "message", "line", "column"), [
    ("", "line 1: the file is empty", None, None),
    ("Date,Open,High,Low,Close\n" + ROW1, "line 1: missing required column(s) 'volume'", 1, None),
    ("Foo,Bar\n1,2\n", "line 1: missing required column(s) 'open'", 1, None),
    (HEAD + ROW1 + "2024-01-02T09:31:00Z,10.5,abc,10.1,10.2,5\n",
     "line 3, column 'High': not a number: 'abc'", 3, "High"),
    (HEAD + ROW2 + ROW1, "line 3, column 'Date': '2024-01-02T09:30:00Z' is earlier than the row before it",
     3, "Date"),
    (HEAD + ROW1 + ROW1, "line 3, column 'Date': bar time '2024-01-02T09:30:00Z' repeats an earlier bar",
     3, "Date"),
    (HEAD + ROW1 + "2024-01-02T09:31:00Z,10.5,10,11,10.2,5\n",
     "line 3, column 'High': high 10.0 is below low 11.0", 3, "High"),
    (HEAD + ROW1 + "2024-01-02T09:31:00Z,12,11,10,10.5,5\n", "line 3, column 'Open': open 12.0 is outside",
     3, "Open"),
    (HEAD + "2024-01-02T09:30:00Z,0,0,0,0,1\n" + ROW2, "line 2, column 'Open': open is 0", 2, "Open"),
    (HEAD + ROW1 + "2024-01-02T09:31:00Z,10.5,10.7,10.1,10.2,5,9\n", "line 3: 7 fields but the header has 6",
     3, None),
    (HEAD + ROW1 + "yesterday,10.5,10.7,10.1,10.2,5\n", "line 3, column 'Date': not a timestamp", 3, "Date"),
    (HEAD, "no bars after the header", 1, None),
])
async def test_a_malformed_ohlcv_file_fails_before_any_tick(tmp_path: Path, text: str, message: str,
                                                            line: int | None, column: str | None) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    feed = ReplayFeed(SymbolTable(4), path, speed="max")
    seen: list[object] = []
    with pytest.raises(ReplayError) as info:
        async for item in feed.stream():
            seen.append(item)
    assert message in str(info.value) and str(path) in str(info.value)
    assert (info.value.path, info.value.line, info.value.column) == (str(path), line, column)
    assert states(seen) == ["connecting", "failed"]  # type: ignore[arg-type]
    assert seen[-1].reason == str(info.value)  # type: ignore[attr-defined]
    assert feed.counters.ticks == 0


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    cases: list[tuple[Path, str]] = [
        (tmp_path / "missing.csv", "no such file"),
        (tmp_path / "notes.txt", "cannot replay this kind of file"),
        (tmp_path / "junk.parquet", "not a readable Parquet file"),
        (tmp_path / "junk.jsonl.gz", "not a gzip file, or corrupt"),
        (tmp_path / "ticks.csv", "missing tick column(s) 'size'"),
        (tmp_path / "allbad.jsonl", "nothing to replay, no good ticks in 2 rows; first:"),
        (tmp_path / "dir.csv", "cannot read"),
    ]
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "junk.jsonl.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    (tmp_path / "ticks.csv").write_text("symbol,ts,price\nA,1,2\n")
    (tmp_path / "allbad.jsonl").write_text('{"symbol": "A"}\nnope\n')
    (tmp_path / "dir.csv").mkdir()
    for path, message in cases:
        with pytest.raises(ReplayError, match=None) as info:
            ReplayFeed(SymbolTable(4), path).load()
        assert message in str(info.value), (path, str(info.value))
        assert info.value.path == str(path)


def test_a_bad_parquet_bar_is_named_by_row(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    df = make_bars(5)
    df.loc[3, "high"] = df.loc[3, "low"] - 1
    df = df.assign(t=pd.to_datetime(df["t"], utc=True)).rename(columns={"t": "timestamp"})
    df.to_parquet(path, index=False)
    with pytest.raises(ReplayError) as info:
        read_replay_file(path)
    assert f"{path} row 4, column 'high': high" in str(info.value)
    assert (info.value.line, info.value.column) == (4, "high")
    pd.DataFrame({"open": [1.0]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(ReplayError, match=r"cols.parquet \(column names\): missing required column"):
        read_replay_file(tmp_path / "cols.parquet")


async def test_bad_rows_of_a_tick_csv_are_counted_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "Symbol,TS,Price,Size,Side,Trade_ID\n"
        "AAPL,1700000000000000000,10.5,1,buy,1\n"
        ",1700000000000000001,10,1,1,2\n"
        "AAPL,notatime,10,1,1,3\n"
        "AAPL,1700000000000000002,-1,1,1,4\n"
        "AAPL,1700000000000000003,10,nan,1,5\n"
        "AAPL,1700000000000000004,10,1,up,6\n"
        "AAPL,1700000000000000005,10,1,-1,x\n"
        "AAPL,1700000000000000006,10,1\n"
        "\n"
        "MSFT,2023-11-14T22:13:20.000000007Z,11,2,SELL,\n"
        "AAPL,1700000000.5,10,1,0,9223372036854775806\n"
    )
    feed = ReplayFeed(SymbolTable(4), path, speed="max")
    with caplog.at_level(logging.WARNING, logger="tickdeck.feeds"):
        statuses, batches = await collect(feed)
    assert states(statuses) == ["connecting", "live", "stopped"]
    got = named(np.concatenate(batches), feed.symbols)
    assert got.to_dict("list") == {
        "symbol": ["AAPL", "MSFT", "AAPL"],
        "ts": [1_700_000_000 * SEC, 1_700_000_000 * SEC + 7, 1_700_000_000 * SEC + SEC // 2],
        "recv": [1_700_000_000 * SEC, 1_700_000_000 * SEC + 7, 1_700_000_000 * SEC + SEC // 2],
        "price": [10.5, 11.0, 10.0], "size": [1.0, 2.0, 1.0], "side": [1, -1, 0],
        "trade_id": [1, -1, 9223372036854775806],
    }
    c = feed.counters
    assert dict(c.bad) == {"bad symbol": 1, "bad ts": 1, "bad price": 1, "bad size": 1, "bad side": 1,
                           "bad trade_id": 1, "wrong number of fields": 1}
    assert (c.messages, c.ticks, c.duplicates, c.gaps, c.out_of_order, c.reconnects) == (10, 3, 0, 0, 0, 0)
    assert c.samples["bad ts"] == f"{path} line 4, column 'ts': 'notatime'"
    assert c.samples["bad side"] == f"{path} line 7, column 'side': 'up'"
    assert "line 9: 4 fields but the header has 6" in c.samples["wrong number of fields"]
    assert len(caplog.records) == 7  # one warning per reason


async def test_bad_lines_of_a_truncated_recording_are_counted(tmp_path: Path) -> None:
    good = [b'{"symbol":"A","ts":1700000000000000000,"recv":1700000000000000005,"price":1.5,"size":2.0,'
            b'"side":1,"trade_id":7}',
            b'{"symbol":"B","ts":1700000000000000001,"price":3,"size":0}']
    text = b"\n".join([good[0], b'{"symbol":', b"", b'{"symbol":"A","ts":"x","price":1,"size":1}',
                       b'{"symbol":"A","ts":1,"price":1,"size":1,"side":2}', good[1],
                       b'{"symbol":"A","ts":1700000000000000002,"pri'])
    z = zlib.compressobj(wbits=31)
    path = tmp_path / "crash.jsonl.gz"
    path.write_bytes(z.compress(text) + z.flush(zlib.Z_SYNC_FLUSH))  # no gzip trailer: a crash
    feed = ReplayFeed(SymbolTable(4), path, speed="max")
    _, batches = await collect(feed)
    got = named(np.concatenate(batches), feed.symbols)
    assert got.to_dict("list") == {
        "symbol": ["A", "B"], "ts": [1_700_000_000 * SEC, 1_700_000_000 * SEC + 1],
        "recv": [1_700_000_000 * SEC + 5, 1_700_000_000 * SEC + 1], "price": [1.5, 3.0], "size": [2.0, 0.0],
        "side": [1, 0], "trade_id": [7, -1],
    }
    c = feed.counters
    assert dict(c.bad) == {"truncated file": 1, "bad json": 2, "bad record": 2}
    assert c.samples["bad json"].startswith(f"{path} line 2: ")
    assert (c.messages, c.ticks) == (6, 2)  # six non-blank lines


async def test_parquet_ticks_with_nulls_and_timestamp_types(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    ts = pa.array([1_700_000_000_000_000, 1_700_000_000_000_001, None, 1_700_000_000_000_003],
                  pa.timestamp("us", tz="UTC"))
    table = pa.table({
        "symbol": pa.array(["X", "Y", "X", None]).dictionary_encode(), "ts": ts,
        "price": pa.array([1.0, None, 2.0, 3.0]), "size": pa.array([1, 2, 3, 4], pa.int32()),
        "side": pa.array([1, None, -1, 0], pa.int8()), "trade_id": pa.array([5, 6, None, 8]),
        "recv": pa.array([None, 1_700_000_000_000_000_100, 5, 6]),
    })
    pq.write_table(table, path)
    feed = ReplayFeed(SymbolTable(4), path, speed="max")
    _, batches = await collect(feed)
    got = named(np.concatenate(batches), feed.symbols)
    assert got.to_dict("list") == {"symbol": ["X"], "ts": [1_700_000_000 * SEC],
                                   "recv": [1_700_000_000 * SEC], "price": [1.0], "size": [1.0], "side": [1],
                                   "trade_id": [5]}
    assert dict(feed.counters.bad) == {"bad price": 1, "bad ts": 1, "bad symbol": 1}
    assert feed.counters.samples["bad price"] == f"{path} row 2, column 'price': None"


# --- the recorder ----------------------------------------------------------------------------------

def test_a_recorder_behind_drops_and_counts_but_never_blocks(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    symbols = SymbolTable(64)
    b = sim_batches(symbols, [100, 100, 100, 40, 10])
    recorder = Recorder(tmp_path / "slow.parquet", symbols, max_pending_ticks=250)
    gate, entered = threading.Event(), threading.Event()
    real = recorder._sink.write

    def slow_write(ticks: np.ndarray, names: tuple[str, ...]) -> None:
        entered.set()
        assert gate.wait(10)
        real(ticks, names)

    recorder._sink.write = slow_write  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="tickdeck.record"):
        recorder(b[0])
        assert entered.wait(10)  # the writer holds batch 0 and is stuck
        recorder(b[1])  # 200 pending: fits
        recorder(b[2])  # 300 > 250: dropped and counted
        recorder(b[3])  # 240: fits
        recorder(make_ticks(0))  # nothing to record
        stats = recorder.stats
        assert (stats.written_ticks, stats.dropped_ticks, stats.dropped_batches, stats.pending_ticks) == (
            0, 100, 1, 240)
        assert recorder.dropped_ticks == 100
        gate.set()
        wait_for(lambda: recorder.stats.written_batches == 3)
        recorder(b[4])  # caught up: accepted again
        stats = recorder.close()
        recorder(b[0])  # after close: counted, not written
    assert (stats.written_ticks, stats.written_batches, stats.dropped_ticks, stats.dropped_batches) == (
        250, 4, 100, 1)
    assert recorder.stats.dropped_ticks == 200
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "100 ticks left out of the recording (the writer is 200 ticks behind)" in messages[0]
    assert "is incomplete: 100 ticks in 1 batches were left out" in messages[1]
    replay = read_replay_file(tmp_path / "slow.parquet")
    assert len(replay.ticks) == 250
    kept = np.concatenate([b[0], b[1], b[3], b[4]])
    np.testing.assert_array_equal(replay.ticks["trade_id"], kept["trade_id"])


def test_a_failing_writer_is_reported_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    symbols = SymbolTable(64)
    b = sim_batches(symbols, [10, 20, 30])
    recorder = Recorder(tmp_path / "fail.jsonl", symbols)
    recorder(b[0])
    wait_for(lambda: recorder.stats.written_batches == 1)

    def broken(ticks: np.ndarray, names: tuple[str, ...]) -> None:
        raise OSError(28, "No space left on device")

    recorder._sink.write = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="tickdeck.record"):
        recorder(b[1])
        wait_for(lambda: recorder.stats.error != "")
        recorder(b[2])
        stats = recorder.close()
    assert stats.error == "OSError: [Errno 28] No space left on device"
    assert (stats.written_ticks, stats.dropped_ticks, stats.dropped_batches) == (10, 50, 2)
    assert len((tmp_path / "fail.jsonl").read_text().splitlines()) == 10
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_jsonl_is_whole_lines_after_every_batch(tmp_path: Path) -> None:
    symbols = SymbolTable(64)
    batches = sim_batches(symbols, [7, 1, 13])
    batches[1]["price"] = np.nan  # a bad tick still makes a whole line (null), skipped on replay
    for name in ("live.jsonl", "live.jsonl.gz"):
        path = tmp_path / name
        recorder = Recorder(path, symbols)
        for k, batch in enumerate(batches, 1):
            recorder(batch)

            def written(r: Recorder = recorder, k: int = k) -> bool:
                return r.stats.written_batches == k

            wait_for(written)
            raw = path.read_bytes()
            text = raw if name.endswith(".jsonl") else zlib.decompressobj(wbits=31).decompress(raw)
            assert text.endswith(b"\n") and text.count(b"\n") == sum(len(b) for b in batches[:k])
        decoded = read_jsonl(path)  # before close: a gzip recording lacks only its trailer
        assert decoded.read == 21 and len(decoded.lines) == 20
        assert [(r, n) for r, n, _ in decoded.bad] == ([("bad record", 1)] if name.endswith(".jsonl") else
                                                       [("truncated file", 1), ("bad record", 1)])
        assert recorder.close().written_ticks == 21
        decoded = read_jsonl(path)
        assert [(r, n) for r, n, _ in decoded.bad] == [("bad record", 1)]
        assert decoded.bad[0][2].startswith(f"{path} line 8: ")  # the NaN tick, written as null
        assert b'"price":null' in (gzip.decompress(path.read_bytes()) if name.endswith(".gz")
                                   else path.read_bytes())
    assert gzip.decompress((tmp_path / "live.jsonl.gz").read_bytes()).count(b"\n") == 21


def test_recorder_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match=r"must end in \.parquet, \.jsonl\.gz or \.jsonl"):
        Recorder(tmp_path / "x.csv", SymbolTable(1))
    for name in ("x.jsonl", "x.parquet"):
        with pytest.raises(RecorderError, match=r"cannot record to .*no/such/dir"):
            Recorder(tmp_path / "no" / "such" / "dir" / name, SymbolTable(1))
    with Recorder(tmp_path / "empty.parquet", SymbolTable(1)) as empty:
        pass
    assert empty.stats.written_ticks == 0
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_recordings_hold_names_not_slots(tmp_path: Path) -> None:
    symbols = SymbolTable(8)
    recorder = Recorder(tmp_path / "n.parquet", symbols)
    ticks = make_ticks(3)
    ticks["ts"] = T0 + np.arange(3)
    ticks["price"] = 1.0
    ticks["sym"] = [symbols.slot("ZED"), symbols.slot("ALPHA"), symbols.slot("ZED")]
    recorder(ticks)
    late = ticks[:1].copy()
    late["sym"] = symbols.slot("NEWCO")  # a symbol added after the first batch
    recorder(late)
    recorder.close()
    table = pq.read_table(tmp_path / "n.parquet")
    assert table.column("symbol").to_pylist() == ["ZED", "ALPHA", "ZED", "NEWCO"]
    assert table.schema.names == ["symbol", *TICK_FIELDS]
    assert TICK_DTYPE.names == ("sym", *TICK_FIELDS)


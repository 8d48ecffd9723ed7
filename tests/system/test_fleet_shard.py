"""Sharded engines on a real NATS server (``nats-server -js`` on 127.0.0.1): the assignment in the
``TICKDECK_SHARDS`` bucket, its presence expiry, and an engine killed while it holds symbols.

The market is the Binance stand-in with a past (``bench.servers.history``: REST klines and aggregate
trades, and the live trade stream, all from one tape), run in the test's event loop so the test sees the
REST requests. Its live trades come only in the first second of each 3 s bar (``EarlyTradeMarket``), so
every engine puts every trade in the same bar unless it stalls for two seconds (an engine closes a bar by
its clock, and a trade that comes after is late: dropped and counted): the bars, and so the indicators,
of two engines are the same by construction, not by luck of timing.

Every wait is on a condition (a key in the bucket, a bar in the stream, a process's end) with a timeout;
the takeover's bound (``shard_ttl + shard_check``, README "Sharding") is asserted as such a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError

from bench.servers.history import Market, names
from engine.bus.connection import connect, settings_from
from engine.bus.shard_keeper import (
    BUCKET,
    ShardKeeper,
    ShardTiming,
    assignment_key,
    presence_key,
)
from engine.bus.subjects import BARS_STREAM, bar_subject
from engine.signals.events import Signal
from tests import waits
from tests.servers.nats import NatsServer

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120.0  # an engine's first start in a fresh checkout compiles kernels; elsewhere seconds
SLACK_S = 5.0  # added to the stated takeover bound: a loaded machine's scheduling, not the design's
BAR_MS = 3_000  # the engines' bar interval
LIVE_MS = (100, 1_000)  # live trades only within this part of a bar (ms from its open)
TTL, RENEW, CHECK = 3.0, 0.5, 0.5
SYMBOLS = names(6)  # rendezvous puts 3 on engine "a" and 3 on "b" (asserted below)

pytestmark = pytest.mark.usefixtures("clean_env")


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> None:
    await waits.until(condition, what, timeout)


async def until_async(read: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    return await waits.until_async(read, what, timeout)


class EarlyTradeMarket(Market):
    """The stand-in market, its live trades only within ``LIVE_MS`` of each bar: delivered (even late by
    two seconds) before any engine's clock closes the bar."""

    async def _make(self) -> None:
        while True:
            await asyncio.sleep(1.0 / self.rate)
            now = time.time_ns() // 1_000_000
            if not LIVE_MS[0] <= now % BAR_MS <= LIVE_MS[1]:
                continue
            symbol = self._rng.choice(self.symbols)
            data = self._trade(symbol, max(now, self.tape.series[symbol].ms[-1]))
            stream = f"{symbol.lower()}@trade"
            self.sent += await self.stream.publish(stream, {"stream": stream, "data": data})


RULES = """
[[rules]]
id = "rsi_mid"
kind = "cross"
a = "rsi_14"
b = 50
direction = "both"

[[rules]]
id = "close_x_ema"
kind = "cross"
a = "close"
b = "ema_20"
direction = "both"

[[rules]]
id = "macd_x_signal"
kind = "cross"
a = "macd_12_26_9"
b = "macd_signal_12_26_9"
direction = "both"
"""


def write_config(path: Path, market: Market) -> Path:
    """3 s bars; history as deep as the tape (``backfill`` 400 > its bars), so every engine's indicators
    start at the tape's first bar; no bar store: the bus and REST are the only history."""
    path.write_text(f"""
[engine]
interval = "3s"

[history]
backfill = 400
store = ""

[feeds.binance]
url = "{market.ws_url}"
rest_url = "{market.rest.url}"
symbols = {json.dumps(SYMBOLS)}

[bus]
shard_ttl = {TTL}
shard_renew = {RENEW}
shard_check = {CHECK}
snapshot_every = 0
{RULES}""", encoding="utf-8")
    return path


class Engine:
    """A headless engine as a process, its stdout (signals) and stderr (log, summary) in files."""

    def __init__(self, name: str, tmp: Path, config: Path, *extra: str) -> None:
        self.name = name
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        self.cmd = [sys.executable, "-m", "console", "--config", str(config), "--headless", "--feed",
                    "binance", "--status-every", "0", "--log-format", "json", *extra]
        self.env = {**os.environ, "TICKDECK_STATE_DIR": str(tmp / name), "TICKDECK_BUS_ENGINE": name}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Engine:
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(*self.cmd, cwd=ROOT, env=self.env, stdout=out,
                                                             stderr=err)
        return self

    async def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(how)
        return await asyncio.wait_for(self.proc.wait(), 30)

    def signals(self) -> list[Signal]:
        return [Signal.from_dict(json.loads(line)) for line in self.out.read_text().splitlines() if line]

    def summary(self) -> dict[str, Any]:
        return dict(json.loads(self.err.read_text().strip().splitlines()[-1]))


class Bus:
    """The test's own client: the bucket's keys and the newest bar of a symbol."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = None

    async def __aenter__(self) -> Bus:
        self.client = await connect(settings_from(self.url))
        self.js = self.client.jetstream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def assignment(self, engine: str, feed: str = "binance", interval: str = "3s") -> dict[str, Any]:
        try:
            kv = await self.js.key_value(BUCKET)
            entry = await kv.get(assignment_key(feed, interval, engine))
        except Exception:  # no bucket or no key yet
            return {}
        return dict(json.loads(entry.value)) if entry.value else {}

    async def last_bar(self, symbol: str) -> int:
        try:
            msg = await self.js.get_last_msg(BARS_STREAM, bar_subject("binance", "3s", symbol))
        except Exception:
            return 0
        return int(json.loads(msg.data)["t"])


def compared(taker: list[Signal], reference: list[Signal], symbols: set[str], since_ns: int) -> int:
    """Assert the taker's live signals on ``symbols`` from ``since_ns`` on are the reference's over the
    same bars: the same (symbol, rule, direction, bar) and the same committed values, exactly. Exactly,
    not to a tolerance: both engines ran the same bars from the tape's first one through the same
    kernels in the same order, so any difference is a bar missed, doubled or changed. Returns how many."""
    mine = {(s.symbol, s.rule, s.direction, s.bar_time): s.values for s in taker
            if s.symbol in symbols and s.bar_time >= since_ns}
    assert mine, "the taker fired no live signal on the symbols it took over"
    first, last = min(k[3] for k in mine), max(k[3] for k in mine)
    theirs = {(s.symbol, s.rule, s.direction, s.bar_time): s.values for s in reference
              if s.symbol in symbols and first <= s.bar_time <= last}
    assert sorted(mine) == sorted(theirs)
    for key, values in mine.items():
        assert values == theirs[key], (key, values, theirs[key])
    return len(mine)


async def test_a_killed_sharded_engine_is_taken_over_and_its_indicators_continue(
        nats_server: NatsServer, tmp_path: Path) -> None:
    market = EarlyTradeMarket(SYMBOLS, bars=240, interval="1s", per_bar=3, rate=20.0)  # 80 bars of 3 s
    await market.start()
    config = write_config(tmp_path / "fleet.toml", market)
    shard = ("--publish", nats_server.url, "--shard", "auto")
    reference = await Engine("r", tmp_path, config).start()  # every symbol, uninterrupted, no bus
    a = await Engine("a", tmp_path, config, *shard).start()
    b = Engine("b", tmp_path, config, *shard)
    try:
        async with Bus(nats_server.url) as bus:
            await until_async(lambda: _holds(bus, "a", len(SYMBOLS)), "engine a to hold every symbol")
            await b.start()  # joins: takes its share from a, warmed up from a's bars on the bus
            split = await until_async(lambda: _holds(bus, "a", 3, engines=["a", "b"]),
                                      "a to give b its share")
            taken = set(split["symbols"])
            assert taken == {"ETHUSDT", "SOLUSDT", "XRPUSDT"}
            await until_async(lambda: _holds(bus, "b", 3, engines=["a", "b"]), "b to take its share")
            others = set(SYMBOLS) - taken  # the giver unsubscribed them: the stand-in streams them to b only
            await until(lambda: _subscribed(market) == sorted(map(streams, (SYMBOLS, taken, others))),
                        "a to unsubscribe b's share")
            joined_ns = time.time_ns()
            await until_async(lambda: _bars_after(bus, taken, joined_ns + 3 * 10**9),
                              "a's live bars after the join")
            requests = len(market.rest.requests)
            a_proc = a.proc
            assert a_proc is not None
            a_proc.kill()  # mid-stream, as a crash: its presence is left to expire
            killed_ns, killed = time.time_ns(), time.monotonic()
            await a_proc.wait()
            bound = ShardTiming(TTL, RENEW, CHECK).takeover_s
            await until_async(lambda: _holds(bus, "b", len(SYMBOLS), engines=["b"]),
                              f"b to take a's symbols over within {bound:g} s (+ {SLACK_S:g} s slack)",
                              timeout=bound + SLACK_S)
            print(f"takeover {time.monotonic() - killed:.2f} s after the kill (bound {bound:g} s)")
            await until(lambda: _subscribed(market) == [streams(SYMBOLS)] * 2, "b to subscribe a's symbols")
            await until_async(lambda: _bars_after(bus, taken, killed_ns + 45 * 10**9),
                              "45 s of b's bars on them")
        assert await b.stop() == 0
        assert await reference.stop() == 0
    finally:
        for engine in (a, b, reference):
            if engine.proc is not None and engine.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    engine.proc.kill()
                await engine.proc.wait()
        await market.stop()
    for engine in (b, reference):  # a trade after its bar closed (a stall of 2 s) changes the bars
        assert engine.summary()["late_ticks"] == 0, f"engine {engine.name} stalled: see the module docstring"
    count = compared(b.signals(), reference.signals(), taken, killed_ns)
    assert count >= 3, count
    took = b.summary()["shard"]
    assert took["taken"] == 3 and took["bus_bars"] > 0 and took["bus_read_failures"] == 0, took
    # the bars before a's last one came from the bus: b asked the REST history only for what followed
    # (nothing at all when the takeover came before another bar closed: the live trades since the
    # forming bar's open, not klines, then join the bus's bars)
    after = [q for path, q, _ in market.rest.requests[requests:] if path == "/api/v3/klines"]
    assert {q["symbol"] for q in after} <= taken
    kill_ms = killed_ns // 1_000_000
    assert all(int(q["startTime"]) >= kill_ms - 3 * BAR_MS for q in after), after


@pytest.mark.soak
async def test_three_sharded_engines_killed_and_restarted_in_turn(nats_server: NatsServer,
                                                                   tmp_path: Path) -> None:
    """The long variant: three engines; each in turn is killed (the other two take its symbols over
    within the bound), then started again (it takes its share back, the others unsubscribe it). Every
    live signal any of them fired equals the uninterrupted reference's, values exactly."""
    market = EarlyTradeMarket(SYMBOLS, bars=240, interval="1s", per_bar=3, rate=20.0)
    await market.start()
    config = write_config(tmp_path / "fleet.toml", market)
    shard = ("--publish", nats_server.url, "--shard", "auto")
    reference = await Engine("r", tmp_path, config).start()
    names3 = ["a", "b", "c"]
    runs: dict[str, Engine] = {}
    done: list[Engine] = []
    bound = ShardTiming(TTL, RENEW, CHECK).takeover_s
    try:
        async with Bus(nats_server.url) as bus:
            for name in names3:
                runs[name] = await Engine(name, tmp_path, config, *shard).start()
                await until_async(lambda n=name: _holds_some(bus, n, names3[:names3.index(n) + 1]),
                                  f"{name} to join")
            for turn, victim in enumerate(names3):
                await _run_a_while(bus)
                proc = runs[victim].proc
                assert proc is not None
                proc.kill()
                await proc.wait()
                done.append(runs.pop(victim))
                rest = sorted(runs)
                for name in rest:
                    await until_async(lambda n=name, r=rest: _holds_some(bus, n, r),
                                      f"{name} to see {victim} gone", timeout=bound + SLACK_S)
                restarted = Engine(victim, tmp_path / f"again-{turn}", config, *shard)
                (tmp_path / f"again-{turn}").mkdir()
                runs[victim] = await restarted.start()
                for name in names3:
                    await until_async(lambda n=name: _holds_some(bus, n, names3),
                                      f"{name} to see {victim} back")
            await _run_a_while(bus)
        for engine in runs.values():
            assert await engine.stop() == 0
        assert await reference.stop() == 0
    finally:
        for engine in [*runs.values(), reference]:
            if engine.proc is not None and engine.proc.returncode is None:
                engine.proc.kill()
                await engine.proc.wait()
        await market.stop()
    truth = {(s.symbol, s.rule, s.direction, s.bar_time): s.values for s in reference.signals()}
    fired = [s for engine in [*done, *runs.values()] for s in engine.signals()]
    last = max(t for *_, t in truth)
    checked = [s for s in fired if s.bar_time <= last]
    assert len(checked) > 20
    for s in checked:
        assert truth.get((s.symbol, s.rule, s.direction, s.bar_time)) == s.values, s


async def _run_a_while(bus: Bus) -> None:
    """Until every symbol has a bar on the bus opened 6 s from now."""
    later = time.time_ns() + 6 * 10**9
    await until_async(lambda: _bars_after(bus, set(SYMBOLS), later), "the fleet to run a while")


async def _holds_some(bus: Bus, engine: str, engines: list[str]) -> bool:
    got = await bus.assignment(engine)
    return bool(got.get("symbols")) and got.get("engines") == sorted(engines)


def streams(symbols: Any) -> list[str]:
    return sorted(f"{s.lower()}@trade" for s in symbols)


def _subscribed(market: Market) -> list[list[str]]:
    """The streams of each connection to the stand-in (R's, then the engines'), sorted."""
    return sorted(sorted(c.subs) for c in market.stream.connections)


async def _holds(bus: Bus, engine: str, n: int, engines: list[str] | None = None) -> dict[str, Any]:
    got = await bus.assignment(engine)
    ok = len(got.get("symbols", ())) == n and (engines is None or got.get("engines") == engines)
    return got if ok else {}


async def _bars_after(bus: Bus, symbols: set[str], t: int) -> bool:
    return all([await bus.last_bar(s) >= t for s in symbols])


# --- the bucket, with keepers in this process ----------------------------------------------------------

class Held:
    """A keeper's symbols as its ``apply`` leaves them."""

    def __init__(self) -> None:
        self.symbols: set[str] = set()
        self.calls: list[tuple[list[str], list[str]]] = []

    async def apply(self, gained: list[str], lost: list[str]) -> None:
        self.calls.append((gained, lost))
        self.symbols = (self.symbols | set(gained)) - set(lost)


def keeper(url: str, name: str, held: Held, symbols: list[str], timing: ShardTiming) -> ShardKeeper:
    return ShardKeeper(settings_from(url, connect_timeout=2.0, max_backoff=0.5), feed="binance",
                       interval="1m", engine=name, symbols=symbols, timing=timing, apply=held.apply)


async def test_presence_expiry_moves_only_the_departed_engines_symbols(nats_server: NatsServer) -> None:
    symbols = [f"S{i:03d}" for i in range(60)]
    timing = ShardTiming(ttl=1.5, renew=0.25, check=0.25)
    helds = {n: Held() for n in ("x", "y", "z")}
    keepers = {n: keeper(nats_server.url, n, helds[n], symbols, timing) for n in helds}
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        for n, k in keepers.items():
            helds[n].symbols = set(await k.open())
            tasks[n] = asyncio.create_task(k.run())
        await until(lambda: all(k.engines == ["x", "y", "z"] for k in keepers.values()),
                    "every engine to see the 3")
        await until(lambda: sum(len(h.symbols) for h in helds.values()) == 60, "the first engines to give up")
        assert set().union(*(h.symbols for h in helds.values())) == set(symbols)
        before = {n: set(h.symbols) for n, h in helds.items()}
        tasks.pop("z").cancel()  # z stops renewing (as a process frozen or killed): its presence expires
        stopped = time.monotonic()
        await until(lambda: keepers["x"].engines == ["x", "y"] == keepers["y"].engines,
                    "z's presence to expire", timeout=timing.takeover_s + SLACK_S)
        assert time.monotonic() - stopped >= timing.ttl - timing.renew  # not before its TTL ran out
        # only z's symbols moved, and all of them
        for n in ("x", "y"):
            assert helds[n].symbols >= before[n]
            assert helds[n].symbols - before[n] <= before["z"]
        assert helds["x"].symbols | helds["y"].symbols == set(symbols)
        assert not helds["x"].symbols & helds["y"].symbols
        async with Bus(nats_server.url) as bus:
            shown = await bus.assignment("x", interval="1m")
            assert shown["engines"] == ["x", "y"] and set(shown["symbols"]) == helds["x"].symbols
        # a graceful close withdraws at once: y takes x's symbols at its next check
        await keepers["x"].close()
        tasks.pop("x").cancel()
        await until(lambda: helds["y"].symbols == set(symbols), "y to take x's symbols",
                    timeout=2 * timing.check + SLACK_S)
    finally:
        for task in tasks.values():
            task.cancel()
        for k in keepers.values():
            await k.close()


async def test_the_bucket_holds_presence_with_the_ttl(nats_server: NatsServer) -> None:
    held = Held()
    k = keeper(nats_server.url, "solo", held, ["A", "B"], ShardTiming(ttl=2.0, renew=0.5, check=0.5))
    assert await k.open() == ["A", "B"]
    try:
        async with Bus(nats_server.url) as bus:
            info = await bus.js.stream_info(f"KV_{BUCKET}")
            assert info.config.max_age == 2.0
            kv = await bus.js.key_value(BUCKET)
            presence = json.loads((await kv.get(presence_key("binance", "1m", "solo"))).value)
            assert presence["engine"] == "solo" and presence["symbols"] == 2
            await k.close()
            with pytest.raises(KeyNotFoundError):  # withdrawn: deleted, not left to expire
                await kv.get(presence_key("binance", "1m", "solo"))
    finally:
        await k.close()


async def test_fixed_shares_subscribe_each_symbol_once(tmp_path: Path) -> None:
    """``--shard 1/2`` and ``--shard 2/2``: no bus needed, each engine subscribes its share only."""
    from engine.bus.shards import Shard, static_share

    market = EarlyTradeMarket(SYMBOLS, bars=30, interval="1s", per_bar=1, rate=5.0)
    await market.start()
    config = write_config(tmp_path / "fleet.toml", market)
    engines = [await Engine(f"k{k}", tmp_path, config, "--shard", f"{k}/2").start() for k in (1, 2)]
    try:
        shares = [static_share(SYMBOLS, Shard(k, 2)) for k in (1, 2)]
        await until(lambda: _subscribed(market) == sorted(map(streams, shares)), "each engine on its share")
        for engine in engines:
            assert await engine.stop() == 0
    finally:
        for engine in engines:
            if engine.proc is not None and engine.proc.returncode is None:
                engine.proc.kill()
                await engine.proc.wait()
        await market.stop()
    assert [e.summary()["shard"] for e in engines] == [{"shard": f"{k}/2", "held": len(shares[k - 1]),
                                                        "symbols": len(SYMBOLS)} for k in (1, 2)]


async def test_the_bars_on_the_bus_read_back_as_history(nats_server: NatsServer) -> None:
    """``read_bars``: one symbol's bars from a time on, the last copy of each, the newest ``limit``; and
    ``BusBars`` over a bar store: the bus's bar wins where both have one."""
    import numpy as np

    from engine.bus.bus_bars import BusBars, read_bars
    from engine.bus.connection import Retention, ensure_streams
    from engine.bus.publisher import bar_frame
    from engine.sinks.frames import dumps
    from engine.ticks import BAR_DTYPE

    minute = 60 * 10**9
    async with Bus(nats_server.url) as bus:
        await ensure_streams(bus.js, Retention())

        async def put(symbol: str, i: int, close: float) -> None:
            frame = bar_frame("binance", "1m", symbol, i * minute, (1.0, 2.0, 0.5, close, 3.0), False)
            await bus.js.publish(bar_subject("binance", "1m", symbol), dumps(frame).encode())

        for i in range(1, 11):
            await put("BRK.B", i, float(i))
            await put("OTHER", i, -1.0)
        await put("BRK.B", 7, 70.0)  # published again later (beyond a duplicate window): the last one counts
        got = await read_bars(bus.js, "binance", "1m", "BRK.B", 3 * minute, limit=5)
        assert got["t"].tolist() == [i * minute for i in range(6, 11)]
        assert got["close"].tolist() == [6.0, 70.0, 8.0, 9.0, 10.0] and set(got["trades"].tolist()) == {-1}
        assert len(await read_bars(bus.js, "binance", "1m", "NONE", 0, limit=5)) == 0

        class Store:
            def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
                rows = np.zeros(4, dtype=BAR_DTYPE)
                rows["t"] = [4 * minute, 5 * minute, 6 * minute, 11 * minute]
                rows["close"] = -5.0
                return rows

        reader = BusBars(asyncio.get_running_loop(), lambda: bus.js, "1m", 5, fallback=Store())
        merged = await asyncio.to_thread(reader.load, "binance", "BRK.B", minute, 3 * minute)
        assert merged["t"].tolist() == [i * minute for i in range(4, 12)]
        assert merged["close"].tolist() == [-5.0, -5.0, 6.0, 70.0, 8.0, 9.0, 10.0, -5.0]
        assert (reader.reads, reader.bars, reader.failed) == (1, 5, 0)
        away = BusBars(asyncio.get_running_loop(), lambda: None, "1m", 5, fallback=Store())
        assert len(await asyncio.to_thread(away.load, "binance", "BRK.B", minute, 0)) == 4


async def test_two_engines_under_one_name_are_told(nats_server: NatsServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    timing = ShardTiming(ttl=2.0, renew=0.5, check=0.5)
    first, second = (keeper(nats_server.url, "twin", Held(), ["A", "B"], timing) for _ in range(2))
    second.started = first.started + 1  # (two processes never start in the same nanosecond)
    try:
        await first.open()
        await second.open()  # its presence replaces the first's under the same key
        with caplog.at_level("WARNING", logger="tickdeck.bus"):
            await first.check()
        assert "another engine runs under the name twin" in caplog.text
    finally:
        await first.close()
        await second.close()


async def test_each_engine_keeps_one_watch_open_over_its_checks(nats_server: NatsServer) -> None:
    """The shard checks read memory: over 20 checks of each of two running keepers, the bucket's stream
    has one consumer per engine, and the server created one per engine (its advisories), not one per
    check (a watch opened and stopped each time, as before, made 21 per engine)."""
    checks = 20
    timing = ShardTiming(ttl=3.0, renew=0.2, check=0.05)
    helds = {n: Held() for n in ("x", "y")}
    keepers = {n: keeper(nats_server.url, n, helds[n], [f"S{i}" for i in range(10)], timing) for n in helds}
    tasks: list[asyncio.Task[None]] = []
    async with Bus(nats_server.url) as bus:
        created: list[str] = []

        async def advisory(msg: Any) -> None:
            created.append(msg.subject)

        await bus.client.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.KV_{BUCKET}.>", cb=advisory)
        await bus.client.flush()
        try:
            done = {n: 0 for n in keepers}
            for n, k in keepers.items():
                helds[n].symbols = set(await k.open())
                k.check = counted(k.check, done, n)  # type: ignore[method-assign]
            tasks = [asyncio.create_task(k.run()) for k in keepers.values()]
            counts = []
            started = time.monotonic()
            for _ in range(4):
                at = dict(done)
                await until(lambda a=at: all(done[n] >= a[n] + checks // 4 for n in keepers),
                            "a quarter of the checks")
                counts.append((await bus.js.stream_info(f"KV_{BUCKET}")).state.consumer_count)
            elapsed = time.monotonic() - started
            assert all(k.engines == ["x", "y"] for k in keepers.values())
            assert sum(len(h.symbols) for h in helds.values()) == 10
            await bus.client.flush()
            per_engine = len(created) / len(keepers)
            print(f"consumer creations on KV_{BUCKET}: {len(created)} for {len(keepers)} engines over "
                  f"{min(done.values())}+ checks each in {elapsed:.1f} s; consumers "
                  f"on the stream: {counts}")
            assert counts == [len(keepers)] * 4
            assert per_engine == 1, created
            assert all(k.reconnects == 0 for k in keepers.values())
        finally:
            for task in tasks:
                task.cancel()
            for k in keepers.values():
                await k.close()


def counted(check: Callable[[], Any], done: dict[str, int], name: str) -> Callable[[], Any]:
    async def counting() -> None:
        await check()
        done[name] += 1
    return counting


async def test_a_lost_bus_keeps_the_share_and_a_new_watch_reads_the_bucket_again(
        nats_server: NatsServer) -> None:
    """The bus stopped: the engine keeps its share and its last view; back, it opens a new watch (one
    consumer more) and reads the live engines from it: y, stopped meanwhile without withdrawing (its
    presence left in the store), is gone once that presence is ``shard_ttl`` old."""
    symbols = [f"S{i:03d}" for i in range(30)]
    timing = ShardTiming(ttl=2.0, renew=0.25, check=0.1)
    helds = {n: Held() for n in ("x", "y")}
    keepers = {n: keeper(nats_server.url, n, helds[n], symbols, timing) for n in helds}
    tasks: dict[str, asyncio.Task[None]] = {}
    x = keepers["x"]
    try:
        for n, k in keepers.items():
            helds[n].symbols = set(await k.open())
            tasks[n] = asyncio.create_task(k.run())
        await until(lambda: all(k.engines == ["x", "y"] for k in keepers.values()), "both to see the two")
        await until(lambda: len(helds["x"].symbols) < len(symbols), "x to give y its share")
        share = set(helds["x"].symbols)
        nats_server.stop()
        await until(lambda: x.state == "reconnecting", "x to notice the bus gone", timeout=10.0)
        tasks.pop("y").cancel()
        await keepers["y"].close()  # (it cannot withdraw: its presence stays in the stopped server's store)
        assert helds["x"].symbols == share and x.engines == ["x", "y"]  # kept while the bus is away
        nats_server.start()
        await until(lambda: x.state == "live" and x.reconnects == 1, "x to reconnect", timeout=30.0)
        await until(lambda: helds["x"].symbols == set(symbols) and x.engines == ["x"],
                    "x to take y's symbols", timeout=timing.takeover_s + SLACK_S)
        async with Bus(nats_server.url) as bus:
            info = await bus.js.stream_info(f"KV_{BUCKET}")
            assert info.state.consumer_count == 1  # x's new watch (the old ones went with the server)
            shown = await bus.assignment("x", interval="1m")
            assert shown["engines"] == ["x"] and len(shown["symbols"]) == len(symbols)
    finally:
        for task in tasks.values():
            task.cancel()
        for k in keepers.values():
            await k.close()

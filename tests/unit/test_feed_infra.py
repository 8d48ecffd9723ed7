"""Feed plumbing shared by every feed: counters, batching, trade sequencing, backoff, error text, and
the runtime's bounded queue (no drops, coalescing when the engine is behind)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from engine.config import ConfigError, load_config
from engine.feeds.backoff import Backoff
from engine.feeds.base import Feed, FeedCounters, FeedStatus
from engine.feeds.batching import TickBatcher, TradeSequencer, valid_trade
from engine.feeds.registry import build_feed
from engine.feeds.ws import Stalled, WsFeed, describe_error
from engine.runtime import Runtime, Update, build_engine
from engine.ticks import SymbolTable, make_ticks

SEC = 1_000_000_000


def test_counters_log_each_reason_once_with_a_sample(caplog: pytest.LogCaptureFixture) -> None:
    c = FeedCounters("x")
    with caplog.at_level(logging.WARNING, logger="tickdeck.feeds"):
        for _ in range(50):
            c.bad_message("malformed json", b'{"e": "trade", "p": ')
        c.bad_message("unknown type", '{"e": "mystery"}')
    assert c.bad == {"malformed json": 50, "unknown type": 1}
    assert c.bad_total == 51
    assert len(caplog.records) == 2 and '{"e": "trade", "p": ' in caplog.records[0].getMessage()


def test_batcher_builds_one_array_per_flush() -> None:
    b = TickBatcher()
    assert b.flush() is None
    b.add(3, 10, 11, 1.5, 2.0, 1, 77)
    b.add(4, 12, 13, 2.5, 0.0)
    out = b.flush()
    assert out is not None and out.tolist() == [(3, 10, 11, 1.5, 2.0, 1, 77), (4, 12, 13, 2.5, 0.0, 0, -1)]
    assert len(b) == 0 and b.flush() is None


@pytest.mark.parametrize(("price", "size", "why"), [
    (1.0, 1.0, ""), (0.0, 1.0, "bad price"), (-1.0, 1.0, "bad price"), (float("nan"), 1.0, "bad price"),
    (float("inf"), 1.0, "bad price"), (1.0, -1.0, "bad size"), (1.0, float("nan"), "bad size"),
])
def test_valid_trade(price: float, size: float, why: str) -> None:
    assert valid_trade(price, size) == why


def test_sequencer_drops_duplicates_and_measures_gaps() -> None:
    s = TradeSequencer()
    assert [s.check(1, i) for i in (5, 6, 6, 4, 9, 10)] == [0, 0, -1, -1, 2, 0]
    assert s.check(2, 100) == 0  # symbols are independent
    s.forget(1)
    assert s.check(1, 3) == 0


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[3:]) > 4.0  # it does grow
    b.reset()
    assert b.next() <= 1.0
    with pytest.raises(ValueError):
        Backoff(base=0)


@pytest.mark.parametrize("name", ["binance", "coinbase"])
def test_the_stale_timeout_of_a_websocket_feed_is_a_config_key(tmp_path: Path, name: str) -> None:
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "none")}
    path = tmp_path / "config.toml"
    path.write_text(f'[feed]\nname = "{name}"\n[feeds.{name}]\nstale_after = 4.5\n')
    var = f"TICKDECK_FEEDS_{name.upper()}_STALE_AFTER"
    for config, expected in ((load_config(overrides={"feed.name": name}, env=env), 15.0),
                             (load_config(str(path), env=env), 4.5),
                             (load_config(str(path), env={**env, var: "7"}), 7.0)):
        feed = build_feed(config, build_engine(config))
        assert isinstance(feed, WsFeed) and feed.stall_s == expected


@pytest.mark.parametrize("name", ["binance", "coinbase", "attach"])
@pytest.mark.parametrize("value", [0.5, 0.0, -1.0, 3600.5, 1e9])
def test_a_stale_timeout_out_of_range_names_the_key_the_file_and_the_range(tmp_path: Path, name: str,
                                                                            value: float) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[feeds.{name}]\nstale_after = {value!r}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={"TICKDECK_CONFIG_DIR": str(tmp_path / "none")})
    assert str(info.value) == (f"feeds.{name}.stale_after in {path} must be between 1.0 and 3600.0, "
                               f"got {value!r}")


def test_errors_say_what_failed_and_where() -> None:
    url = "wss://feed.example:9443/ws"
    assert "DNS" in describe_error(socket.gaierror(-2, "Name or service not known"), url)
    refused = describe_error(ConnectionRefusedError(111, "refused"), url)
    assert refused == "connection refused by feed.example:9443"
    assert "TLS" in describe_error(ssl.SSLError(1, "bad cert"), url)
    assert "no data" in describe_error(Stalled("no data from feed.example for 30 s"), url)


class ScriptedFeed(Feed):
    """Yields the given batches as fast as the consumer takes them, then ends."""

    name = "scripted"

    def __init__(self, symbols: SymbolTable, batches: list[np.ndarray]) -> None:
        super().__init__(symbols)
        self.batches = batches
        self.clock = 0

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "live")
        for b in self.batches:
            self.clock = int(b["ts"].max())
            b["recv"] = time.time_ns()  # received now, as a live feed's would be
            yield b

    def now_ns(self) -> int:
        return self.clock


def _batches(n_batches: int, per: int) -> list[np.ndarray]:
    out = []
    t0 = 1_800_000_000 * SEC
    for k in range(n_batches):
        b = make_ticks(per)
        b["sym"] = np.arange(per) % 3
        b["ts"] = t0 + (k * per + np.arange(per)) * (SEC // 10)
        b["recv"] = b["ts"]
        b["price"] = 100.0 + np.sin(np.arange(per) + k)
        b["size"] = 1.0
        out.append(b)
    return out


def test_slow_engine_coalesces_batches_and_loses_no_tick() -> None:
    config = load_config(overrides={"engine.interval": "1s", "feeds.sim.backfill": 0}, env={})
    engine = build_engine(config)
    for name in ("A", "B", "C"):
        engine.add_symbol(name)
    rt = Runtime(config, engine=engine, feed=ScriptedFeed(engine.symbols, _batches(200, 50)))
    rt.queue_batches = 4
    real = rt.process

    def slow(ticks: np.ndarray | None, now_ns: int | None = None) -> Update:
        time.sleep(0.002)
        return real(ticks, now_ns)

    rt.process = slow  # type: ignore[method-assign]
    statuses: list[FeedStatus] = []
    asyncio.run(rt.run(lambda u: None, statuses.append))
    assert engine.stats.ticks == 200 * 50
    assert rt.metrics.batches == 200
    assert rt.metrics.coalesced > 0
    health = rt.health()
    assert health.coalesced == rt.metrics.coalesced and health.queue_depth_max == rt.metrics.queue_depth_max
    assert health.lag_p99_ms >= health.lag_p50_ms > 0
    assert rt.metrics.queue_depth_max <= 4 + 1
    assert [s.state for s in statuses] == ["live"]
    # 10 ticks a second over 1,000 s, 3 symbols; the feed ended, so the last bars closed too
    assert engine.stats.bars == 3 * (200 * 50 // 10)


def test_a_feed_that_fails_surfaces_in_the_runtime() -> None:
    class Broken(Feed):
        name = "broken"

        async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
            yield FeedStatus(self.name, "connecting")
            raise RuntimeError("cannot go on")

    config = load_config(overrides={"feeds.sim.backfill": 0}, env={})
    engine = build_engine(config)
    rt = Runtime(config, engine=engine, feed=Broken(engine.symbols))
    with pytest.raises(RuntimeError, match="cannot go on"):
        asyncio.run(rt.run(lambda u: None, lambda s: None))

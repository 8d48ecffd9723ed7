"""The headless side of positions: the service reads its feed's positions from the local state file,
its stop alerts reach the sinks with the position's figures, each status line shows the portfolio, and
/metrics (scraped over HTTP) serves tickdeck_portfolio_value and tickdeck_position_pnl{symbol}."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from engine.config import load_config
from engine.feeds.base import Feed, FeedStatus
from engine.headless import Headless, StoppableFeed
from engine.indicators.bank import IndicatorBank
from engine.positions import stored
from engine.positions.book import Lot, PositionBook
from engine.positions.portfolio import Portfolio, portfolio_text, watch
from engine.runtime import Runtime, build_engine
from engine.signals.detector import SignalDetector
from engine.signals.events import Signal
from engine.signals.rules import load_rules
from engine.sinks.base import SinkGroup
from engine.sinks.frames import signal_frame
from engine.sinks.jsonl import JsonlSink
from engine.sinks.metrics import MetricsSink
from engine.sinks.telegram import message
from engine.sinks.webhook import WebhookSink
from engine.ticks import SymbolTable, make_ticks
from tests.data import random_walk
from tests.servers.hooks import WebhookServer

pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)

SEC = 1_000_000_000
T0 = 1_800_000_000 * SEC
RULES = """
[engine]
interval = "1s"

[feeds.sim]
backfill = 0

[[rules]]
id = "stop"
kind = "stop"

[[rules]]
id = "pnl_down"
kind = "pnl"
below = -5
"""


def write_state(path: Path, feed: str, book: PositionBook) -> None:
    """A state file as the console writes it (``console.state``), holding ``book`` for ``feed``."""
    doc = {"version": 1, "feeds": {}, "positions": {feed: stored.encode(book)}}
    path.write_text(json.dumps(doc), encoding="utf-8")


def the_book() -> PositionBook:
    book = PositionBook()
    book.add("AAPL", Lot(Decimal("10"), Decimal("100")))
    book.set_levels("AAPL", stop=Decimal("95"))
    book.add("TS\"LA", Lot(Decimal("-5"), Decimal("200")))  # a quote in a symbol: escaped in /metrics
    return book


class Falling(Feed):
    """AAPL falls from 99 to 90 and stays there (through its stop at 95), the other symbol stays at 190;
    once a status line shows the settled portfolio, scrapes /metrics and asks the service to stop."""

    name = "sim"
    closed_universe = True

    def __init__(self, symbols: SymbolTable) -> None:
        super().__init__(symbols)
        self.slots = [symbols.slot(s) for s in ("AAPL", "TS\"LA")]
        self.service: Headless | None = None
        self.metrics_url = ""
        self.scraped: tuple[int, str, str] | None = None
        self.settled: Callable[[], bool] = lambda: False
        self.k = 0

    def universe(self) -> tuple[str, ...]:
        return ("AAPL", "TS\"LA")

    def now_ns(self) -> int:
        return T0 + self.k * SEC

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "live")
        for self.k in range(1, 5_000):  # bounded: the test fails rather than run for ever
            ticks = make_ticks(2)
            ticks["sym"] = self.slots
            ticks["ts"] = T0 + self.k * SEC
            ticks["recv"] = time.time_ns()
            ticks["price"] = [max(100.0 - self.k, 90.0), 190.0]
            ticks["size"] = 1.0
            yield ticks
            if self.settled():
                url = self.metrics_url + "/metrics"
                async with aiohttp.ClientSession() as session, session.get(url) as r:
                    self.scraped = (r.status, r.headers["Content-Type"], await r.text())
                assert self.service is not None
                self.service.request_stop("SIGTERM")
                await asyncio.Event().wait()
            await asyncio.sleep(0.01)  # a live feed's pace
        raise AssertionError("the status line never showed the settled portfolio")


def test_the_service_alerts_shows_and_serves_the_positions_of_its_feed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state.json"
    write_state(state, "sim", the_book())
    write_state(tmp_path / "other.json", "binance", the_book())
    (tmp_path / "config.toml").write_text(RULES, encoding="utf-8")
    config = load_config(str(tmp_path / "config.toml"), env={})
    engine = build_engine(config)
    inner = Falling(engine.symbols)
    feed = StoppableFeed(inner)
    metrics = MetricsSink("127.0.0.1", 0)
    out = tmp_path / "signals.jsonl"
    portfolio = Portfolio(state, "sim")
    runtime = Runtime(config, engine=engine, feed=feed)
    service = Headless(runtime, feed, SinkGroup([metrics, JsonlSink(out, name="file")]), status_every=0.05,
                       portfolio=portfolio)
    metrics.figures = service.figures
    inner.service = service
    caplog.set_level("INFO", logger="tickdeck")

    def status_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "status"]

    inner.settled = lambda: any(r.__dict__["fields"].get("portfolio_value") == -50.0 for r in status_lines())

    async def go() -> int:
        assert portfolio.refresh() and len(portfolio.book) == 2
        await runtime.set_positions(portfolio.book)
        await service.sinks.start()
        inner.metrics_url = metrics.url
        return await service.run()

    assert asyncio.run(go()) == 0

    # the stop alert, through the sink, with the position's figures
    signals = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["symbol"], s["rule"], s["direction"]) for s in signals] == [
        ("AAPL", "stop", "down"), ("AAPL", "pnl_down", "down")]
    stop = signals[0]
    close = stop["values"]["close"]  # 94, or lower when the engine took several batches at once
    assert 90.0 <= close < 95.0 and stop["values"]["stop"] == 95.0 and stop["price"] == close
    assert stop["position"] == {"quantity": 10.0, "average_cost": 100.0, "unrealized": 10 * (close - 100),
                                "unrealized_pct": close - 100, "stop": 95.0, "target": None}

    # the status line: value 900 - 950, unrealized -100 + 50; no previous close on this feed: day n/a
    line = next(r for r in status_lines() if r.__dict__["fields"].get("portfolio_value") == -50.0)
    fields = line.__dict__["fields"]
    assert (fields["positions"], fields["portfolio_unrealized"], fields["portfolio_day"]) == (2, -50.0, None)
    assert line.getMessage().endswith(", 2 positions worth -50.00, unrealized -50.00, day n/a")

    # /metrics over HTTP
    assert inner.scraped is not None
    status, content_type, text = inner.scraped
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    lines = text.splitlines()
    assert "# TYPE tickdeck_portfolio_value gauge" in lines and "tickdeck_portfolio_value -50.0" in lines
    assert "# TYPE tickdeck_position_pnl gauge" in lines
    assert 'tickdeck_position_pnl{symbol="AAPL"} -100.0' in lines
    assert 'tickdeck_position_pnl{symbol="TS\\"LA"} 50.0' in lines
    assert lines.index("# HELP tickdeck_position_pnl Unrealized P&L of each priced position.") + 1 == \
        lines.index("# TYPE tickdeck_position_pnl gauge")


def test_without_positions_the_status_line_and_metrics_are_as_before(tmp_path: Path) -> None:
    portfolio = Portfolio(tmp_path / "none.json", "sim")
    assert portfolio.refresh() and len(portfolio.book) == 0 and portfolio.warning is None
    assert portfolio_text({"ticks": 3}) == ""
    metrics = MetricsSink("127.0.0.1", 0, figures=lambda: {"state": "live"})
    lines = metrics.render().splitlines()
    assert "# TYPE tickdeck_portfolio_value gauge" in lines
    assert not [x for x in lines if x.startswith(("tickdeck_portfolio_value", "tickdeck_position_pnl"))]


def test_metrics_escape_a_symbols_backslash_quote_and_newline() -> None:
    metrics = MetricsSink("127.0.0.1", 0, figures=lambda: {
        "portfolio_value": 12.5, "position_pnl": {'A\\B"C\nD': -1.25, "ZZ": 2}})
    lines = metrics.render().splitlines()
    assert 'tickdeck_position_pnl{symbol="A\\\\B\\"C\\nD"} -1.25' in lines
    assert 'tickdeck_position_pnl{symbol="ZZ"} 2' in lines and "tickdeck_portfolio_value 12.5" in lines


def test_a_console_edit_reaches_a_running_service_and_a_damaged_file_gives_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state.json"
    portfolio = Portfolio(state, "sim")
    assert portfolio.refresh() and len(portfolio.book) == 0
    assert not portfolio.refresh()  # nothing changed: not read again
    write_state(state, "sim", the_book())
    assert portfolio.refresh() and portfolio.book.levels() == {"AAPL": (Decimal("95"), None)}
    state.write_text('{"version": 1, "feeds": {}, "positions": {"sim": []}}', encoding="utf-8")
    caplog.set_level("WARNING", logger="tickdeck")
    assert portfolio.refresh() and len(portfolio.book) == 0
    assert portfolio.warning is not None and "positions.sim must be an object" in portfolio.warning
    assert any("positions.sim must be an object" in r.getMessage() for r in caplog.records)
    assert state.exists()  # read only: the console sets a damaged file aside, a service does not


# --- the figures through the sinks ---------------------------------------------------------------------

def stop_signal() -> Signal:
    """A stop alert as the detector makes it, for a long of 10 bought at 100 plus a fee of 10."""
    det = SignalDetector(load_rules([({"id": "stop", "kind": "stop"}, "f")]), IndicatorBank(["sma_2"], 1), 1,
                         lambda s: "AAPL", clock=lambda: T0)
    det.set_symbol(0, "AAPL")
    det.set_positions({"AAPL": (101.0, 10.0, 95.0, float("nan"))})
    bars = np.repeat(np.array([[96.0], [94.5]]), 5, axis=1)
    [signal] = det.on_live(np.zeros(2, np.int64), T0 + np.arange(2, dtype=np.int64) * 60 * SEC, bars,
                           np.full((2, det.width), np.nan))
    return signal


POSITION = {"quantity": 10.0, "average_cost": 101.0, "unrealized": -65.0,
            "unrealized_pct": -65.0 / 10.10, "stop": 95.0, "target": None}


def test_the_jsonl_sink_and_the_broadcast_frame_carry_the_positions_figures(tmp_path: Path) -> None:
    signal = stop_signal()
    out = tmp_path / "s.jsonl"

    async def go() -> None:
        sink = JsonlSink(out, name="file")
        sink.start()
        sink.deliver(signal)
        assert await sink.drain(10.0)
        await sink.close()

    asyncio.run(go())
    [line] = out.read_text().splitlines()
    assert json.loads(line)["position"] == pytest.approx(POSITION)
    frame = json.loads(json.dumps(signal_frame(signal)))
    assert frame["type"] == "signal" and frame["position"] == pytest.approx(POSITION)
    assert Signal.from_dict(frame).to_dict() == signal.to_dict()


async def test_the_webhook_payload_carries_the_positions_figures(tmp_path: Path) -> None:
    signal = stop_signal()
    async with WebhookServer() as server:
        sink = WebhookSink(server.url + "/hook", timeout=2.0, retries=1, backoff=0.01, max_backoff=0.05,
                           dead_letter=tmp_path / "dead.jsonl", rng=random.Random(7))
        sink.start()
        assert sink.deliver(signal)
        assert await sink.drain(10.0)
        await sink.close()
    [body] = server.bodies
    assert body["rule"] == "stop" and body["values"] == {"close": 94.5, "stop": 95.0}
    assert body["position"] == pytest.approx(POSITION)


def test_the_telegram_text_shows_the_position() -> None:
    lines = message(stop_signal()).splitlines()
    assert lines[:3] == ["▼ <b>AAPL</b>  stop", "price 94.5", "close 94.5 · stop 95"]
    assert lines[3] == "position 10 @ 101 · P&amp;L -65 (-6.44%)"



# --- end to end: tickdeck --headless over a replay, in a subprocess ------------------------------------

def test_tickdeck_headless_reads_the_state_file_and_alerts_at_every_crossing_of_its_levels(
        tmp_path: Path) -> None:
    bars = random_walk(1500, seed=3)
    rows = list(bars.rows())
    data = tmp_path / "ACME.csv"
    data.write_text("timestamp,open,high,low,close,volume\n"
                    + "".join(",".join(str(x) for x in row) + "\n" for row in rows), encoding="utf-8")
    (tmp_path / "config.toml").write_text('[[rules]]\nid = "stop"\nkind = "stop"\non = "close"\n\n'
                                          '[[rules]]\nid = "target"\nkind = "target"\non = "close"\n',
                                          encoding="utf-8")
    book = PositionBook()
    book.add("ACME", Lot(Decimal("10"), Decimal("100")))
    book.set_levels("ACME", stop=Decimal("95"), target=Decimal("150"))
    (tmp_path / "state").mkdir()
    write_state(tmp_path / "state" / "state.json", "replay", book)
    closes = [row[4] for row in rows]
    down = [i for i in range(1, len(closes)) if closes[i - 1] >= 95 and closes[i] < 95]
    up = [i for i in range(1, len(closes)) if closes[i - 1] <= 150 and closes[i] > 150]
    assert down and up  # the walk crosses both

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TICKDECK_") or k == "TICKDECK_NUMBA_CACHE"}
    env.update(TICKDECK_STATE_DIR=str(tmp_path / "state"), TICKDECK_CONFIG_DIR=str(tmp_path / "none"))
    done = subprocess.run([sys.executable, "-m", "console", "--headless", "--config",
                           str(tmp_path / "config.toml"), "--feed", "replay", "--file", str(data), "--speed",
                           "max"],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    signals = [json.loads(line) for line in done.stdout.splitlines()]
    bar_of = {close: i for i, close in enumerate(closes)}  # (the replay moves bar times onto its grid)
    fired = {(s["rule"], bar_of[s["price"]]) for s in signals}
    assert len(fired) == len(signals)
    assert fired == {("stop", i) for i in down} | {("target", i) for i in up}
    for s in signals:
        assert s["position"]["quantity"] == 10.0 and s["position"]["average_cost"] == 100.0
        assert s["position"]["unrealized"] == pytest.approx(10 * (s["price"] - 100))
    assert "positions: 1 on the replay feed" in done.stderr


async def test_the_watch_hands_each_new_book_to_the_detector_and_survives_a_failure(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    portfolio = Portfolio(state, "sim")
    portfolio.refresh()
    books: list[PositionBook] = []

    async def changed(book: PositionBook) -> None:
        books.append(book)
        if len(books) == 1:
            raise RuntimeError("the engine thread is gone")  # logged; the watch goes on

    task = asyncio.create_task(watch(portfolio, changed, every=0.01))

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the condition never held")

    try:
        write_state(state, "sim", the_book())
        await until(lambda: len(books) == 1)
        one = PositionBook()
        one.add("AAPL", Lot(Decimal("1"), Decimal("1")))
        write_state(state, "sim", one)
        await until(lambda: len(books) == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [b.symbols() for b in books] == [("AAPL", 'TS"LA'), ("AAPL",)]

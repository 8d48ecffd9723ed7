"""The network sinks against servers on 127.0.0.1: the webhook (exact JSON, retries, Retry-After, timeouts,
dead letters for refusals, a server that stays down, a full queue and a close with signals left), Telegram's
``sendMessage`` (its shape and text, ``retry_after``, a token that never shows), the Prometheus endpoint and
the health check, and the ``[[sinks]]`` checks of the three types.

Backoffs are recorded, not slept (``sink.sleep``); nothing asserts on the wall clock."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import errno
import json
import logging
import random
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.config import load_config
from engine.signals.events import Signal
from engine.sinks.base import SignalFilter, SinkGroup, SinkStartError
from engine.sinks.config import (
    MetricsSettings,
    SinkError,
    TelegramSettings,
    WebhookSettings,
    build_sinks,
    load_sinks,
)
from engine.sinks.defaults import DEFAULT_METRICS_PORT, DEFAULT_QUEUE, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S
from engine.sinks.http import HttpSink, retry_after
from engine.sinks.metrics import MetricsSink
from engine.sinks.telegram import TelegramSink, message
from engine.sinks.webhook import WebhookSink, encode_json
from tests.servers.hooks import TelegramServer, WebhookServer, closed_port, parse_html

T0 = 1_800_000_000_000_000_000  # 2027-01-15 08:00 UTC
TOKEN = "123456789:AAHtestTOKENvalue-for_tickdeck"
TOKEN_VAR = "TICKDECK_TELEGRAM_TOKEN"
ROOT = Path(__file__).resolve().parents[2]


def make_signal(i: int, symbol: str = "AAPL", rule: str = "rsi_oversold", direction: str = "up") -> Signal:
    return Signal(symbol=symbol, rule=rule, direction=direction,  # type: ignore[arg-type]
                  bar_time=T0 + i * 60_000_000_000, price=101.0 + i, values={"rsi_14": 29.5, "level": 30.0},
                  detected_ns=T0 + i)


class Sleeps:
    """Stands in for ``asyncio.sleep`` in a sink: records each delay, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def delays(sink: HttpSink) -> list[float]:
    assert isinstance(sink.sleep, Sleeps)
    return sink.sleep.delays


def dead_letters(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def webhook(url: str, tmp_path: Path, **options: Any) -> WebhookSink:
    settings: dict[str, Any] = {"timeout": 2.0, "retries": 3, "backoff": 0.01, "max_backoff": 0.05,
                                "dead_letter": tmp_path / "dead.jsonl", "rng": random.Random(7)}
    settings.update(options)
    sink = WebhookSink(url, **settings)
    sink.sleep = Sleeps()
    return sink


def telegram(url: str, tmp_path: Path, token: str = TOKEN, **options: Any) -> TelegramSink:
    settings: dict[str, Any] = {"timeout": 2.0, "retries": 3, "backoff": 0.01, "max_backoff": 0.05,
                                "dead_letter": tmp_path / "tg.dead.jsonl", "rng": random.Random(7)}
    settings.update(options)
    sink = TelegramSink(42, base_url=url, env={TOKEN_VAR: token}, **settings)
    sink.sleep = Sleeps()
    return sink


async def until(condition: Callable[[], bool], limit: int = 500) -> None:
    """Yield to the loop until ``condition`` holds (a bounded number of short waits)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# --- webhook ----------------------------------------------------------------------------------------

async def test_the_webhook_posts_each_signal_as_its_exact_json(tmp_path: Path) -> None:
    signals = [make_signal(i) for i in range(3)]
    async with WebhookServer() as server:
        sink = webhook(server.url + "/hooks/tickdeck", tmp_path, headers={"Authorization": "Bearer abc"})
        sink.start()
        for s in signals:
            assert sink.deliver(s)
        assert await sink.drain(10.0)
        await sink.close()
    assert [r.body for r in server.received] == [encode_json(s) for s in signals]
    assert server.bodies == [s.to_dict() for s in signals]
    first = server.received[0]
    assert (first.method, first.path) == ("POST", "/hooks/tickdeck")
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Authorization"] == "Bearer abc"
    stats = sink.stats()
    assert (stats["sent"], stats["retried"], stats["dead_lettered"], stats["pending"]) == (3, 0, 0, 0)
    assert stats["endpoint"] == server.url  # the origin only: a webhook's path may be its secret
    assert "hooks/tickdeck" not in json.dumps(stats) and "abc" not in json.dumps(stats)
    assert dead_letters(tmp_path / "dead.jsonl") == []


async def test_a_server_error_is_retried_with_backoff_until_it_succeeds(tmp_path: Path) -> None:
    async with WebhookServer() as server:
        server.answer(500, body=b"oops")
        server.answer(503)
        sink = webhook(server.url, tmp_path)
        sink.start()
        sink.deliver(make_signal(0))
        assert await sink.drain(10.0)
        await sink.close()
    assert len(server.received) == 3 and server.bodies[-1] == make_signal(0).to_dict()
    assert (sink.sent, sink.retried, sink.dead_lettered) == (1, 2, 0)
    assert len(delays(sink)) == 2
    assert all(0.005 <= d <= 0.05 for d in delays(sink))  # within [backoff/2, max_backoff]


async def test_429_waits_as_long_as_retry_after_says(tmp_path: Path) -> None:
    async with WebhookServer() as server:
        server.answer(429, headers={"Retry-After": "7"})
        later = email.utils.formatdate(usegmt=True)  # a date: "now", so no wait at all
        server.answer(503, headers={"Retry-After": later})
        sink = webhook(server.url, tmp_path)
        sink.start()
        sink.deliver(make_signal(0))
        assert await sink.drain(10.0)
        await sink.close()
    assert delays(sink)[0] == 7.0 and delays(sink)[1] <= 1.0
    assert (sink.sent, sink.retried) == (1, 2)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after("7", now) == 7.0
    assert retry_after(" 0 ", now) == 0.0
    assert retry_after("-3", now) == 0.0
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for value in (None, "", "soon", "nan"):
        assert retry_after(value, now) is None


async def test_a_timeout_is_retried(tmp_path: Path) -> None:
    async with WebhookServer() as server:
        server.stall(30.0)
        sink = webhook(server.url, tmp_path, timeout=0.3)
        sink.start()
        sink.deliver(make_signal(0))
        assert await sink.drain(10.0)
        await sink.close()
    assert (sink.sent, sink.dead_lettered) == (1, 0) and sink.retried >= 1  # more on a very slow machine
    assert len(server.received) == sink.retried + 1


async def test_a_client_error_is_not_retried_and_goes_to_the_dead_letter_file(tmp_path: Path) -> None:
    async with WebhookServer() as server:
        server.answer(400, body=b'{"error": "unknown field price"}')
        sink = webhook(server.url, tmp_path)
        sink.start()
        sink.deliver(make_signal(0))
        sink.deliver(make_signal(1))  # the next one goes through as usual
        assert await sink.drain(10.0)
        await sink.close()
    assert len(server.received) == 2 and server.bodies[1] == make_signal(1).to_dict()
    assert (sink.sent, sink.retried, sink.dead_lettered) == (1, 0, 1)
    [dead] = dead_letters(tmp_path / "dead.jsonl")
    assert dead["reason"] == "rejected" and dead["attempts"] == 1 and dead["sink"] == "webhook"
    assert "HTTP 400" in dead["detail"] and "unknown field price" in dead["detail"]
    assert dead["signal"] == make_signal(0).to_dict()
    assert Signal.from_dict(dead["signal"]) == make_signal(0)


async def test_a_server_that_stays_down_loses_nothing(tmp_path: Path) -> None:
    signals = [make_signal(i) for i in range(25)]
    sink = webhook(f"http://127.0.0.1:{closed_port()}/hook", tmp_path, retries=2)
    sink.start()
    for s in signals:
        sink.deliver(s)
    assert await sink.drain(30.0)
    await sink.close()
    dead = dead_letters(tmp_path / "dead.jsonl")
    assert [d["signal"] for d in dead] == [s.to_dict() for s in signals]
    assert {d["reason"] for d in dead} == {"gave_up"} and {d["attempts"] for d in dead} == {3}
    assert "3 attempts failed" in dead[0]["detail"]
    assert (sink.sent, sink.retried, sink.dead_lettered) == (0, 50, 25)
    assert sink.delivered == sink.sent + sink.dead_lettered


async def test_a_full_queue_sends_the_overflow_to_the_dead_letter_file(tmp_path: Path) -> None:
    signals = [make_signal(i) for i in range(6)]
    async with WebhookServer() as server:
        sink = webhook(server.url, tmp_path, queue=2)
        sink.start()
        for s in signals:  # no await in between: the sender takes none before the queue is full
            sink.deliver(s)
        assert await sink.drain(10.0)
        await sink.close()
    assert server.bodies == [s.to_dict() for s in signals[:2]]
    dead = dead_letters(tmp_path / "dead.jsonl")
    assert [d["signal"] for d in dead] == [s.to_dict() for s in signals[2:]]
    assert {d["reason"] for d in dead} == {"queue_full"}
    assert sink.stats()["dead_letter_reasons"] == {"queue_full": 4}


async def test_signals_left_at_close_go_to_the_dead_letter_file(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    async with WebhookServer() as server:
        server.stall(30.0)
        sink = webhook(server.url, tmp_path, timeout=30.0)
        sink.start()
        for i in range(3):
            sink.deliver(make_signal(i))
        await until(lambda: len(server.received) == 1)
        assert not await sink.drain(0.05)
        await sink.close(timeout=0.3)
        server.release()
    dead = dead_letters(tmp_path / "dead.jsonl")
    assert [d["signal"] for d in dead] == [make_signal(i).to_dict() for i in range(3)]
    assert {d["reason"] for d in dead} == {"shutdown"}
    assert "in flight" in dead[0]["detail"] and "queued" in dead[1]["detail"]
    assert "3 signals were not delivered" in caplog.text
    sink.deliver(make_signal(9))  # after close: counted, not sent
    assert sink.stats()["dropped"] == 1


class StalledWrites:
    """Stands in for a dead-letter file's ``write_line``: each write waits for ``gate`` (set by the test)
    and says on ``entered`` that the writer is inside one."""

    def __init__(self, write: Callable[[bytes], bool]) -> None:
        self.write = write
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, line: bytes) -> bool:
        self.entered.set()
        assert self.gate.wait(10.0), "the test never let the write through"
        return self.write(line)

    def stall(self) -> None:
        self.gate.clear()
        self.entered.clear()


async def test_dead_letters_beyond_the_writers_queue_are_dropped_counted_and_logged_each_time(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickdeck.sinks")
    async with WebhookServer() as server:
        server.stall(30.0)
        sink = webhook(server.url, tmp_path, queue=1, timeout=30.0)
        sink.dead_letter.max_queue = 2
        writes = StalledWrites(sink.dead_letter.write_line)
        sink.dead_letter.write_line = writes  # type: ignore[method-assign]
        sink.start()
        sink.deliver(make_signal(0))
        await until(lambda: len(server.received) == 1)  # in flight, held by the server
        sink.deliver(make_signal(1))  # waits in the sink's queue of 1
        sink.deliver(make_signal(2))  # queue_full: a dead letter, taken by the writer, which stalls
        await until(writes.entered.is_set)
        for i in range(3, 7):  # 3 and 4 wait for the writer; 5 and 6 find its queue full
            sink.deliver(make_signal(i))
        stats = sink.stats()
        assert (stats["dropped"], stats["dead_lettered"], stats["dead_letter_reasons"]) == (
            2, 3, {"queue_full": 5})
        behind = [r for r in caplog.records if "lines behind" in r.getMessage()]
        assert len(behind) == 1 and behind[0].levelno == logging.ERROR
        writes.gate.set()
        await until(lambda: sink.dead_letter.stats()["pending"] == 0)
        writes.stall()
        sink.deliver(make_signal(7))  # room again: the stretch of drops ends, and is summed up
        assert "keeping up again; 2 undelivered signals were dropped meanwhile (2 in all)" in caplog.text
        await until(writes.entered.is_set)
        for i in range(8, 11):  # a second stretch: 8 and 9 wait, 10 is dropped, and it is logged again
            sink.deliver(make_signal(i))
        assert len([r for r in caplog.records if "lines behind" in r.getMessage()]) == 2
        writes.gate.set()
        await until(lambda: sink.dead_letter.stats()["pending"] == 0)
        sink.deliver(make_signal(11))
        assert "1 undelivered signals were dropped meanwhile (3 in all)" in caplog.text
        await sink.close(timeout=0.3)  # 0 (in flight) and 1 (queued) become dead letters too
        server.release()
    assert sink.stats()["dropped"] == 3
    dead = dead_letters(tmp_path / "dead.jsonl")
    assert sorted(Signal.from_dict(d["signal"]).price - 101.0 for d in dead) == [0, 1, 2, 3, 4, 7, 8, 9, 11]


async def test_a_dead_letter_that_cannot_be_written_is_counted_in_the_sinks_stats(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = webhook(f"http://127.0.0.1:{closed_port()}/hook", tmp_path, retries=0)
    write = sink.dead_letter.write_line

    def disk_full_once(line: bytes) -> bool:
        sink.dead_letter.write_line = write  # type: ignore[method-assign]
        raise OSError(errno.ENOSPC, "No space left on device")

    sink.dead_letter.write_line = disk_full_once  # type: ignore[method-assign]
    sink.start()
    for i in range(2):
        sink.deliver(make_signal(i))
    assert await sink.drain(10.0)
    await sink.close()
    stats = sink.stats()
    assert (stats["dead_lettered"], stats["dead_letter_errors"], stats["dropped"]) == (2, 1, 0)
    assert [d["signal"] for d in dead_letters(tmp_path / "dead.jsonl")] == [make_signal(1).to_dict()]
    assert "No space left on device" in caplog.text


async def test_the_filter_decides_what_the_webhook_sends(tmp_path: Path) -> None:
    async with WebhookServer() as server:
        sink = webhook(server.url, tmp_path)
        sink.filter = SignalFilter(symbols=frozenset({"AAPL"}), directions=frozenset({"up"}))
        sink.start()
        for s in (make_signal(0), make_signal(1, symbol="MSFT"), make_signal(2, direction="down")):
            sink.deliver(s)
        assert await sink.drain(10.0)
        await sink.close()
    assert server.bodies == [make_signal(0).to_dict()]
    assert (sink.delivered, sink.filtered, sink.sent) == (1, 2, 1)


# --- telegram ---------------------------------------------------------------------------------------

async def test_telegram_gets_send_message_with_a_readable_text(tmp_path: Path) -> None:
    up = make_signal(0)
    down = make_signal(1, symbol="A<B&C", rule="macd_cross", direction="down")
    async with TelegramServer(TOKEN, chats=(42,)) as server:
        sink = telegram(server.url, tmp_path)
        sink.start()
        sink.deliver(up)
        sink.deliver(down)
        assert await sink.drain(10.0)
        await sink.close()
    assert (sink.sent, sink.dead_lettered) == (2, 0)
    first = server.requests[0]
    assert (first.method, first.path) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert first.headers["Content-Type"].startswith("application/json")
    body = first.json()
    assert body == {"chat_id": 42, "text": message(up), "parse_mode": "HTML",
                    "disable_web_page_preview": True}
    text, entities, error = parse_html(body["text"])
    assert not error
    assert text.splitlines() == ["▲ AAPL  rsi_oversold", "price 101", "rsi_14 29.5 · level 30",
                                 "bar 2027-01-15 08:00 UTC"]
    assert {"offset": 2, "length": 4, "type": "bold"} in entities
    down_text, _, error = parse_html(server.messages[1]["text"])
    assert not error and down_text.splitlines()[0] == "▼ A<B&C  macd_cross"
    assert "bar 2027-01-15 08:01 UTC" in down_text


def test_message_numbers_stay_plain_and_html_is_escaped() -> None:
    signal = Signal(symbol="PEPE<USDT>", rule="macd&cross", direction="down", bar_time=T0 + 30_000_000_000,
                    price=0.00001234, values={"macd": -0.000321, "hist": float("nan"), "level": 64123.456789},
                    detected_ns=T0)
    text = message(signal)
    assert "PEPE&lt;USDT&gt;" in text and "macd&amp;cross" in text
    plain, _, error = parse_html(text)
    assert not error
    assert plain.splitlines() == ["▼ PEPE<USDT>  macd&cross", "price 0.00001234",
                                  "macd -0.000321 · hist n/a · level 64123.5", "bar 2027-01-15 08:00:30 UTC"]
    # a warm-up signal reaches Telegram only when the sink opts in, and then it says it is history
    past, _, error = parse_html(message(dataclasses.replace(signal, warmup=True)))
    assert not error and past.splitlines()[-1] == "bar 2027-01-15 08:00:30 UTC · history (warm-up)"


async def test_telegram_flood_control_waits_retry_after(tmp_path: Path) -> None:
    async with TelegramServer(TOKEN) as server:
        server.rate_limit(3)
        sink = telegram(server.url, tmp_path)
        sink.start()
        sink.deliver(make_signal(0))
        assert await sink.drain(10.0)
        await sink.close()
    assert delays(sink) == [3.0]
    assert len(server.requests) == 2 and len(server.messages) == 1
    assert (sink.sent, sink.retried) == (1, 1)


async def test_a_refused_chat_goes_to_the_dead_letter_file_with_telegrams_words(tmp_path: Path) -> None:
    async with TelegramServer(TOKEN, chats=(7,)) as server:
        sink = telegram(server.url, tmp_path)
        sink.start()
        sink.deliver(make_signal(0))
        assert await sink.drain(10.0)
        await sink.close()
    [dead] = dead_letters(tmp_path / "tg.dead.jsonl")
    assert dead["reason"] == "rejected" and dead["detail"] == "Telegram 400: Bad Request: chat not found"
    assert sink.retried == 0


async def test_the_token_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "987654321:AAWrongTokenValue_xyz"
    async with TelegramServer(TOKEN) as server:
        server.rate_limit(1)
        server.fail(500, "Internal Server Error")
        good = telegram(server.url, tmp_path / "good", retries=3)
        refused = telegram(server.url, tmp_path / "refused", token=wrong)
        down = telegram(f"http://127.0.0.1:{closed_port()}", tmp_path / "down", token=wrong, retries=1)
        sinks = [good, refused, down]
        for path in ("good", "refused", "down"):
            (tmp_path / path).mkdir()
        for sink in sinks:
            sink.start()
            sink.deliver(make_signal(0))
        for sink in sinks:
            assert await sink.drain(10.0)
            await sink.close()
    assert good.sent == 1 and refused.reasons == {"rejected": 1} and down.reasons == {"gave_up": 1}
    assert "refused the bot token in $TICKDECK_TELEGRAM_TOKEN" in caplog.text
    shown = [caplog.text, *(repr(s) for s in sinks), *(json.dumps(s.stats()) for s in sinks),
             *(p.read_text() for p in tmp_path.rglob("*.jsonl"))]
    for text in shown:
        for secret in (TOKEN, wrong, "AAHtestTOKENvalue", "AAWrongTokenValue"):
            assert secret not in text
    dead = dead_letters(tmp_path / "down" / "tg.dead.jsonl")[0]
    assert "127.0.0.1" in dead["detail"]  # the failure is described, with the token left out


async def test_a_missing_or_malformed_token_is_a_start_error_naming_the_variable(tmp_path: Path) -> None:
    sink = TelegramSink(42, env={}, dead_letter=tmp_path / "dead.jsonl")
    with pytest.raises(SinkStartError, match=r"TICKDECK_TELEGRAM_TOKEN \(the Telegram bot token\) is not"):
        sink.start()
    assert isinstance(SinkStartError("x"), OSError)  # headless reports an OSError at start as exit 2
    assert not (tmp_path / "dead.jsonl").exists()  # nothing was opened
    secret = "s3cret token value"
    odd = TelegramSink(42, token_env="MY_BOT", env={"MY_BOT": secret}, dead_letter=tmp_path / "dead.jsonl")
    with pytest.raises(SinkStartError) as error:
        odd.start()
    assert "MY_BOT does not hold a bot token" in str(error.value) and secret not in str(error.value)


# --- metrics ----------------------------------------------------------------------------------------

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def parse_prometheus(text: str) -> tuple[dict[str, str], list[Sample]]:
    """A strict reader of the text exposition format: (TYPE of each family, samples). Every sample's
    family must have its HELP and TYPE lines first, and a family's samples must be together."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: list[Sample] = []
    done: set[str] = set()
    current = ""
    sample = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"a second HELP for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in types and name in helps
            types[name] = kind
            if current:
                done.add(current)
            current = name
            continue
        match = sample.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name == current and name not in done, f"{name} outside its family"
        pairs: list[tuple[str, str]] = []
        rest = labels or ""
        while rest:
            m = label.match(rest)
            assert m, f"bad labels in {line!r}"
            pairs.append((m.group(1), m.group(2)))
            rest = rest[m.end():]
        samples.append((name, tuple(pairs), float(value)))
    return types, samples


FIGURES: dict[str, Any] = {"feed": "binance", "state": "live", "ticks": 1234, "bars": 56, "bad_messages": 3,
                           "reconnects": 2, "gaps": 17, "duplicates": 5, "refills": 4, "lag_p50_ms": 1.5,
                           "lag_p99_ms": 12.25, "queue_depth": 4, "portfolio_value": -50.0,
                           "position_pnl": {"ETHUSDT": 50.0, "BTCUSDT": -100.25}}


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    figures = dict(FIGURES)
    sink = MetricsSink("127.0.0.1", 0, figures=lambda: figures)
    sink.start()
    try:
        for s in (make_signal(0), make_signal(1), make_signal(2, rule="macd_cross", direction="down")):
            sink.deliver(s)
        status, ctype, text = await get(sink.url + "/metrics")
        port = sink.bound_port
    finally:
        await sink.close()
    # the summary reads the figures after close: the socket is gone, the port it had is still known
    assert sink.stats()["address"] == f"127.0.0.1:{port}" and port != 0
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    types, samples = parse_prometheus(text)
    assert types == {"tickdeck_ticks_total": "counter", "tickdeck_bars_total": "counter",
                     "tickdeck_signals_total": "counter", "tickdeck_bad_messages_total": "counter",
                     "tickdeck_reconnects_total": "counter", "tickdeck_gaps_total": "counter",
                     "tickdeck_duplicates_total": "counter", "tickdeck_refills_total": "counter",
                     "tickdeck_lag_seconds": "gauge",
                     "tickdeck_queue_depth": "gauge", "tickdeck_rss_bytes": "gauge", "tickdeck_up": "gauge",
                     "tickdeck_portfolio_value": "gauge", "tickdeck_position_pnl": "gauge"}
    values = {(name, labels): value for name, labels, value in samples}
    rss = values.pop(("tickdeck_rss_bytes", ()))
    assert rss > 1_000_000  # measured: this process
    assert values == {
        ("tickdeck_ticks_total", ()): 1234, ("tickdeck_bars_total", ()): 56,
        ("tickdeck_signals_total", (("rule", "macd_cross"), ("direction", "down"))): 1,
        ("tickdeck_signals_total", (("rule", "rsi_oversold"), ("direction", "up"))): 2,
        ("tickdeck_bad_messages_total", ()): 3, ("tickdeck_reconnects_total", ()): 2,
        ("tickdeck_gaps_total", ()): 17, ("tickdeck_duplicates_total", ()): 5,
        ("tickdeck_refills_total", ()): 4,
        ("tickdeck_lag_seconds", (("quantile", "0.5"),)): 0.0015,
        ("tickdeck_lag_seconds", (("quantile", "0.99"),)): 0.01225,
        ("tickdeck_queue_depth", ()): 4, ("tickdeck_up", ()): 1, ("tickdeck_portfolio_value", ()): -50.0,
        ("tickdeck_position_pnl", (("symbol", "BTCUSDT"),)): -100.25,
        ("tickdeck_position_pnl", (("symbol", "ETHUSDT"),)): 50.0,
    }


def test_label_values_are_escaped() -> None:
    sink = MetricsSink(figures=lambda: {"rss_bytes": 5})
    sink.deliver(make_signal(0, rule='odd"rule\\x\n'))
    _, samples = parse_prometheus(sink.render())
    assert ("tickdeck_signals_total", (("rule", 'odd\\"rule\\\\x\\n'), ("direction", "up")), 1.0) in samples
    assert ("tickdeck_rss_bytes", (), 5.0) in samples
    assert ("tickdeck_up", (), 0.0) in samples and not any(s[0] == "tickdeck_ticks_total" for s in samples)


async def test_health_is_200_while_the_feed_is_live_and_503_otherwise(
        caplog: pytest.LogCaptureFixture) -> None:
    figures: dict[str, Any] = dict(FIGURES)
    sink = MetricsSink("127.0.0.1", 0)
    sink.start()
    try:
        status, _, body = await get(sink.url + "/health")
        assert (status, json.loads(body)) == (503, {"status": "starting", "feed": None, "state": None})
        sink.figures = lambda: figures
        status, ctype, body = await get(sink.url + "/health")
        assert ctype.startswith("application/json")
        assert (status, json.loads(body)) == (200, {"status": "ok", "feed": "binance", "state": "live"})
        figures["state"] = "reconnecting"
        status, _, body = await get(sink.url + "/health")
        assert (status, json.loads(body)) == (503, {"status": "unavailable", "feed": "binance",
                                                    "state": "reconnecting"})

        def broken() -> dict[str, Any]:
            raise RuntimeError("no runtime")

        sink.figures = broken
        status, _, body = await get(sink.url + "/health")
        assert (status, json.loads(body)["status"]) == (503, "error")
        status, _, text = await get(sink.url + "/metrics")
        assert status == 200 and "\ntickdeck_up 0\n" in text
    finally:
        await sink.close()
    assert sink.figure_errors == 2 and caplog.text.count("cannot read the runtime's figures") == 1


async def test_a_port_in_use_is_a_start_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sink = MetricsSink("127.0.0.1", port)
        with pytest.raises(OSError) as error:
            sink.start()
        assert f"cannot listen on 127.0.0.1:{port}" in str(error.value.strerror)
        await sink.close()


# --- config -----------------------------------------------------------------------------------------

def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sinks_of(path: Path) -> list[tuple[dict[str, Any], str]]:
    config = load_config(str(path), env={"TICKDECK_CONFIG_DIR": str(path.parent / "none")})
    return [(dict(t), f) for t, f in config.sinks]


ENV = {TOKEN_VAR: TOKEN}


async def test_the_three_tables_load_with_their_defaults_and_build_their_sinks(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[[sinks]]\ntype = "webhook"\nurl = "https://hooks.example.com/x/s3cr3t"\n'
                                 'headers = { Authorization = "Bearer k" }\n\n'
                                 '[[sinks]]\ntype = "telegram"\nname = "tg"\nchat_id = "@tickdeck_alerts"\n'
                                 'timeout = 2.5\nretries = 0\nqueue = 10\ndead_letter = "dl/tg.jsonl"\n\n'
                                 '[[sinks]]\ntype = "metrics"\nport = 0\n')
    hook, tg, metrics = load_sinks(sinks_of(path), env=ENV)
    assert isinstance(hook.settings, WebhookSettings)
    assert hook.settings.headers == (("Authorization", "Bearer k"),) and "Bearer" not in repr(hook)
    d = hook.settings.delivery
    assert (d.timeout, d.retries, d.queue) == (DEFAULT_TIMEOUT_S, DEFAULT_RETRIES, DEFAULT_QUEUE)
    assert d.dead_letter == tmp_path / "webhook-1.dead.jsonl"
    assert isinstance(tg.settings, TelegramSettings) and tg.settings.chat_id == "@tickdeck_alerts"
    assert tg.settings.token_env == TOKEN_VAR and TOKEN not in repr(tg)
    t = tg.settings.delivery
    assert (t.timeout, t.retries, t.queue, t.dead_letter) == (2.5, 0, 10, tmp_path / "dl" / "tg.jsonl")
    assert metrics.settings == MetricsSettings("127.0.0.1", 0)
    built = build_sinks([hook, tg, metrics], env=ENV)
    assert [type(s) for s in built] == [WebhookSink, TelegramSink, MetricsSink]
    assert isinstance(built[1], TelegramSink) and built[1].timeout == 2.5 and built[1].retries == 0
    [default] = load_sinks([({"type": "metrics"}, path)])
    assert default.settings == MetricsSettings("127.0.0.1", DEFAULT_METRICS_PORT)
    (tmp_path / "dl").mkdir()
    group = SinkGroup(built)  # as the headless service runs them
    await group.start()
    try:
        assert isinstance(built[2], MetricsSink) and built[2].bound_port > 0
    finally:
        await group.close(1.0)


def test_checking_the_tables_imports_no_network_library(tmp_path: Path) -> None:
    code = ("import json, sys\n"
            "from engine.sinks.config import load_sinks\n"
            "load_sinks([({'type': 'webhook', 'url': 'https://h.example.com'}, 'x.toml'),\n"
            "            ({'type': 'metrics'}, 'x.toml')])\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                          timeout=120)
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("aiohttp", "psutil", "numpy")]


@pytest.mark.parametrize(("body", "sink", "key", "says"), [
    ('type = "webhook"', "sink #2 (webhook)", "url", "required"),
    ('type = "webhook"\nurl = "ftp://example.com/x"', "sink #2 (webhook)", "url",
     "an http:// or https:// URL"),
    ('type = "webhook"\nurl = "https://h.example.com"\ntimeout = 0', "sink #2 (webhook)", "timeout",
     "number of seconds > 0"),
    ('type = "webhook"\nurl = "https://h.example.com"\nretries = -1', "sink #2 (webhook)", "retries",
     "from 0 to 100"),
    ('type = "webhook"\nurl = "https://h.example.com"\nqueue = 0', "sink #2 (webhook)", "queue", ">= 1"),
    ('type = "webhook"\nurl = "https://h.example.com"\nheaders = "x"', "sink #2 (webhook)", "headers",
     "table of header names"),
    ('type = "webhook"\nname = "hook"\nurl = "https://h.example.com"\nheaders = { "a b" = "x" }',
     "sink #2 'hook' (webhook)", "headers", "not an HTTP header name"),
    ('type = "webhook"\nurl = "https://h.example.com"\nbackoff = 2\nmax_backoff = 1', "sink #2 (webhook)",
     "max_backoff", "at least backoff"),
    ('type = "webhook"\nurl = "https://h.example.com"\ndead_letter = ""', "sink #2 (webhook)", "dead_letter",
     "file path"),
    ('type = "webhook"\nurl = "https://h.example.com"\nretry = 3', "sink #2 (webhook)", "retry",
     "allowed: type, name, enabled, symbols, rules, directions, warmup, url, headers, timeout, retries"),
    ('type = "webhook"\nurl = "https://h.example.com"\ndead_letter = "b"', "sink #2 (webhook)", "dead_letter",
     "also written by sink #1 (jsonl)"),
    ('type = "telegram"', "sink #2 (telegram)", "chat_id", "required"),
    ('type = "telegram"\nchat_id = 1.5', "sink #2 (telegram)", "chat_id", "a chat id (an integer)"),
    ('type = "telegram"\nchat_id = "my chat"', "sink #2 (telegram)", "chat_id", "\"@channelname\""),
    ('type = "telegram"\nchat_id = 1\ntoken_env = "1BAD"', "sink #2 (telegram)", "token_env",
     "name of an environment variable"),
    ('type = "telegram"\nchat_id = 1\ntoken_env = "NO_SUCH_TOKEN"', "sink #2 (telegram)", "token_env",
     "the environment variable NO_SUCH_TOKEN (the Telegram bot token) is not set"),
    ('type = "telegram"\nchat_id = 1\nbase_url = "https://api.telegram.org/bot1"', "sink #2 (telegram)",
     "base_url", "with no path"),
    ('type = "telegram"\nchat_id = 1\ntoken = "1:abc"', "sink #2 (telegram)", "token", "token_env"),
    ('type = "metrics"\nport = 70000', "sink #2 (metrics)", "port", "from 0 to 65535"),
    ('type = "metrics"\nhost = ""', "sink #2 (metrics)", "host", "an address or host name"),
    ('type = "metrics"\npath = "/m"', "sink #2 (metrics)", "path", "allowed: type, name, enabled"),
    ('type = "websocket"\nfps = 0', "sink #2 (websocket)", "fps", "> 0"),
])
def test_config_errors_name_the_sink_the_file_and_the_key(tmp_path: Path, body: str, sink: str, key: str,
                                                          says: str) -> None:
    path = config_file(tmp_path, f'[[sinks]]\ntype = "jsonl"\npath = "b"\n\n[[sinks]]\n{body}\n')
    with pytest.raises(SinkError) as error:
        load_sinks(sinks_of(path), env=ENV)
    text = str(error.value)
    assert text.startswith(f"{path}: {sink}, key {key!r}: "), text
    assert says in text
    assert (error.value.file, error.value.key) == (str(path), key)


def test_config_errors_never_show_a_secret(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[[sinks]]\ntype = "webhook"\nurl = "htps://hooks.example.com/T0/s3cr3t"\n')
    with pytest.raises(SinkError, match=r"got 'htps://hooks\.example\.com/\.\.\.'") as error:
        load_sinks(sinks_of(path))
    assert "s3cr3t" not in str(error.value)
    path = config_file(tmp_path, '[[sinks]]\ntype = "telegram"\nchat_id = 5\n')
    value = "my s3cr3t token"
    with pytest.raises(SinkError, match=r"key 'token_env': the environment variable TICKDECK_TELEGRAM_TOKEN "
                                        r"does not hold a bot token") as error:
        load_sinks(sinks_of(path), env={TOKEN_VAR: value})
    assert value not in str(error.value)
    # a disabled telegram sink needs no token
    path = config_file(tmp_path, '[[sinks]]\ntype = "telegram"\nchat_id = 5\nenabled = false\n')
    assert load_sinks(sinks_of(path), env={})[0].enabled is False


def test_two_sinks_may_not_share_a_dead_letter_file_or_a_port(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[[sinks]]\ntype = "webhook"\nname = "a"\nurl = "http://h.example.com"\n'
                                 'dead_letter = "dead.jsonl"\n\n[[sinks]]\ntype = "telegram"\nchat_id = 1\n'
                                 'dead_letter = "dead.jsonl"\n')
    with pytest.raises(SinkError, match=r"sink #2 \(telegram\), key 'dead_letter': .*dead\.jsonl is also "
                                        r"written by sink #1 'a' \(webhook\)"):
        load_sinks(sinks_of(path), env=ENV)
    path = config_file(tmp_path, '[[sinks]]\ntype = "metrics"\n\n[[sinks]]\ntype = "metrics"\nname = "m2"\n')
    with pytest.raises(SinkError, match=r"sink #2 'm2' \(metrics\), key 'port': 127\.0\.0\.1:9464 is also"):
        load_sinks(sinks_of(path))


async def test_headless_wires_its_figures_into_the_metrics_sink(tmp_path: Path) -> None:
    """The service's own figures reach /metrics and /health (the wiring in engine/headless.py)."""
    import aiohttp

    from engine.config import load_config
    from engine.feeds.base import FeedStatus
    from engine.headless import Headless, StoppableFeed
    from engine.runtime import Runtime
    from engine.sinks.base import SinkGroup

    config = load_config(overrides={"feeds.sim.backfill": 0}, env={})
    runtime = Runtime(config)
    feed = StoppableFeed(runtime.feed)
    sink = MetricsSink("127.0.0.1", 0)
    service = Headless(runtime, feed, SinkGroup([sink]))
    sink.figures = service.figures
    sink.start()
    try:
        base = sink.url
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/health") as r:
                assert r.status == 503
            service.on_status(FeedStatus("sim", "live"))
            async with http.get(base + "/health") as r:
                assert r.status == 200 and (await r.json())["feed"] == "sim"
            async with http.get(base + "/metrics") as r:
                text = await r.text()
        assert "tickdeck_up 1" in text and "tickdeck_rss_bytes" in text
    finally:
        await sink.close()

"""PROTOCOL.md against the code: every frame type, client message, field, per-sink figure and example it
shows is the code's, so neither can change without the other.

The document's conventions, which these tests read: a ``## `` section per subject; under it a ``### `` per
frame type, message or sink type (named in backquotes); a table whose first column names the fields in
order; a fenced ``json`` example.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.signals.events import Signal
from engine.sinks import broadcast, clients, frames
from engine.sinks.base import Sink
from engine.sinks.broadcast import BroadcastSink
from engine.sinks.config import SINK_TYPES
from engine.sinks.jsonl import JsonlSink, JsonlStreamSink
from engine.sinks.metrics import MetricsSink
from engine.sinks.telegram import TelegramSink, message
from engine.sinks.webhook import WebhookSink

DOC = (Path(__file__).resolve().parents[2] / "PROTOCOL.md").read_text(encoding="utf-8")


def sections(text: str, level: int) -> dict[str, str]:
    """Title -> body of every heading of ``level`` in ``text`` (a body runs to the next such heading)."""
    marker = "#" * level + " "
    out: dict[str, str] = {}
    title: str | None = None
    for line in text.splitlines():
        if line.startswith(marker):
            title = line[len(marker):].strip()
            out[title] = ""
        elif line.startswith("#" * (level - 1) + " ") and level > 2:
            title = None
        elif title is not None:
            out[title] += line + "\n"
    return out


def named(subsections: dict[str, str]) -> dict[str, str]:
    """The subsections titled with a name in backquotes, by that name."""
    return {m.group(1): body for title, body in subsections.items() if (m := re.fullmatch(r"`(\w+)`", title))}


def first_column(body: str) -> tuple[str, ...]:
    """The first cells of the body's table rows (header and separator left out), backquotes removed."""
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return tuple(row.split("|")[1].strip().strip("`") for row in rows[2:])


def examples(body: str, lang: str = "json") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)\n```", body, flags=re.S)


TOP = sections(DOC, 2)
FRAME_DOCS = named(sections(TOP["Frames"], 3))
MESSAGE_DOCS = named(sections(TOP["Client messages"], 3))
SUMMARY_DOCS = sections(TOP["The summary's per-sink figures"], 3)

ENCODE: dict[str, Callable[[Any], dict[str, Any]]] = {
    "hello": frames.hello_frame,
    "signal": frames.signal_frame,
    "snapshot": lambda s: frames.snapshot_frame(s.market, s.health),
    "status": frames.status_frame,
    "symbols": frames.symbols_frame,
    "subscribed": frames.subscribed_frame,
    "pong": lambda p: frames.pong_frame(p.id),
    "error": lambda e: frames.error_frame(e.error, e.message),
}


def test_the_document_lists_every_frame_type_and_no_other() -> None:
    assert set(FRAME_DOCS) == set(frames.FRAMES) == set(ENCODE)


@pytest.mark.parametrize("kind", sorted(frames.FRAMES))
def test_each_frame_documented_has_the_code_s_fields_and_a_true_example(kind: str) -> None:
    body = FRAME_DOCS[kind]
    assert first_column(body) == frames.FRAMES[kind]
    (example,) = examples(body)
    sent = json.loads(example)
    decoded = frames.decode(example)
    assert not isinstance(decoded, frames.Unknown)
    assert ENCODE[kind](decoded) == sent  # exactly what the server sends for what it describes


def test_the_fields_inside_a_snapshot_are_the_code_s() -> None:
    inside = sections(TOP["Inside a snapshot"], 3)
    assert first_column(inside["A quote"]) == frames.QUOTE_FIELDS
    assert first_column(inside["Health"]) == frames.HEALTH_FIELDS


def test_the_client_messages_are_the_ones_the_server_reads() -> None:
    assert set(MESSAGE_DOCS) == set(frames.CLIENT_MESSAGES)
    for op, body in MESSAGE_DOCS.items():
        assert first_column(body) == frames.CLIENT_MESSAGES[op]
        (example,) = examples(body)
        msg = clients.parse(example)
        assert msg["op"] == op and tuple(msg) == ("op", *frames.CLIENT_MESSAGES[op])
    sub = clients.subscription(clients.parse(examples(MESSAGE_DOCS["subscribe"])[0]), frames.Subscription())
    assert sub == frames.Subscription(frozenset({"BTCUSDT", "ETHUSDT"}), None, True)


def test_the_error_values_are_the_code_s() -> None:
    assert all(f"`{error}`" in FRAME_DOCS["error"] for error in frames.ERRORS)


def test_the_close_codes_the_server_sends_are_documented() -> None:
    codes = {int(c) for c in first_column(TOP["Close codes"])}
    assert {broadcast.CLOSE_GOING_AWAY, broadcast.CLOSE_POLICY, broadcast.CLOSE_TOO_SLOW} <= codes
    assert 1009 in codes and broadcast.MAX_CLIENT_MESSAGE == 64 * 1024  # websockets' max_size
    assert f"more than {broadcast.MAX_BAD_MESSAGES} malformed messages" in TOP["Close codes"]


def sinks(tmp: Path) -> list[Sink]:
    return [JsonlStreamSink(), JsonlSink(tmp / "s.jsonl"), WebhookSink("http://127.0.0.1:9/hook",
            dead_letter=tmp / "w.jsonl"), TelegramSink(1, dead_letter=tmp / "t.jsonl", env={}),
            MetricsSink(), BroadcastSink()]


def test_the_per_sink_figures_are_the_ones_in_the_summary(tmp_path: Path) -> None:
    common = first_column(SUMMARY_DOCS["every sink"])
    by_type = named(SUMMARY_DOCS)
    built = sinks(tmp_path)
    assert set(by_type) == {s.type for s in built} == {*SINK_TYPES, "stdout"}
    for sink in built:
        assert (*common, *first_column(by_type[sink.type])) == tuple(sink.stats()), sink.type


def test_the_dead_letter_line_is_the_one_written(tmp_path: Path) -> None:
    body = TOP["Dead letters"]
    (example,) = examples(body)
    line = json.loads(example)
    sink = WebhookSink("http://127.0.0.1:9/hook", dead_letter=tmp_path / "d.jsonl", name="alerts")
    written: list[dict[str, Any]] = []

    def add(record: Mapping[str, Any]) -> bool:
        written.append(dict(record))
        return True

    sink.dead_letter.add = add  # type: ignore[method-assign]
    signal = Signal.from_dict(line["signal"])
    sink.enqueue(signal)  # not started: a dead letter at once
    (record,) = written
    assert tuple(line) == tuple(record) == first_column(body)
    assert record["signal"] == line["signal"] == signal.to_dict()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"]) and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert f"`{record['reason']}`" in body


def test_the_telegram_text_is_the_one_sent_for_the_signal_example() -> None:
    (text,) = examples(TOP["Telegram messages"], "text")
    (signal,) = examples(FRAME_DOCS["signal"])
    decoded = frames.decode(signal)
    assert isinstance(decoded, Signal)
    assert message(decoded) == text

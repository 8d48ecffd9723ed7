"""Signal sinks: the JSON lines file (append, a line per write, rotation, fsync, crash safety), its filter,
the group that fans signals out, and the ``[[sinks]]`` config checks."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.signals.events import Signal
from engine.sinks import jsonl
from engine.sinks.base import SignalFilter, Sink, SinkGroup
from engine.sinks.config import SinkError, build_sinks, load_sinks
from engine.sinks.jsonl import JsonlSink, JsonlStreamSink, encode

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000_000_000


def make_signal(i: int, symbol: str = "AAPL", rule: str = "rsi_oversold", direction: str = "up") -> Signal:
    return Signal(symbol=symbol, rule=rule, direction=direction,  # type: ignore[arg-type]
                  bar_time=T0 + i * 60_000_000_000, price=100.0 + i, values={"rsi_14": 29.5, "level": 30.0},
                  detected_ns=T0 + i)


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` parsed; fails if the file does not end with a newline."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def run(sink: Sink, signals: list[Signal]) -> None:
    """Start, deliver, drain and close, as the headless service does."""
    async def go() -> None:
        sink.start()
        for s in signals:
            sink.deliver(s)
        assert await sink.drain(10.0)
        await sink.close()

    asyncio.run(go())


@pytest.fixture
def started() -> Iterator[Callable[[Sink], Sink]]:
    """Start sinks for a synchronous test (``flush`` waits for the writer) and close them afterwards."""
    sinks: list[Sink] = []

    def start(sink: Sink) -> Sink:
        sink.start()
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        asyncio.run(sink.close())


# --- the file ---------------------------------------------------------------------------------------

def test_signals_are_appended_as_json_lines_that_read_back(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    earlier = encode(make_signal(0))
    path.write_bytes(earlier)
    sink = JsonlSink(path)
    run(sink, [make_signal(i) for i in range(1, 4)])
    got = lines(path)
    assert [Signal.from_dict(d) for d in got] == [make_signal(i) for i in range(4)]  # appended after line 0
    assert set(got[0]) == {"symbol", "rule", "direction", "bar_time", "price", "values", "detected_ns",
                           "warmup"}
    assert got[0]["warmup"] is False
    assert sink.stats()["written"] == 3 and sink.stats()["pending"] == 0


def test_each_signal_is_one_write_of_a_whole_line_and_on_disk_before_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: Callable[[Sink], Sink]) -> None:
    path = tmp_path / "signals.jsonl"
    sink = started(JsonlSink(path))
    assert isinstance(sink, JsonlSink)
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        if fd == sink._fd:
            writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(jsonl.os, "write", spy)
    for i in range(5):
        sink.deliver(make_signal(i))
        assert sink.flush(10.0)
        # visible to another reader while the sink stays open: nothing is held back in this process
        assert len(lines(path)) == i + 1
    assert writes == [encode(make_signal(i)) for i in range(5)]


def test_rotation_by_size_keeps_the_newest_lines_in_order_and_at_most_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    size = len(encode(make_signal(0)))
    assert all(len(encode(make_signal(i))) == size for i in range(20))
    sink = JsonlSink(path, max_bytes=3 * size, backups=2)
    run(sink, [make_signal(i) for i in range(20)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["signals.jsonl", "signals.jsonl.1", "signals.jsonl.2"]
    sizes = [p.stat().st_size for p in (path, sink.backup(1), sink.backup(2))]
    assert sizes == [2 * size, 3 * size, 3 * size]
    kept = lines(sink.backup(2)) + lines(sink.backup(1)) + lines(path)
    assert [Signal.from_dict(d) for d in kept] == [make_signal(i) for i in range(12, 20)]
    assert sink.stats()["rotations"] == 6


def test_rotation_with_no_backups_starts_over_and_a_line_is_never_split(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    size = len(encode(make_signal(0)))
    sink = JsonlSink(path, max_bytes=size // 2, backups=0)  # every line is larger than the limit
    run(sink, [make_signal(i) for i in range(4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signals.jsonl"]
    assert [Signal.from_dict(d) for d in lines(path)] == [make_signal(3)]


@pytest.mark.parametrize("fsync", [False, True])
def test_the_fsync_flag_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool) -> None:
    events: list[str] = []
    real_write, real_fsync = os.write, os.fsync
    sink = JsonlSink(tmp_path / "signals.jsonl", fsync=fsync)

    def write(fd: int, data: Any) -> int:
        if fd == sink._fd:
            events.append("write")
        return real_write(fd, data)

    def do_fsync(fd: int) -> None:
        if fd == sink._fd:
            events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(jsonl.os, "write", write)
    monkeypatch.setattr(jsonl.os, "fsync", do_fsync)
    run(sink, [make_signal(i) for i in range(10)])
    assert events.count("write") == 10
    if fsync:
        assert events[-1] == "fsync"  # the last line was made durable before drain returned
        assert sink.stats()["fsyncs"] == events.count("fsync") >= 1
    else:
        assert "fsync" not in events and sink.stats()["fsyncs"] == 0


# --- crash safety -----------------------------------------------------------------------------------

def test_a_partial_last_line_left_by_a_crash_is_cut_on_start(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "signals.jsonl"
    whole = b"".join(encode(make_signal(i)) for i in range(3))
    torn = encode(make_signal(3))[:25]
    path.write_bytes(whole + torn)
    sink = JsonlSink(path)
    with caplog.at_level(logging.WARNING, logger="tickdeck.sinks"):
        run(sink, [make_signal(i) for i in range(4, 6)])
    assert [Signal.from_dict(d) for d in lines(path)] == [make_signal(i) for i in (0, 1, 2, 4, 5)]
    assert sink.stats()["repaired_bytes"] == len(torn)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "partial line" in warning.getMessage()


def test_a_file_that_is_only_a_partial_line_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b'{"symbol":"AA')
    run(JsonlSink(path), [make_signal(1)])
    assert [Signal.from_dict(d) for d in lines(path)] == [make_signal(1)]


def test_a_write_that_fails_part_way_is_cut_before_the_next_line(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "signals.jsonl"
    sink = JsonlSink(path)
    real_write = os.write
    failed: list[int] = []

    def disk_full_once(fd: int, data: Any) -> int:
        if fd == sink._fd and len(failed) == 0 and bytes(data) == encode(make_signal(1)):
            failed.append(real_write(fd, bytes(data)[:10]))  # half a line reaches the disk...
            raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full
        return real_write(fd, data)

    monkeypatch.setattr(jsonl.os, "write", disk_full_once)
    run(sink, [make_signal(i) for i in range(4)])
    assert failed == [10]
    assert [Signal.from_dict(d) for d in lines(path)] == [make_signal(i) for i in (0, 2, 3)]
    assert sink.stats()["errors"] == 1 and sink.stats()["written"] == 3


_WRITER = """
import sys, time
from engine.signals.events import Signal
from engine.sinks.jsonl import JsonlSink

sink = JsonlSink(sys.argv[1], max_bytes=int(sys.argv[2]), backups=3)
sink.start()
i = 0
while True:
    for _ in range(200):
        i += 1
        sink.deliver(Signal("S%d" % (i % 50), "r", "up", i, 1.0 + i, {"x": i * 0.5, "y": 1 / 3}, i))
    sink.flush()
"""


def test_a_writer_killed_with_sigkill_mid_stream_leaves_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "300000"], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (path.exists() and path.with_name(path.name + ".1").exists()):  # rotated at least once
            assert proc.poll() is None, "the writer exited"
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    total = 0
    for file in [path, *(path.with_name(f"{path.name}.{n}") for n in range(1, 4))]:
        if file.exists():
            got = lines(file)
            assert all(Signal.from_dict(d).rule == "r" for d in got)
            total += len(got)
    assert total > 200
    sink = JsonlSink(path)
    run(sink, [make_signal(0)])
    assert sink.stats()["repaired_bytes"] == 0


# --- stdout ------------------------------------------------------------------------------------------

def test_the_stream_sink_writes_lines_and_survives_a_reader_that_goes_away(
        started: Callable[[Sink], Sink]) -> None:
    read_end, write_end = os.pipe()
    try:
        sink = started(JsonlStreamSink(write_end))
        assert isinstance(sink, JsonlStreamSink)
        sink.deliver(make_signal(1))
        assert sink.flush(10.0)
        assert os.read(read_end, 65536) == encode(make_signal(1))
        os.close(read_end)
        read_end = -1
        for i in range(3):
            sink.deliver(make_signal(i))
        assert sink.flush(10.0)
        assert sink.broken and sink.stats()["dropped"] == 3 and sink.stats()["written"] == 1
    finally:
        if read_end >= 0:
            os.close(read_end)
        asyncio.run(sink.close())
        os.close(write_end)


# --- filters and the group ---------------------------------------------------------------------------

def test_a_filter_passes_only_the_symbols_rules_and_directions_it_names() -> None:
    f = SignalFilter(symbols=frozenset({"AAPL"}), rules=frozenset({"r1", "r2"}), directions=frozenset({"up"}))
    assert f.matches(make_signal(0, "AAPL", "r1", "up"))
    assert not f.matches(make_signal(0, "MSFT", "r1", "up"))
    assert not f.matches(make_signal(0, "AAPL", "r3", "up"))
    assert not f.matches(make_signal(0, "AAPL", "r2", "down"))
    assert SignalFilter().matches(make_signal(0)) and SignalFilter().everything


class Broken(Sink):
    type = "broken"

    def start(self) -> None:
        pass

    def enqueue(self, signal: Signal) -> None:
        raise RuntimeError("no")

    async def close(self, timeout: float = 2.0) -> None:
        pass


def test_the_group_filters_per_sink_and_a_failing_sink_stops_no_other(tmp_path: Path) -> None:
    only_up = JsonlSink(tmp_path / "up.jsonl", name="up", filter=SignalFilter(directions=frozenset({"up"})))
    every = JsonlSink(tmp_path / "all.jsonl", name="all")
    group = SinkGroup([Broken("broken"), only_up, every])
    signals = [make_signal(i, direction="up" if i % 2 else "down") for i in range(6)]

    async def go() -> None:
        await group.start()
        for s in signals:
            group.deliver(s)
        assert await group.drain(10.0)
        await group.close()

    asyncio.run(go())
    assert [Signal.from_dict(d) for d in lines(tmp_path / "all.jsonl")] == signals
    assert [Signal.from_dict(d) for d in lines(tmp_path / "up.jsonl")] == signals[1::2]
    stats = group.stats()
    assert stats["broken"]["deliver_errors"] == 6
    assert stats["up"]["filtered"] == 3 and stats["up"]["written"] == 3


# --- [[sinks]] config --------------------------------------------------------------------------------

def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sinks_of(path: Path) -> list[tuple[dict[str, Any], str]]:
    config = load_config(str(path), env={"TICKDECK_CONFIG_DIR": str(path.parent / "none")})
    return [(dict(t), f) for t, f in config.sinks]


def test_a_jsonl_sink_table_loads_with_its_filter_and_a_path_relative_to_its_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[[sinks]]\ntype = "jsonl"\npath = "out/signals.jsonl"\nfsync = true\n'
                                 'max_bytes = 5000\nbackups = 2\nsymbols = ["AAPL"]\ndirections = ["up"]\n'
                                 'rules = ["rsi_oversold"]\n')
    [spec] = load_sinks(sinks_of(path), rule_ids=["rsi_oversold", "macd_cross"])
    assert spec.type == "jsonl" and spec.name == "jsonl-1" and spec.file == str(path)
    assert spec.settings.path == tmp_path / "out" / "signals.jsonl"
    assert (spec.settings.fsync, spec.settings.max_bytes, spec.settings.backups) == (True, 5000, 2)
    assert spec.filter == SignalFilter(frozenset({"AAPL"}), frozenset({"rsi_oversold"}), frozenset({"up"}))
    [sink] = build_sinks([spec])
    assert isinstance(sink, JsonlSink) and sink.fsync and sink.max_bytes == 5000


@pytest.mark.parametrize(("body", "sink", "key", "says"), [
    ('type = "jsonl"\npath = "a"\nmax_bytes = "big"', "sink #2 (jsonl)", "max_bytes", "integer >= 1"),
    ('type = "jsonl"\npath = "a"\nfsync = "yes"', "sink #2 (jsonl)", "fsync", "true or false"),
    ('type = "jsonl"\npath = "a"\nbackups = -1', "sink #2 (jsonl)", "backups", "from 0 to 1000"),
    ('type = "jsonl"', "sink #2 (jsonl)", "path", "required"),
    ('type = "jsonl"\npath = "a"\npaht = "b"', "sink #2 (jsonl)", "paht", "allowed: type, name"),
    ('type = "jsonl"\npath = "a"\ndirections = ["sideways"]', "sink #2 (jsonl)", "directions",
     "'sideways'"),
    ('type = "jsonl"\npath = "a"\nrules = ["nope"]', "sink #2 (jsonl)", "rules", "no rule with id 'nope'"),
    ('type = "jsonl"\npath = "a"\nsymbols = []', "sink #2 (jsonl)", "symbols", "non-empty list"),
    ('type = "jsonl"\nname = "audit"\npath = "b"', "sink #2 'audit' (jsonl)", "path", "also written by"),
    ('type = "webhok"', "sink #2 (webhok)", "type", "unknown sink type 'webhok'; known: jsonl"),
    ('type = "telegram"', "sink #2 (telegram)", "chat_id", "required"),
    ('path = "a"', "sink #2", "type", "required: one of jsonl"),
])
def test_sink_config_errors_name_the_sink_the_file_and_the_key(tmp_path: Path, body: str, sink: str,
                                                               key: str, says: str) -> None:
    path = config_file(tmp_path, f'[[sinks]]\ntype = "jsonl"\npath = "b"\n\n[[sinks]]\n{body}\n')
    with pytest.raises(SinkError) as error:
        load_sinks(sinks_of(path), rule_ids=["rsi_oversold"])
    message = str(error.value)
    assert message.startswith(f"{path}: {sink}, key {key!r}: "), message
    assert says in message
    assert (error.value.file, error.value.key) == (str(path), key)


def test_signals_out_may_not_share_a_configured_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[[sinks]]\ntype = "jsonl"\npath = "s.jsonl"\n')
    with pytest.raises(SinkError, match=r"sink #1 \(jsonl\) of .*service\.toml"):
        load_sinks(sinks_of(path), signals_out=tmp_path / "s.jsonl")

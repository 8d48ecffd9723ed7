"""The bus's pure parts: subject tokens, message ids, the disk buffer, the [bus] config, and nats-py
imported only when a bus is configured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bus.buffer import DiskBuffer, JournalError, Pending
from engine.bus.connection import BusError, settings_from
from engine.bus.subjects import signal_id, signal_subject, token, untoken
from engine.config import ConfigError, load_config
from engine.signals.events import Signal

ROOT = Path(__file__).resolve().parents[2]


def sig(symbol: str = "BTCUSDT", bar_time: int = 1_800_000_000_000_000_000, **kw: object) -> Signal:
    base: dict[str, object] = {"rule": "rsi_oversold", "direction": "up", "price": 1.0, "values": {},
                               "detected_ns": 1}
    base.update(kw)
    return Signal(symbol=symbol, bar_time=bar_time, **base)  # type: ignore[arg-type]


@given(st.text())
def test_any_name_is_one_subject_token_and_comes_back(name: str) -> None:
    t = token(name)
    assert t and all(c not in t for c in ". *>\t\r\n") and untoken(t) == name


def test_subjects_name_the_feed_interval_and_symbol() -> None:
    assert signal_subject("yahoo", "1m", "BRK.B") == "tickdeck.signals.yahoo.1m.BRK%2EB"
    assert signal_subject("binance", "5m", "BTCUSDT") == "tickdeck.signals.binance.5m.BTCUSDT"


def test_a_signal_id_depends_on_what_the_signal_is_not_on_who_saw_it_or_when() -> None:
    a = sig(price=1.0, detected_ns=1)
    b = sig(price=1.5, detected_ns=99, values={"rsi_14": 29.0})  # another engine, another moment
    assert signal_id("binance", "1m", a) == signal_id("binance", "1m", b)
    others = {signal_id("binance", "1m", sig(direction="down")), signal_id("binance", "5m", a),
              signal_id("coinbase", "1m", a), signal_id("binance", "1m", sig(bar_time=1)),
              signal_id("binance", "1m", sig(rule="other")), signal_id("binance", "1m", sig(symbol="ETH"))}
    assert len(others) == 6 and signal_id("binance", "1m", a) not in others


def items(n: int, start: int = 0) -> list[Pending]:
    return [Pending(f"id-{i}", "tickdeck.signals.sim.1m.X", f'{{"n":{i}}}') for i in range(start, start + n)]


def test_the_buffer_keeps_what_was_not_done_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "buf.jsonl"
    buf = DiskBuffer(path)
    buf.open()
    buf.add(items(5))
    buf.mark_done(["id-0", "id-2"])
    buf.close()  # a restart, or a kill: the journal is on disk line by line
    again = DiskBuffer(path)
    again.open()
    assert list(again.pending) == ["id-1", "id-3", "id-4"] and again.recovered == 3
    again.mark_done(["id-1", "id-3", "id-4"])
    assert path.read_bytes() == b""  # nothing pending: emptied (atomically)
    again.close()


def test_a_line_cut_short_by_a_crash_is_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "buf.jsonl"
    buf = DiskBuffer(path)
    buf.open()
    buf.add(items(2))
    buf.close()
    with path.open("ab") as fh:
        fh.write(b'{"id": "id-9", "subj')
    again = DiskBuffer(path)
    again.open()
    assert list(again.pending) == ["id-0", "id-1"] and again.torn == 1
    again.add(items(1, start=3))  # appends start on a line of their own
    again.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["id-0", "id-1", "id-3"]


def test_past_its_bound_the_buffer_counts_what_it_could_not_keep(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    buf = DiskBuffer(tmp_path / "buf.jsonl", max_pending=3)
    buf.open()
    assert len(buf.add(items(2))) == 2
    assert len(buf.add(items(3, start=2))) == 1
    assert buf.overflow == 2 and len(buf.pending) == 3
    assert "is full" in caplog.text
    buf.mark_done(["id-0"])
    assert len(buf.add(items(1, start=10))) == 1
    assert "has room again; 2 signals were not kept" in caplog.text
    buf.close()


def test_compaction_bounds_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "buf.jsonl"
    buf = DiskBuffer(path, compact_after=10)
    buf.open()
    buf.add(items(1, start=1000))  # stays pending throughout
    for i in range(0, 100, 5):
        buf.add(items(5, start=i))
        buf.mark_done([f"id-{j}" for j in range(i, i + 5)])
    assert len(path.read_text().splitlines()) <= 1 + 5 + 10
    buf.close()


def test_one_buffer_one_process(tmp_path: Path) -> None:
    first = DiskBuffer(tmp_path / "buf.jsonl")
    first.open()
    code = ("import sys; from engine.bus.buffer import DiskBuffer, JournalError\n"
            "try:\n    DiskBuffer(sys.argv[1]).open()\nexcept JournalError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "buf.jsonl")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "is in use by another process" in out.stdout, out.stderr
    first.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match="cannot open the bus buffer"):  # a file where a directory goes
        DiskBuffer(tmp_path / "file" / "x.jsonl").open()


@pytest.mark.usefixtures("clean_env")
def test_the_bus_config_is_checked_and_names_the_key(tmp_path: Path) -> None:
    assert load_config(None, {"bus.url": "nats://127.0.0.1:4222"}).bus.url == "nats://127.0.0.1:4222"
    with pytest.raises(ConfigError, match=r"bus\.url"):
        load_config(None, {"bus.url": "http://127.0.0.1:4222"})
    with pytest.raises(ConfigError, match=r"bus\.engine"):
        load_config(None, {"bus.engine": "a.b"})
    with pytest.raises(ConfigError, match=r"bus\.token_env"):
        load_config(None, {"bus.token_env": "1X"})


def test_credentials_are_never_in_a_message() -> None:
    with pytest.raises(BusError, match="must not carry credentials") as info:
        settings_from("nats://alice:s3cret@127.0.0.1:4222")
    assert "s3cret" not in str(info.value)
    with pytest.raises(BusError, match="TICKDECK_T, which is not set"):
        settings_from("nats://127.0.0.1:4222", token_env="TICKDECK_T", env={})
    s = settings_from("nats://127.0.0.1:4222", token_env="TICKDECK_T", env={"TICKDECK_T": "tok-123"})
    assert s.token == "tok-123" and "tok-123" not in repr(s) and "tok-123" not in s.shown


_NO_BUS_RUN = """
import asyncio, sys
from engine.config import load_config
from engine.headless import serve
import console.cli, console.sink_cmd, engine.bus.publisher, engine.bus.consumer
config = load_config(None, {"feed.name": "replay", "feeds.replay.file": sys.argv[1],
                            "feeds.replay.speed": "max"})
code, summary = asyncio.run(serve(config, stdout_fd=None, status_every=0))
print(code, summary["bars"], sorted(m for m in sys.modules if m == "nats" or m.startswith("nats.")))
"""


def test_nats_is_imported_only_when_a_bus_is_configured(tmp_path: Path) -> None:
    data = tmp_path / "ACME.csv"
    data.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{1_800_000_000 + 60 * i},1,2,0.5,1.5,10\n" for i in range(50)), encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", _NO_BUS_RUN, str(data)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ,
                                                      "TICKDECK_STATE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "50", "[]"]


def _doc_section(title: str) -> str:
    doc = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
    body = doc.split("## The bus\n", 1)[1]
    return body.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def _first_column(body: str) -> list[str]:
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [row.split("|")[1].strip().strip("`") for row in rows[2:]]


def test_protocol_md_has_the_bar_frame_and_the_bus_figures_the_code_has(tmp_path: Path) -> None:
    from engine.bus.connection import BusSettings
    from engine.bus.publisher import BusPublisher, bar_frame

    body = _doc_section("`bar`")
    example = json.loads(body.split("```json\n", 1)[1].split("\n```", 1)[0])
    frame = bar_frame(example["feed"], example["interval"], example["symbol"], example["t"],
                      [example[k] for k in ("open", "high", "low", "close", "volume")], example["warmup"])
    assert _first_column(body) == list(frame) and frame == example
    pub = BusPublisher(BusSettings("nats://127.0.0.1:4222"), DiskBuffer(tmp_path / "b.jsonl"), feed="sim",
                       interval="1m", engine="e")
    assert _first_column(_doc_section("The summary's `bus` figures")) == list(pub.stats())
    assert signal_subject("sim", "1m", "X").startswith("tickdeck.signals.sim.1m.")


@pytest.mark.usefixtures("clean_env")
def test_publish_needs_headless(capsys: pytest.CaptureFixture[str]) -> None:
    from console.cli import main as cli_main

    assert cli_main(["--publish", "nats://127.0.0.1:4222"]) == 2
    assert "--publish works with --headless only" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("", "no [[sinks]] tables"),
    ('[[sinks]]\ntype = "jsonl"\npath = "x.jsonl"\n[consumer]\nspeed = 1\n', "[consumer] has no key 'speed'"),
    ('[[sinks]]\ntype = "jsonl"\npath = "x.jsonl"\n[consumer]\nbatch = 0\n', "batch must be a positive"),
    ('[[sinks]]\ntype = "metrics"\n', "tickdeck sink runs jsonl, webhook and telegram sinks"),
    ('[[sinks]]\ntype = "jsonl"\n', "key 'path': required"),
    ('[[sinks]]\ntype = "jsonl"\npath = "x.jsonl"\n', "cannot reach the bus at nats://127.0.0.1:"),
])
def test_tickdeck_sink_mistakes_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        text: str, message: str) -> None:
    from console.cli import main as cli_main
    from tests.servers.hooks import closed_port

    config = tmp_path / "sinks.toml"
    config.write_text(text, encoding="utf-8")
    code = cli_main(["sink", "--from", f"nats://127.0.0.1:{closed_port()}", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err

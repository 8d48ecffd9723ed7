"""Record a run, replay the recording through the same runtime: the engine ends in the same state.
And the CLI refuses a replay or a recording it cannot do before the console starts."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from console.cli import main
from engine.config import Config, load_config
from engine.feeds.base import Feed, FeedStatus
from engine.feeds.record import Recorder, RecorderError
from engine.feeds.sim import SimFeed
from engine.runtime import Runtime, build_engine
from engine.ticks import SymbolTable

SEC = 1_000_000_000
T0 = 1_800_000_000 * SEC


class FiniteSim(Feed):
    """The sim's ticks for a fixed stretch of time, then the end of the feed."""

    name = "sim"

    def __init__(self, symbols: SymbolTable, batches: int) -> None:
        super().__init__(symbols)
        self.sim = SimFeed(symbols, n_symbols=12, seed=5)
        self.batches = batches
        self.clock = T0

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "live")
        for k in range(self.batches):
            batch = self.sim.next_batch(400, T0 + (k + 1) * SEC, 1.0)
            self.clock = int(batch["ts"].max())  # the clock a recording can reproduce: its last trade
            yield batch

    def now_ns(self) -> int:
        return self.clock


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".parquet"])
def test_a_recorded_run_replays_to_the_same_engine_state(tmp_path: Path, suffix: str) -> None:
    record = tmp_path / f"run{suffix}"
    live_cfg = load_config(overrides={"engine.interval": "5s", "feed.record": str(record)}, env={})
    live_engine = build_engine(live_cfg)
    live = Runtime(live_cfg, engine=live_engine, feed=FiniteSim(live_engine.symbols, 60))
    asyncio.run(live.run(lambda u: None, lambda s: None))
    assert record.stat().st_size > 0

    cfg = load_config(overrides={"engine.interval": "5s", "feed.name": "replay",
                                 "feeds.replay.file": str(record), "feeds.replay.speed": "max"}, env={})
    again = Runtime(cfg)
    asyncio.run(again.run(lambda u: None, lambda s: None))
    a, b = live_engine, again.engine
    assert b.stats.ticks == a.stats.ticks == 60 * 400
    for name in a.symbols.names:
        sa, sb = a.symbols.get(name), b.symbols.get(name)
        assert sa is not None and sb is not None
        np.testing.assert_array_equal(b.history.tail(sb)[1], a.history.tail(sa)[1])
        np.testing.assert_array_equal(b.bank.committed[:, sb], a.bank.committed[:, sa])


def test_cli_refuses_what_it_cannot_replay_or_record(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path))
    assert main(["--file", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--feed", "replay"]) == 2
    assert "needs a file" in capsys.readouterr().err
    assert main(["--record", str(tmp_path / "out.txt")]) == 2
    assert ".parquet, .jsonl.gz or .jsonl" in capsys.readouterr().err
    assert main(["--record", str(tmp_path / "nowhere" / "out.jsonl")]) == 2
    assert "no directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["old.jsonl", "old.jsonl.gz", "old.parquet"])
def test_an_existing_recording_is_refused_untouched_unless_force(tmp_path: Path, name: str,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path))
    started: list[Config] = []
    fake = types.ModuleType("console.app")

    def run_app(config: Config, **_: object) -> int:
        started.append(config)
        return 0

    fake.run_app = run_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "console.app", fake)
    old = tmp_path / name
    old.write_bytes(b"yesterday's recording")
    assert main(["--record", str(old)]) == 2
    err = capsys.readouterr().err
    assert err == (f"tickdeck: cannot record to {old}: the file exists; --force replaces it (or choose "
                   "another name)\n")
    assert old.read_bytes() == b"yesterday's recording" and not started
    with pytest.raises(RecorderError, match="the file exists"):  # and the recorder itself never truncates
        Recorder(old, SymbolTable(4))
    assert old.read_bytes() == b"yesterday's recording"
    assert main(["--record", str(old), "--force"]) == 0
    assert not old.exists() and started[0].feed.record == str(old)  # the recorder creates it anew


def test_force_needs_a_recording_and_never_records_over_the_replayed_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path))
    fake = types.ModuleType("console.app")
    fake.run_app = lambda config, **_: pytest.fail("the app must not start")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "console.app", fake)
    assert main(["--force"]) == 2
    assert "--force works with --record only" in capsys.readouterr().err
    tape = tmp_path / "tape.jsonl"
    tape.write_bytes(b'{"symbol":"A","ts":1,"price":1.0,"size":1.0}\n')
    assert main(["--file", str(tape), "--record", str(tape), "--force"]) == 2
    assert "it is the file being replayed" in capsys.readouterr().err
    assert tape.exists()

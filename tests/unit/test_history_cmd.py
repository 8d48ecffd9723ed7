"""``tickdeck history``: list, export (round trips through ``tickdeck indicators`` and ``tickdeck backtest``),
prune, and every mistake as one line, exit status 2 and nothing written."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from console import history_cmd, indicators_cmd
from console.cli import main
from engine.backtest import load_series
from engine.indicators.catalogue import DEFAULT_OUTPUTS
from engine.store import FILENAME, BarStore
from engine.ticks import make_bars
from tests.data import random_walk

MIN = 60_000_000_000
SEC = 1_000_000_000
DAY = 1440 * MIN


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TICKDECK_* settings from the machine; the store in the test's own directory."""
    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("TICKDECK_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def walk(n: int, interval: int, seed: int) -> np.ndarray:
    """``n`` bars up to now, each half an interval off the grid of ages the pruning tests cut at, so
    the seconds a test takes never move a bar across a cut (whole seconds: what the CSV keeps)."""
    w = random_walk(n, seed=seed)
    b = make_bars(n)
    now = time.time_ns() // SEC * SEC
    b["t"] = now - (n - np.arange(n, dtype=np.int64)) * interval + interval // 2
    for name, values in (("open", w.o), ("high", w.h), ("low", w.l), ("close", w.c), ("volume", w.v)):
        b[name] = values
    return b


@pytest.fixture
def filled(clean_env: Path) -> dict[str, np.ndarray]:
    series = {"btc": walk(300, MIN, 1), "btc5": walk(100, 5 * MIN, 2), "eth": walk(50, MIN, 3)}
    with BarStore(clean_env, 90 * DAY) as store:
        store.append("binance", "BTCUSDT", MIN, series["btc"])
        store.append("binance", "BTCUSDT", 5 * MIN, series["btc5"])
        store.append("coinbase", "ETH-USD", MIN, series["eth"])
        store.append("binance", "SOLUSDT", MIN, walk(20, MIN, 4))
    return series


def test_list_shows_every_series_with_its_bars_times_and_bytes(
        filled: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["feed", "symbol", "interval", "bars", "first", "(UTC)", "last", "(UTC)",
                              "bytes"]
    rows = [line.split() for line in out[1:-1]]
    assert [r[:4] for r in rows] == [["binance", "BTCUSDT", "1m", "300"], ["binance", "BTCUSDT", "5m", "100"],
                                     ["binance", "SOLUSDT", "1m", "20"], ["coinbase", "ETH-USD", "1m", "50"]]
    first = str(np.datetime64(int(filled["btc"]["t"][0]), "ns").astype("datetime64[s]")).split("T")
    last = str(np.datetime64(int(filled["btc"]["t"][-1]), "ns").astype("datetime64[s]")).split("T")
    assert rows[0][4:8] == [*first, *last]
    assert all(int(r[8].replace(",", "")) > 0 for r in rows)
    assert out[-1].startswith("4 series, 470 bars, ") and out[-1].endswith(FILENAME)


def test_a_csv_export_goes_through_tickdeck_indicators(
        filled: dict[str, np.ndarray], tmp_path: Path) -> None:
    csv_path, out = tmp_path / "btc.csv", tmp_path / "ind.csv"
    assert main(["history", "export", "binance", "BTCUSDT", "--interval", "1m", "-o", str(csv_path)]) == 0
    assert main(["indicators", str(csv_path), "-o", str(out)]) == 0
    got = pd.read_csv(out)
    b = filled["btc"]
    assert list(got.columns[:7]) == list(history_cmd.EXPORT_COLUMNS) and (got["symbol"] == "BTCUSDT").all()
    for name in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(got[name].to_numpy(), b[name])  # exactly: prices written in full
    stamps = pd.to_datetime(got["timestamp"], utc=True).dt.tz_localize(None).to_numpy()
    assert np.array_equal(stamps.astype("datetime64[ns]").view(np.int64), b["t"])
    want = indicators_cmd._indicators(b["t"], b["open"], b["high"], b["low"], b["close"], b["volume"])
    assert np.allclose(got[list(DEFAULT_OUTPUTS)].to_numpy(), want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_export_goes_through_tickdeck_backtest(filled: dict[str, np.ndarray], tmp_path: Path, suffix: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"export{suffix}"  # a name that is not the symbol: the symbol column names it
    assert main(["history", "export", "binance", "BTCUSDT", "--interval", "1m", "-o", str(path)]) == 0
    series = load_series([str(path)])
    b = filled["btc"]
    assert series.names == ["BTCUSDT"] and series.interval == MIN
    assert np.array_equal(series.t, b["t"]) and np.array_equal(series.c, b["close"])
    assert np.array_equal(series.h, b["high"]) and np.array_equal(series.v, b["volume"])
    capsys.readouterr()
    assert main(["backtest", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bars"] == 300 and report["symbols"] == 1


def test_export_picks_the_only_interval_and_writes_csv_to_stdout(
        filled: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "export", "coinbase", "ETH-USD"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",".join(history_cmd.EXPORT_COLUMNS) and len(lines) == 51
    assert lines[1].split(",")[1] == "ETH-USD" and lines[1].split(",")[0].endswith("Z")


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "binance", "XRPUSDT", "-o", "{d}/x.csv"],
     "nothing stored for binance XRPUSDT; stored: binance BTCUSDT, binance SOLUSDT, coinbase ETH-USD"),
    (["export", "binance", "BTCUSDT", "-o", "{d}/x.csv"], "binance BTCUSDT is stored at several intervals "
                                                          "(1m, 5m): choose one with --interval"),
    (["export", "binance", "BTCUSDT", "--interval", "15m", "-o", "{d}/x.csv"],
     "binance BTCUSDT is not stored at 15m; it is at 1m, 5m"),
    (["export", "binance", "BTCUSDT", "--interval", "7x", "-o", "{d}/x.csv"],
     "--interval must be a duration"),
    (["export", "binance", "BTCUSDT", "--interval", "1m", "-o", "{d}/x.txt"],
     "cannot export to {d}/x.txt: use a .csv or .parquet file name"),
    (["export", "binance", "BTCUSDT", "--interval", "1m", "-o", "{d}/no/x.csv"],
     "directory '{d}/no' does not exist"),
    (["export", "binance", "BTCUSDT", "--interval", "1m", "-o", "{d}"], "use a .csv or .parquet file name"),
    (["prune", "--older-than", "soon"], "--older-than must be a duration like '30s'"),
    (["prune", "--older-than", "0d"], "--older-than must be a duration like '30s'"),
])
def test_mistakes_are_one_line_exit_2_and_nothing_is_written(
        filled: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = BarStore(tmp_path / "data", 90 * DAY).series()
    code = main(["history", *(a.format(d=out_dir) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("tickdeck: ") and message.format(d=out_dir) in err
    assert list(out_dir.iterdir()) == []  # no file, no temporary file
    assert BarStore(tmp_path / "data", 90 * DAY).series() == before  # the store untouched


def test_a_failed_write_leaves_no_file(filled: dict[str, np.ndarray], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def full_disk(at: int) -> object:
        def write(*args: object) -> None:
            args[at].write(b"PAR1" if suffix == ".parquet" else "timestamp,")  # type: ignore[attr-defined]
            raise OSError(28, "No space left on device")
        return write

    import pyarrow.parquet as pq

    for suffix in (".csv", ".parquet"):
        if suffix == ".csv":
            monkeypatch.setattr(history_cmd, "_write_csv", full_disk(2))
        else:
            monkeypatch.setattr(pq, "write_table", full_disk(1))
        target = str(out_dir / f"x{suffix}")
        code = main(["history", "export", "binance", "BTCUSDT", "--interval", "1m", "-o", target])
        assert code == 2 and "No space left on device" in capsys.readouterr().err
        assert list(out_dir.iterdir()) == []


def test_no_store_and_a_damaged_store_are_explained(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "list"]) == 0  # nothing stored yet: said, and nothing created
    assert "no bars stored yet" in capsys.readouterr().out and not clean_env.exists()
    assert main(["history", "prune"]) == 0 and not clean_env.exists()
    monkeypatch.setenv("TICKDECK_HISTORY_STORE", "")
    assert main(["history", "list"]) == 2
    assert 'no bar store: history.store is "" (off)' in capsys.readouterr().err
    monkeypatch.delenv("TICKDECK_HISTORY_STORE")
    clean_env.mkdir()
    (clean_env / FILENAME).write_text("a shopping list\n" * 200)
    assert main(["history", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{clean_env / FILENAME}: the file is not a tickdeck bar store" in err


def test_prune_by_age_feed_and_symbol_and_by_the_retention(
        filled: dict[str, np.ndarray], clean_env: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def count(feed: str, symbol: str, interval: int = MIN) -> int:
        with BarStore(clean_env, 90 * DAY) as store:
            return len(store.load(feed, symbol, interval, 0))

    assert main(["history", "prune", "--older-than", "2h", "--symbol", "BTCUSDT"]) == 0
    assert "pruned 256 bars (older than 2h, symbol BTCUSDT)" in capsys.readouterr().out
    assert count("binance", "BTCUSDT") == 120 and count("binance", "BTCUSDT", 5 * MIN) == 24
    assert count("coinbase", "ETH-USD") == 50
    assert main(["history", "prune", "--older-than", "10m", "--feed", "coinbase"]) == 0
    assert count("coinbase", "ETH-USD") == 10 and count("binance", "SOLUSDT") == 20
    monkeypatch.setenv("TICKDECK_HISTORY_RETENTION", "15m")
    assert main(["history", "prune"]) == 0
    assert "older than the retention (15m)" in capsys.readouterr().out
    assert count("binance", "BTCUSDT") == 15 and count("binance", "SOLUSDT") == 15

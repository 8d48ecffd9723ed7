"""The ``tickdeck`` command line: a light ``--help``, config errors as one line, and ``indicators``."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from console import cli
from console.cli import main
from engine.config import Config
from engine.indicators.catalogue import DEFAULT_OUTPUTS
from tests.data import random_walk

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numba", "pandas", "numpy", "textual")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No TICKDECK_* settings and no user config from the machine running the tests."""
    import os

    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path_factory.mktemp("user-config")))


# --- --help -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["indicators", "--help"], ["bench", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from console.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("HEAVY []"), out.stdout
    assert "usage: tickdeck" in out.stdout


def test_help_lists_commands_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in ("--config", "--feed", "--theme", "--interval", "indicators", "bench", "TICKDECK_"):
        assert word in text


# --- config mistakes and launching ------------------------------------------------------------------

def test_config_error_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[ui]\nfps = "fast"\n', encoding="utf-8")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"tickdeck: ui.fps in {bad} must be an integer, got 'fast'\n"


def test_bad_flag_values(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--interval", "7x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "engine.interval" in err and "'7x'" in err

    monkeypatch.setenv("TICKDECK_UI_FPS", "fast")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "TICKDECK_UI_FPS" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as exit_:
        main(["--feed", "kraken"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kraken" in err


def test_launch_passes_flags_into_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []
    remembered: list[bool] = []
    fake = types.ModuleType("console.app")

    def run_app(config: Config, saved_theme: bool = True) -> int:
        seen.append(config)
        remembered.append(saved_theme)
        return 0

    fake.run_app = run_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "console.app", fake)
    assert main(["--feed", "binance", "--interval", "5m", "--theme", "light"]) == 0
    assert main(["--feed", "binance"]) == 0
    config = seen[0]
    assert remembered == [False, True]  # a theme on the command line wins over the remembered one
    assert config.feed.name == "binance"
    assert config.engine.interval_ns == 300_000_000_000
    assert config.ui.theme == "light"
    assert config.ui.fps == Config().ui.fps


def test_bad_rule_and_a_replay_without_a_file_stop_before_the_app(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("console.app")
    fake.run_app = lambda config, **_: pytest.fail("the app must not start")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "console.app", fake)
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rules]]\nid = "oops"\nkind = "cross"\na = "rsi_x"\nb = 30\n', encoding="utf-8")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'oops'" in err and str(bad) in err and "rsi_x" in err
    assert main(["--feed", "replay"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a file" in err


# --- indicators: round trip -------------------------------------------------------------------------

def ohlcv_frame(n: int = 160, seed: int = 4) -> pd.DataFrame:
    b = random_walk(n, seed)
    index = pd.DatetimeIndex(pd.to_datetime(b.t, utc=True))
    return pd.DataFrame({"open": b.o, "high": b.h, "low": b.l, "close": b.c, "volume": b.v}, index=index)


def run_indicators(inp: Path, out: Path | None = None) -> int:
    return main(["indicators", str(inp), *(["-o", str(out)] if out is not None else [])])


def check_against_talib(result: pd.DataFrame, frame: pd.DataFrame) -> None:
    close = frame["close"].to_numpy()
    for name, expected in (("sma_20", talib.SMA(close, 20)), ("ema_20", talib.EMA(close, 20))):
        got = result[name].to_numpy(dtype=np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(expected)), name
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)


def test_round_trip_of_a_to_csv_file(tmp_path: Path) -> None:
    frame = ohlcv_frame()
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(inp)  # the timestamp is the first, unnamed column
    assert inp.read_text().startswith(",open,high,low,close,volume\n")

    assert run_indicators(inp, out) == 0
    in_lines = inp.read_text().splitlines()
    out_lines = out.read_text().splitlines()
    assert out_lines[0] == in_lines[0] + "," + ",".join(DEFAULT_OUTPUTS)
    assert len(out_lines) == len(in_lines)
    for a, b in zip(in_lines[1:], out_lines[1:], strict=True):
        assert b.startswith(a + ",")  # the input columns unchanged, text for text

    result = pd.read_csv(out, index_col=0)
    assert list(result.columns) == ["open", "high", "low", "close", "volume", *DEFAULT_OUTPUTS]
    np.testing.assert_array_equal(result["close"].to_numpy(), frame["close"].to_numpy())  # full precision
    check_against_talib(result, frame)
    assert not list(tmp_path.glob(".*.tmp"))


def test_case_insensitive_headers_epoch_times_and_stdout(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    frame = ohlcv_frame(60, seed=9)
    table = frame.reset_index(drop=True)
    table.insert(0, "Timestamp", frame.index.asi8 // 1_000_000)  # epoch milliseconds
    table.columns = ["Timestamp", "OPEN", "High", "low", "Close", "VOLUME"]
    inp = tmp_path / "in.csv"
    table.to_csv(inp, index=False)

    assert run_indicators(inp) == 0
    result = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(result.columns[:6]) == ["Timestamp", "OPEN", "High", "low", "Close", "VOLUME"]
    check_against_talib(result, frame)


def test_named_date_column_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = [f"2024-01-{d:02d},{10 + d},{11 + d},{9 + d},{10.5 + d},100,x{d}" for d in range(1, 26)]
    inp.write_text("Date,Open,High,Low,Close,Volume,Note\n" + "\n".join(rows) + "\n\n", encoding="utf-8")
    assert run_indicators(inp, out) == 0
    result = pd.read_csv(out)
    assert list(result["Note"][:2]) == ["x1", "x2"]
    assert np.isnan(result["sma_20"][18]) and result["sma_20"][19] == pytest.approx(np.mean(
        [10.5 + d for d in range(1, 21)]), rel=1e-12)


def test_existing_output_is_left_alone_on_error(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text("date,open,high,low,close,volume\n2024-01-01,1,2,1,x,5\n", encoding="utf-8")
    out.write_text("previous\n", encoding="utf-8")
    assert run_indicators(inp, out) == 2
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


# --- indicators: malformed input --------------------------------------------------------------------

HEADER = "date,open,high,low,close,volume\n"
GOOD = "2024-01-01 00:00:00,10,11,9,10.5,100\n"


@pytest.mark.parametrize(("text", "line", "column"), [
    (HEADER + GOOD + "2024-01-02,10,11,9,abc,100\n", 3, "close"),
    (HEADER + GOOD + GOOD.replace("2024-01-01", "2024-01-02") + "2024-01-03,10,11,9,10.5,\n", 4, "volume"),
    (HEADER + GOOD + "2024-01-02,,11,9,10.5,100\n", 3, "open"),
    (HEADER + GOOD + "2024-13-45,10,11,9,10.5,100\n", 3, "date"),
    (HEADER + GOOD + "yesterday,10,11,9,10.5,100\n", 3, "date"),
    (HEADER + "2024-01-02,10,11,9,10.5,100\n" + GOOD, 3, "date"),  # goes back in time
    (HEADER + GOOD + "2024-01-02,10,11,-9,10.5,100\n", 3, "low"),
    (HEADER + GOOD + "2024-01-02,10,11,9,10.5,-100\n", 3, "volume"),
    (HEADER + GOOD + "2024-01-02,10,8,9,8.5,100\n", 3, "high"),
    (HEADER + GOOD + "2024-01-02,10,11,9,10.5,100,7\n", 3, "volume"),  # one field too many
    (HEADER + GOOD + "\n" + "2024-01-02,10,11,9,10.5\n", 4, "volume"),  # one too few, after a blank line
    (HEADER + GOOD + "2024-01-02,10,11,9,nan,100\n", 3, "close"),
    ("date,open,high,low,close\n" + "2024-01-01,10,11,9,10.5\n", 1, "volume"),
    ("foo,open,high,low,close,volume\n" + GOOD, 1, "timestamp"),
    ("date,open,high,low,close,close,volume\n", 1, "close"),
    ("", 1, "close"),
    ("\n\n", 1, "close"),
])
def test_malformed_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int,
                         column: str) -> None:
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text(text, encoding="utf-8")
    assert run_indicators(inp, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"line {line}" in err
    assert column in err.lower()
    assert str(inp) in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_the_first_problem_in_file_order_is_reported(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text(HEADER + GOOD + "2024-01-02,10,11,9,abc,100\n" + "2024-01-03,10\n", encoding="utf-8")
    assert run_indicators(inp, tmp_path / "out.csv") == 2
    err = capsys.readouterr().err
    assert "line 3, column 'close'" in err and "1 more line" in err


def test_missing_input_and_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_indicators(tmp_path / "nope.csv") == 2
    assert "nope.csv" in capsys.readouterr().err
    inp = tmp_path / "in.csv"
    inp.write_text(HEADER + GOOD, encoding="utf-8")
    assert run_indicators(inp, tmp_path / "missing" / "out.csv") == 2
    assert "does not exist" in capsys.readouterr().err


# --- smaller options ---------------------------------------------------------------------------------

def test_help_lists_the_theme_names_it_can_offer(capsys: pytest.CaptureFixture[str]) -> None:
    from themes import THEME_NAMES

    assert cli.THEME_CHOICES == THEME_NAMES  # the copy --help prints (to stay light) is the real list
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    theme_help = text[text.index("\n  --theme NAME"):text.index("\n  --interval I")]
    words = theme_help.replace(",", " ").split()
    assert set(THEME_NAMES) <= set(words), theme_help


def test_file_given_twice_is_refused_naming_both(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("console.app")
    fake.run_app = lambda config, **_: pytest.fail("the app must not start")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "console.app", fake)
    for argv in (["--file", "a.csv", "--file", "b.csv"], ["--headless", "--file=a.csv", "--file", "b.csv"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a.csv" in err and "b.csv" in err and "one file" in err

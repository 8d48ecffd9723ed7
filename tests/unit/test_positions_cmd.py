"""``tickdeck positions import | export``: the round trip, per feed, and one line (exit 2, nothing
imported, no traceback) for every kind of malformed file or unusable target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.cli import main

ROOT = Path(__file__).resolve().parents[2]
CANONICAL = """\
symbol,quantity,price,fee,date
AAPL,10,182.50,1.20,2026-12-01
AAPL,-3,190.125,0,2026-12-03
BTCUSDT,0.00012345,64000.01,0.0001,
MSFT,1,400,0,2026-11-30
MSFT,-1,410,0.5,2026-12-02
"""


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TICKDECK_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def write(tmp_path: Path, text: str | bytes, name: str = "lots.csv") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def export(capsys: pytest.CaptureFixture[str], *feed: str) -> str:
    capsys.readouterr()
    assert main(["positions", "export", *feed]) == 0
    return capsys.readouterr().out


def test_import_then_export_round_trips_byte_for_byte(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["positions", "import", write(tmp_path, CANONICAL)]) == 0
    err = capsys.readouterr().err
    assert "added 5 lots in 3 symbols: sim now holds 3 positions" in err
    assert export(capsys) == CANONICAL  # the configured feed (sim) by default
    assert main(["positions", "export", "--file", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text() == CANONICAL


def test_a_loose_file_reads_and_exports_in_the_canonical_form(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    loose = ("\ufeffDate , Symbol,PRICE,quantity\r\n20261201,aapl, 182.50 ,10\r\n\r\n"
             "2026-12-02T15:30:00Z,aapl,190,-4\r\n")
    assert main(["positions", "import", write(tmp_path, loose)]) == 0
    assert export(capsys) == ("symbol,quantity,price,fee,date\nAAPL,10,182.50,0,2026-12-01\n"
                              "AAPL,-4,190,0,2026-12-02\n")


def test_positions_are_kept_per_feed_and_replace_replaces(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["positions", "import", write(tmp_path, CANONICAL), "--feed", "yahoo"]) == 0
    btc = write(tmp_path, "symbol,quantity,price\nBTCUSDT,1,2\n", "btc.csv")
    assert main(["--feed", "binance", "positions", "import", btc]) == 0
    assert export(capsys) == "symbol,quantity,price,fee,date\n"  # sim holds none
    assert export(capsys, "--feed", "yahoo") == CANONICAL
    assert main(["positions", "import", write(tmp_path, "symbol,quantity,price\nNVDA,1,2\n"),
                 "--feed", "yahoo"]) == 0
    assert export(capsys, "--feed", "yahoo").endswith("NVDA,1,2,0,\n")
    assert main(["positions", "import", write(tmp_path, "symbol,quantity,price\nNVDA,1,2\n"),
                 "--feed", "yahoo", "--replace"]) == 0
    assert export(capsys, "--feed", "yahoo") == "symbol,quantity,price,fee,date\nNVDA,1,2,0,\n"
    assert export(capsys, "--feed", "binance") == "symbol,quantity,price,fee,date\nBTCUSDT,1,2,0,\n"


BAD_FILES = {
    "not utf-8": (b"symbol,quantity,price\nAAPL,1,\xff\n", "line 2, column 3: not UTF-8 text (byte 29)"),
    "empty": ("", "line 1: empty; expected a header row naming symbol, quantity, price"),
    "no header": ("AAPL,10,182.50\n", "line 1, column 1: 'AAPL' is not a column"),
    "header lacks price": ("symbol,quantity\nAAPL,1\n", "line 1: the header row lacks the column price"),
    "column twice": ("symbol,quantity,price,Price\n", "line 1, column 4: price is named twice"),
    "too many fields": ("symbol,quantity,price\nAAPL,1,2,3\n", "line 2, column 4: 4 fields, but the header"),
    "too few fields": ("symbol,quantity,price\nAAPL,1\n", "line 2, column 3 (price): missing"),
    "empty quantity": ("symbol,quantity,price\nAAPL,,2\n", "line 2, column 2 (quantity): empty"),
    "bad symbol": ("symbol,quantity,price\nA B,1,2\n", "line 2, column 1 (symbol): a symbol cannot"),
    "text for a number": ("symbol,quantity,price\nAAPL,ten,2\n",
                          "line 2, column 2 (quantity): the quantity must be a plain number"),
    "nan": ("symbol,quantity,price\nAAPL,1,nan\n", "line 2, column 3 (price): the price must be a number"),
    "zero quantity": ("symbol,quantity,price\nAAPL,0,2\n",
                      "line 2, column 2 (quantity): the quantity cannot be zero"),
    "negative price": ("symbol,price,quantity\nAAPL,-2,1\n",
                       "line 2, column 2 (price): the price cannot be negative"),
    "negative fee": ("symbol,quantity,price,fee\nAAPL,1,2,-1\n",
                     "line 2, column 4 (fee): the fee cannot be negative"),
    "thousands separator": ('symbol,quantity,price\nAAPL,"1,000",2\n', "no thousands separators"),
    "day-first date": ("symbol,quantity,price,date\nAAPL,1,2,05/12/2026\n",
                       "line 2, column 4 (date): '05/12/2026' is not a date; expected ISO 8601 dates"),
    "dates going back": ("symbol,quantity,price,date\nAAPL,1,2,2026-12-02\nMSFT,1,2,2026-01-01\n"
                         "AAPL,1,2,2026-12-01\n",
                         "line 4, column 4 (date): 2026-12-01 is before AAPL's 2026-12-02 on line 2"),
    "nul byte": ("symbol,quantity,price\nAAPL,1,2\x00\n", "line 2, column 3 (price): the price must be"),
    "unclosed quote": ('symbol,quantity,price\nAAPL,1,"2\n', "not readable as CSV"),
}


@pytest.mark.parametrize(("content", "says"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_malformed_file_is_one_line_exit_2_and_nothing_imported(
        tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str], content: str | bytes,
        says: str) -> None:
    assert main(["positions", "import", write(tmp_path, "symbol,quantity,price\nKEEP,1,1\n", "ok.csv")]) == 0
    before = (state_dir / "state.json").read_bytes()
    capsys.readouterr()
    path = write(tmp_path, content)
    assert main(["positions", "import", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tickdeck: {path}, line ") and err.count("\n") == 1, err
    assert says in err and err.rstrip().endswith("nothing was imported"), err
    assert (state_dir / "state.json").read_bytes() == before


def test_a_valid_first_part_is_not_imported_when_a_later_line_is_bad(
        tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f"S{i},1,1\n" for i in range(1000))
    assert main(["positions", "import", write(tmp_path, "symbol,quantity,price\n" + rows + "BAD,1,x\n")]) == 2
    assert "line 1002, column 3 (price)" in capsys.readouterr().err
    assert not (state_dir / "state.json").exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["positions", "import", "{tmp}/missing.csv"], "cannot import {tmp}/missing.csv: no such file"),
    (["positions", "import", "{tmp}"], "cannot import {tmp}: it is a directory"),
    (["positions", "export", "--file", "{tmp}/no/dir/out.csv"],
     "cannot export to {tmp}/no/dir/out.csv: no directory"),
    (["positions", "export", "--file", "{tmp}"], "cannot export to {tmp}: it is a directory"),
    (["positions", "export", "--feed", "nasdaq"], "argument --feed: invalid choice: 'nasdaq'"),
    (["positions"], "the following arguments are required: COMMAND"),
])
def test_a_wrong_path_or_option_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code  # type: ignore[assignment]
    assert status == 2
    err = capsys.readouterr().err
    assert says.format(tmp=tmp_path) in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_damaged_state_file_is_set_aside_said_and_the_import_goes_on(
        tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir.mkdir()
    (state_dir / "state.json").write_text('{"version": 1, "feeds": {}, "positions": {"sim": 3}}')
    assert main(["positions", "import", write(tmp_path, CANONICAL)]) == 0
    err = capsys.readouterr().err
    assert "are unusable (positions.sim must be an object)" in err and "state.json.bak" in err
    assert (state_dir / "state.json.bak").exists()
    saved = json.loads((state_dir / "state.json").read_text())["positions"]["sim"]
    assert set(saved) == {"AAPL", "BTCUSDT", "MSFT"}


def test_the_installed_command_answers_without_a_traceback(tmp_path: Path, state_dir: Path) -> None:
    bad = write(tmp_path, "symbol,quantity,price\nAAPL,1,-1\n")
    env = {**os.environ, "TICKDECK_STATE_DIR": str(state_dir)}
    out = subprocess.run([sys.executable, "-m", "console", "positions", "import", bad], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == (f"tickdeck: {bad}, line 2, column 3 (price): the price cannot be negative: -1; "
                          "nothing was imported\n")

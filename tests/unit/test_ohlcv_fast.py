"""The fast CSV path of ``engine.ohlcv_file``: on files the careful reader accepts it gives the same bits
(quoting, blank lines, CRLF, BOM, scientific notation, long decimals, padded cells, every timestamp
form); on any file with a problem it gives up, so the careful reader's message is the one shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import backtest_series
from engine.backtest import BacktestError, load_series
from engine.ohlcv_file import InputError, check_bars, fast_checked_csv, read_csv

DAY = 86_400


def same(path: Path, symbol: str = "X") -> None:
    fast = fast_checked_csv(str(path), symbol)
    careful = check_bars(read_csv(str(path)), symbol)
    assert fast is not None, "a good file takes the fast path"
    assert fast.t.dtype == careful.t.dtype and np.array_equal(fast.t, careful.t)
    for a, b in zip(fast.ohlcv, careful.ohlcv, strict=True):
        assert a.dtype == b.dtype == np.float64
        assert np.array_equal(a.view(np.int64), b.view(np.int64))  # the same bits
    assert np.array_equal(fast.codes, careful.codes) and fast.symbols == careful.symbols


def number_texts(rng: np.random.Generator, n: int) -> list[str]:
    """Prices written in every way a file may hold them."""
    x = rng.uniform(1, 1e5, n) * 10.0 ** rng.integers(-8, 9, n)
    forms = [repr, lambda v: f"{v:.17g}", lambda v: f"{v:.30f}", lambda v: f"{v:.6e}", lambda v: f"{v:E}",
             lambda v: f"{v + 1:.3f}", lambda v: str(int(v) + 1), lambda v: f"  {v!r} ", lambda v: f'"{v!r}"',
             lambda v: f"{v:.25g}", lambda v: "0." + "9" * 40, lambda v: f"{v:.40e}"]
    return [forms[i % len(forms)](float(v)) for i, v in enumerate(x)]


def bar_file(path: Path, rng: np.random.Generator, n: int, times: list[str], *, header: str =
             "timestamp,open,high,low,close,volume", newline: str = "\n", bom: bool = False,
             blank_every: int = 0, symbols: list[str] | None = None) -> Path:
    """Rows whose price cells are one text (so open = high = low = close passes every check)."""
    texts = number_texts(rng, n)
    lines = [header]
    for i in range(n):
        sym = [symbols[i]] if symbols else []
        lines.append(",".join([times[i], texts[i], texts[i], texts[i], texts[i], texts[-1 - i], *sym]))
        if blank_every and i % blank_every == 0:
            lines.append("" if i % 2 else "   ")
    path.write_bytes(("\ufeff" if bom else "").encode() + (newline.join(lines) + newline).encode())
    return path


@pytest.mark.parametrize("times", ["epoch_s", "epoch_ms", "epoch_float", "iso", "iso_quoted", "iso_z",
                                   "iso_tz", "date", "mixed"])
def test_same_bits_as_the_careful_reader(tmp_path: Path, times: str) -> None:
    rng = np.random.default_rng(len(times))
    n = 2_000
    base = 1_700_000_000 + np.arange(n) * DAY
    text = {
        "epoch_s": [str(s) for s in base],
        "epoch_ms": [str(s * 1000) for s in base],
        "epoch_float": [f"{s}.25" for s in base],
        "iso": [str(np.datetime64(int(s), "s")).replace("T", " ") for s in base],
        "iso_quoted": [f'" {np.datetime64(int(s), "s")} "' for s in base],
        "iso_z": [f"{np.datetime64(int(s) * 1000, 'ms')}Z" for s in base],
        "iso_tz": [f"{np.datetime64(int(s), 's')}+00:00" for s in base],
        "date": [str(np.datetime64(int(s), "s").astype("datetime64[D]")) for s in base],
        "mixed": [str(s) if i % 2 else str(np.datetime64(int(s), "s")) for i, s in enumerate(base)],
    }[times]
    same(bar_file(tmp_path / "a.csv", rng, n, text))
    same(bar_file(tmp_path / "b.csv", rng, n, text, newline="\r\n", bom=True, blank_every=7,
                  header="Date,Open,HIGH,low,Close,volume"))


def test_same_bits_with_symbols_extra_columns_and_an_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 1_000
    base = [str(1_700_000_000 + i * DAY) for i in range(n)]
    syms = [(" AAA ", "BBB", "123")[i % 3] for i in range(n)]
    same(bar_file(tmp_path / "s.csv", rng, n, base, symbols=syms,
                  header="time,open,high,low,close,volume,symbol"))
    path = tmp_path / "i.csv"
    path.write_text(",open,high,low,close,volume\n" + "".join(
        f"{t},1.5,2.5e0,1,2,\"100\"\n" for t in base))
    same(path)


H = "timestamp,open,high,low,close,volume\n"
HS = "timestamp,open,high,low,close,volume,symbol\n"
BAD = {
    "letters": H + "1700000000,1,2,1,x,5\n",
    "empty cell": H + "1700000000,1,2,1,,5\n",
    "nan": H + "1700000000,1,2,1,nan,5\n",
    "inf": H + "1700000000,1,2,1,inf,5\n",
    "negative": H + "1700000000,1,2,1,1.5,-5\n",
    "short row": H + "1700000000,1,2,1,1.5\n",
    "long row": H + "1700000000,1,2,1,1.5,5,9\n",
    "high below low": H + "1700000000,1,1,2,1.5,5\n",
    "outside": H + "1700000000,3,2,1,1.5,5\n",
    "zero": H + "1700000000,0,2,0,1.5,5\n",
    "bad time": H + "soon,1,2,1,1.5,5\n",
    "empty time": H + ",1,2,1,1.5,5\n",
    "out of order": H + "1700000100,1,2,1,1.5,5\n1700000000,1,2,1,1.5,5\n",
    "repeated": H + "1700000000,1,2,1,1.5,5\n1700000000,1,2,1,1.5,5\n",
    "empty symbol": HS + "1700000000,1,2,1,1.5,5, \n",
    "no rows": H + "",
    "duplicate column": "timestamp,open,high,low,close,close,volume\n1700000000,1,2,1,1.5,1.5,5\n",
    "missing column": "timestamp,open,high,low,volume\n1700000000,1,2,1,5\n",
    "empty": "",
    "long first row": H + "1700000000,1,2,1,1.5,5,9\n1700000060,1,2,1,1.5,5\n",
    "short symbol row": HS + "1700000000,1,2,1,1.5,5,A\n1700000060,1,2,1,1.5,5\n",
    "long field": HS + "1700000000,1,2,1,1.5,5," + "x" * 140_000 + "\n",
    "long quoted field": HS + '1700000000,1,2,1,1.5,5,"'
                         + ("x" * 1000 + "\n") * 140 + '"\n',
    "short row, other column": "timestamp,open,high,low,close,volume,note\n1700000000,1,2,1,1.5,5,a\n"
                               "1700000060,1,2,1,1.5,5\n",
    "bad quote": H + '1700000000,1,2,1,"1.5"x,5\n',
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_file_with_a_problem_gets_the_careful_readers_message(tmp_path: Path, name: str) -> None:
    path = tmp_path / "X.csv"
    path.write_text(BAD[name])
    assert fast_checked_csv(str(path), "X") is None
    with pytest.raises(InputError) as careful:
        bars = check_bars(read_csv(str(path)), "X")
        if not len(bars.t):
            raise InputError("no bars")
    with pytest.raises(BacktestError) as shown:
        load_series([str(path)])
    if name != "no rows":
        assert str(shown.value) == str(careful.value)


def test_the_backtest_reads_a_good_csv_without_the_careful_reader(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    path = bar_file(tmp_path / "AAA.csv", rng, 300, [str(1_700_000_000 + i * DAY) for i in range(300)])
    monkeypatch.setattr(backtest_series, "fast_checked_csv", lambda path, stem: None)
    expected = load_series([str(path)])  # by the careful reader
    monkeypatch.undo()

    def refuse(path: str) -> None:
        raise AssertionError("the careful reader read a good file")

    monkeypatch.setattr(backtest_series, "read_csv", refuse)
    series = load_series([str(path)])
    assert series.names == expected.names == ["AAA"]
    assert np.array_equal(series.t, expected.t)
    for name in ("o", "h", "l", "c", "v"):
        assert np.array_equal(getattr(series, name), getattr(expected, name))


def test_a_leading_plus_is_left_to_the_careful_reader(tmp_path: Path) -> None:
    """pandas.to_numeric reads '+0.0018587623802617014' one ulp away from float(); the careful reader's
    values are what they were, so such a file is read the careful way."""
    path = tmp_path / "P.csv"
    path.write_text(H + "1700000000,+0.0018587623802617014,0.002,0.001,0.0015,5\n"
                    "1700000060,0.0015,0.002,0.001,0.0015,5\n")
    assert fast_checked_csv(str(path), "P") is None
    careful = check_bars(read_csv(str(path)), "P")
    assert load_series([str(path)]).o.view(np.int64)[0] == careful.ohlcv[0].view(np.int64)[0]

"""Fuzzing the file loaders: OHLCV and tick files (CSV, Parquet) and recordings (.jsonl, .jsonl.gz).

Whatever a file holds, ``read_replay_file`` returns ticks the engine can use or raises ``ReplayError``,
and the ``tickdeck indicators`` reader (``read_csv`` + ``parse_bars``) returns bars or raises
``InputError``: never a pandas, pyarrow, numpy or codec exception, and the message is one line that
names the file. Inputs: random bytes; tables built from cells chosen to be awkward (numbers at and past
the float and int64 limits, NaN, dates outside 1677-2262, text with quotes, commas and newlines, empty
cells) under headers that are right, nearly right or wrong; Parquet columns of every Arrow type a
writer might use; recordings of good and mutated lines, compressed, truncated or corrupted.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.feeds.replay import Loaded, ReplayError, read_replay_file
from engine.ohlcv_file import InputError, parse_bars, read_csv
from engine.ticks import TICK_DTYPE
from tests.fuzz_settings import (
    EDGE_INTS,
    EDGE_NUMBER_TEXT,
    dumps,
    fuzz,
    invalid_utf8,
    json_values,
    mutated,
    tried,
)

T0 = 1_700_000_000  # epoch seconds

# --- cells and tables ----------------------------------------------------------------------------------

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                    st.sampled_from([str(i) for i in EDGE_INTS]), st.sampled_from(EDGE_NUMBER_TEXT),
                    st.floats(0.01, 1e6).map(lambda x: f"{x:.2f}"))
times = st.one_of(
    st.integers(T0, T0 + 10**6).map(str), st.integers(T0 * 1000, T0 * 1000 + 10**9).map(str),
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)).map(dt.datetime.isoformat),
    st.sampled_from(["2024-01-02 09:30:00", "2024-01-02T09:30:00Z", "2024-02-30", "0001-01-01", "9999-12-31",
                     "99999-01-01", "2262-04-12", "1677-09-21", "-1", "1e400", "9200000000000000000", ""]),
)
junk = st.text(max_size=12)
cells = st.one_of(numbers, times, junk, st.sampled_from(["", " ", "buy", "sell", "AAPL", "+1", "-1", "0"]))

BAR_HEADERS = (["timestamp", "open", "high", "low", "close", "volume"],
               ["Date", "Open", "High", "Low", "Close", "Volume", "symbol"],
               ["", "open", "high", "low", "close", "volume"],
               ["time", "open", "high", "low", "close"],
               ["timestamp", "open", "open", "high", "low", "close", "volume"],
               ["timestamp;open;high;low;close;volume"])
TICK_HEADERS = (["symbol", "ts", "price", "size"],
                ["symbol", "ts", "price", "size", "side", "trade_id", "recv"],
                ["SYMBOL", "TS", "Price", "size", "side"],
                ["symbol", "ts", "price"])
headers = st.one_of(st.sampled_from(BAR_HEADERS + TICK_HEADERS), st.lists(cells, min_size=1, max_size=8))


@st.composite
def good_bar_rows(draw: st.DrawFn) -> list[list[str]]:
    """A valid OHLCV series (so mutations of it reach the checks behind the parser)."""
    n = draw(st.integers(1, 6))
    step = draw(st.sampled_from([1, 60, 86_400]))
    rows = []
    for i in range(n):
        low = draw(st.floats(1, 1000))
        high = low + draw(st.floats(0, 10))
        rows.append([str(T0 + i * step), repr(low), repr(high), repr(low), repr(high),
                     repr(draw(st.floats(0, 1e9)))])
    return rows


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(headers)
    if draw(st.booleans()):
        rows = draw(st.lists(st.lists(cells, min_size=len(header) - 1, max_size=len(header) + 1), max_size=6))
    else:
        header, rows = BAR_HEADERS[0], draw(good_bar_rows())
        for _ in range(draw(st.integers(0, 2))):  # replace a few cells
            row = draw(st.sampled_from(rows))
            row[draw(st.integers(0, len(row) - 1))] = draw(cells)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerow(header)
    writer.writerows(rows)
    return draw(byte_mutations(out.getvalue().encode("utf-8", "surrogatepass")))


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data``, or with a few bytes replaced, inserted or removed, or cut short."""
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        byte = bytes([draw(st.integers(0, 255))])
        if action == "replace":
            data = data[:at] + byte + data[at + 1:]
        elif action == "insert":
            data = data[:at] + byte + data[at:]
        elif action == "delete":
            data = data[:at] + data[at + 1:]
        else:
            data = data[:at]
    return data


# --- checks --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


def replay(path: Path) -> Loaded | None:
    """Read ``path``; a ReplayError is fine when its message is one line naming the file."""
    try:
        loaded = read_replay_file(path)
    except ReplayError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert str(path) in message, message
        return None
    ticks = loaded.ticks
    assert ticks.dtype == TICK_DTYPE and len(ticks) > 0
    assert np.isfinite(ticks["price"]).all() and (ticks["price"] > 0).all()
    assert np.isfinite(ticks["size"]).all() and (ticks["size"] >= 0).all()
    assert ((ticks["sym"] >= 0) & (ticks["sym"] < len(loaded.names))).all()
    assert np.isin(ticks["side"], (-1, 0, 1)).all() and (ticks["trade_id"] >= -1).all()
    assert all(isinstance(n, str) for n in loaded.names) and loaded.span > 0
    for _reason, count, sample in loaded.bad:
        assert count > 0 and "\n" not in sample
    return loaded


@fuzz(200)
@given(data=st.one_of(csv_files(), st.binary(max_size=300)))
def test_fuzz_replay_csv(folder: Path, data: bytes) -> None:
    tried("test_fuzz_replay_csv")
    path = folder / "prices.csv"
    path.write_bytes(data)
    replay(path)


@fuzz(200)
@given(data=st.one_of(csv_files(), st.binary(max_size=300)))
def test_fuzz_indicators_csv(folder: Path, data: bytes) -> None:
    """The reader of ``tickdeck indicators``: InputError (one line, the file named, and the line when a
    cell or row is at fault) or bars in time order."""
    tried("test_fuzz_indicators_csv")
    path = folder / "in.csv"
    path.write_bytes(data)
    try:
        bars = parse_bars(read_csv(str(path)))
        bars.problems.raise_first()
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        if exc.line is not None:
            assert f"line {exc.line}" in message, message
        return
    assert (np.diff(bars.t) >= 0).all()
    for values in bars.values.values():
        assert np.isfinite(values).all() and (values >= 0).all()


# --- Parquet -------------------------------------------------------------------------------------------

def _arrow(kind: str, values: list[int]) -> pa.Array:
    n = len(values)
    if kind == "int64":
        return pa.array([max(min(v, 2**63 - 1), -(2**63)) for v in values], pa.int64())
    if kind == "uint64":
        return pa.array([v % 2**64 for v in values], pa.uint64())
    if kind == "float64":
        return pa.array([float(v) if abs(v) < 1e300 else float("nan") for v in values], pa.float64())
    if kind.startswith("timestamp"):
        _, unit, tz = [*kind.split("/"), ""][:3]
        top = (2**63 - 1) // (1000 if unit == "s" else 1)  # Parquet stores seconds as milliseconds
        return pa.array([max(min(v, top), -top) for v in values], pa.timestamp(unit, tz or None))
    if kind == "date32":
        return pa.array([max(min(v, 2**31 - 1), -(2**31)) for v in values], pa.date32())
    if kind == "string":
        return pa.array([str(v) for v in values], pa.string())
    if kind == "dictionary":
        return pa.array([str(v % 3) for v in values]).dictionary_encode()
    if kind == "bool":
        return pa.array([v % 2 == 0 for v in values], pa.bool_())
    if kind == "list":
        return pa.array([[v % 1000, v % 7] for v in values], pa.list_(pa.int64()))
    if kind == "binary":
        return pa.array([str(v).encode() for v in values], pa.binary())
    return pa.nulls(n)


ARROW_KINDS = ("int64", "uint64", "float64", "timestamp/s", "timestamp/ms", "timestamp/ns",
               "timestamp/us/UTC", "date32", "string", "dictionary", "bool", "list", "binary", "null")
COLUMN_NAMES = ("timestamp", "open", "high", "low", "close", "volume", "symbol", "ts", "price", "size",
                "side", "trade_id", "recv", "__index_level_0__", "x")
arrow_ints = st.one_of(st.integers(), st.sampled_from(EDGE_INTS), st.integers(T0, T0 + 10**6),
                       st.integers(T0 * 10**9, T0 * 10**9 + 10**12))


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(0, 5))
    names = draw(st.one_of(
        st.sampled_from([("timestamp", "open", "high", "low", "close", "volume"),
                         ("symbol", "ts", "price", "size", "side", "trade_id")]),
        st.lists(st.sampled_from(COLUMN_NAMES), max_size=8, unique=True).map(tuple)))
    columns = [_arrow(draw(st.sampled_from(ARROW_KINDS)),
                      draw(st.lists(arrow_ints, min_size=rows, max_size=rows))) for _ in names]
    out = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(columns, names=list(names)), out)
    return draw(byte_mutations(out.getvalue())) if draw(st.integers(0, 4)) == 0 else out.getvalue()


@fuzz(150)
@given(data=st.one_of(parquet_files(), st.binary(max_size=300)))
def test_fuzz_replay_parquet(folder: Path, data: bytes) -> None:
    tried("test_fuzz_replay_parquet")
    path = folder / "ticks.parquet"
    path.write_bytes(data)
    replay(path)


def _parquet(path: Path, **columns: pa.Array) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_times_outside_datetime64_ns_and_list_columns_are_replay_errors(tmp_path: Path) -> None:
    """Regression: a timestamp or date column outside 1677-2262 raised ArrowInvalid from the cast to ns, and
    a column of lists raised ValueError (numpy made it a 2-D array)."""
    ohlc = {k: pa.array([1.0, 1.0]) for k in ("open", "high", "low", "close", "volume")}
    cases = {
        "seconds": pa.array([10**15, 10**15 + 60], pa.timestamp("s")),
        "date": pa.array([dt.date(9999, 1, 1), dt.date(9999, 1, 2)], pa.date32()),
        "lists": pa.array([[1, 2], [3, 4]]),
    }
    for name, column in cases.items():
        path = _parquet(tmp_path / f"{name}.parquet", timestamp=column, **ohlc)
        with pytest.raises(ReplayError, match=r"row 1, column 'timestamp': not a timestamp") as info:
            read_replay_file(path)
        assert info.value.line == 1 and info.value.column == "timestamp"


def test_parquet_uint64_trade_ids_past_int64_are_bad_not_wrapped(tmp_path: Path) -> None:
    """Regression: a uint64 trade id of 2**64 - 1 wrapped to -1 ("no trade id") and was replayed."""
    path = _parquet(tmp_path / "t.parquet", symbol=pa.array(["A", "A"]), ts=pa.array([T0, T0 + 1]),
                    price=pa.array([1.0, 2.0]), size=pa.array([1.0, 1.0]),
                    trade_id=pa.array([2**64 - 1, 5], pa.uint64()))
    loaded = read_replay_file(path)
    assert loaded.ticks["trade_id"].tolist() == [5]
    assert [(reason, count) for reason, count, _ in loaded.bad] == [("bad trade_id", 1)]


def test_unreadable_parquet_message_is_one_line(tmp_path: Path) -> None:
    """Regression: Arrow's message for duplicate column names runs over several lines."""
    table = pa.Table.from_arrays([pa.array([1.0])] * 2, names=["price", "price"])
    path = tmp_path / "dup.parquet"
    pq.write_table(table, path)
    with pytest.raises(ReplayError, match="not a readable Parquet file") as info:
        read_replay_file(path)
    assert "\n" not in str(info.value)


def test_csv_dates_outside_datetime64_ns_are_bad_cells(tmp_path: Path) -> None:
    """Regression: pandas parses year 1 or 9999 at a coarser unit; converting it to ns raised
    OutOfBoundsDatetime out of the loader."""
    path = tmp_path / "bars.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2020-01-01,1,1,1,1,1\n9999-12-31,1,1,1,1,1\n")
    with pytest.raises(ReplayError, match=r"line 3, column 'timestamp': not a timestamp: '9999-12-31'"):
        read_replay_file(path)
    ticks = tmp_path / "ticks.csv"
    ticks.write_text("symbol,ts,price,size\nA,2020-01-01,1,1\nA,0001-01-01,1,1\n")
    loaded = read_replay_file(ticks)
    assert len(loaded.ticks) == 1 and [(r, n) for r, n, _ in loaded.bad] == [("bad ts", 1)]


# --- recordings ----------------------------------------------------------------------------------------

TICK_LINE: dict[str, Any] = {"symbol": "AAPL", "ts": T0 * 10**9, "recv": T0 * 10**9 + 5, "price": 190.5,
                             "size": 3.0, "side": 1, "trade_id": 42}


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[str, bytes]:
    lines = draw(st.lists(st.one_of(st.just(dumps(TICK_LINE)), mutated(TICK_LINE), json_values.map(dumps),
                                    st.text(max_size=40)).map(lambda s: s.encode("utf-8", "surrogatepass"))
                          | invalid_utf8(TICK_LINE), max_size=6))
    data = draw(st.sampled_from([b"\n", b"\r\n", b","])).join(lines) + draw(st.sampled_from([b"", b"\n"]))
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]  # a recording that never closed
        return "ticks.jsonl.gz", draw(byte_mutations(data))
    return "ticks.jsonl", data


@fuzz(200)
@given(file=jsonl_files() | st.tuples(st.sampled_from(["r.jsonl", "r.jsonl.gz"]), st.binary(max_size=200)))
def test_fuzz_replay_recordings(folder: Path, file: tuple[str, bytes]) -> None:
    tried("test_fuzz_replay_recordings")
    name, data = file
    path = folder / name
    path.write_bytes(data)
    replay(path)


def test_a_line_holding_two_records_is_a_bad_line(tmp_path: Path) -> None:
    """Regression: lines were decoded joined by commas, so '{...},{...}' on one line passed as two
    records, with every line number after it shifted."""
    record = dumps(TICK_LINE)
    later = dumps({**TICK_LINE, "ts": TICK_LINE["ts"] + 1, "recv": TICK_LINE["recv"] + 1})
    path = tmp_path / "r.jsonl"
    path.write_text(f"{record},{record}\n{later}\n")
    loaded = read_replay_file(path)
    assert loaded.ticks["ts"].tolist() == [TICK_LINE["ts"] + 1]
    assert [(reason, n) for reason, n, _ in loaded.bad] == [("bad json", 1)]
    assert f"{path} line 1:" in loaded.bad[0][2]


def test_a_deeply_nested_line_is_a_bad_line(tmp_path: Path) -> None:
    """Regression: msgspec raised RecursionError (not DecodeError) for a line nested past its limit."""
    path = tmp_path / "r.jsonl"
    path.write_text('{"symbol":"A","ts":1,"price":1,"size":1,"x":' + "[" * 5000 + "]" * 5000 + "}\n"
                    + dumps(TICK_LINE) + "\n")
    loaded = read_replay_file(path)
    assert len(loaded.ticks) == 1 and [(r, n) for r, n, _ in loaded.bad] == [("bad json", 1)]


def test_a_line_that_is_not_utf8_is_a_bad_line(tmp_path: Path) -> None:
    """Regression: msgspec raised UnicodeDecodeError for such a line (in a gzip recording too), and the
    replay's message for it named neither the file nor the line."""
    for name, wrap in (("r.jsonl", bytes), ("r.jsonl.gz", gzip.compress)):
        path = tmp_path / name
        bad = b'{"symbol": "\x81", "ts": 1, "price": 1, "size": 1}\n'
        path.write_bytes(wrap(bad + dumps(TICK_LINE).encode() + b"\n"))
        loaded = read_replay_file(path)
        assert len(loaded.ticks) == 1 and [(r, n) for r, n, _ in loaded.bad] == [("bad json", 1)]
        assert f"{path} line 1:" in loaded.bad[0][2]

"""``tickdeck indicators IN.csv [-o OUT.csv]``: the default indicators over an OHLCV CSV file.

The file is read and checked by ``engine.ohlcv_file`` (the replay feed reads OHLCV files with the same
code): columns open, high, low, close and volume (header names in any case) and a timestamp column named
timestamp, datetime, date or time, or first and unnamed (as ``DataFrame.to_csv`` writes an index).
Timestamps are ISO 8601 (naive ones are taken as UTC) or epoch seconds, milliseconds, microseconds or
nanoseconds (told apart by magnitude). Rows must be oldest first.

Every bar goes through the streaming engine in order (``IndicatorBank.apply_bars``, the values after
each bar recorded), exactly as a live feed drives it, so this command doubles as a check of the streaming
path against TA-Lib. The output is
the input columns unchanged followed by one column per output of ``DEFAULT_OUTPUTS``, at full float
precision, with empty cells while an indicator warms up.

The whole file is checked before anything is written. A problem is reported as one line naming the file
line (the header is line 1) and the column, and no output file is created: the output is written to a
temporary file next to it and renamed into place only when complete.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from engine.files import write_atomically
from engine.indicators.catalogue import DEFAULT_OUTPUTS
from engine.ohlcv_file import InputError, Table, parse_bars, read_csv  # cli.py catches InputError

CHUNK = 8192
"""Bars per compiled call, and rows per write: bounds the scratch (and the text held) to a few MB."""


def _indicators(t: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                v: np.ndarray) -> np.ndarray:
    """Stream the bars through an IndicatorBank; one column per DEFAULT_OUTPUTS name.

    In batches of ``CHUNK`` bars, each one compiled call (``apply_bars``) that commits the bars one after
    the other and records every output right after each: the values ``commit`` and a read of
    ``committed`` per bar give, without a Python round trip per bar."""
    from engine.indicators.bank import IndicatorBank
    from engine.precompile import compile_with_report

    compile_with_report()  # a first run compiles the kernels, with a progress line on stderr
    bank = IndicatorBank(DEFAULT_OUTPUTS, 1)
    rows = np.array([bank.row(name) for name in DEFAULT_OUTPUTS], dtype=np.int64)
    out = np.empty((len(t), len(DEFAULT_OUTPUTS)), dtype=np.float64)
    rec = np.empty((min(CHUNK, len(t)), bank.committed.shape[0]), dtype=np.float64)
    slots = np.zeros(len(rec), dtype=np.int64)
    cols = [np.ascontiguousarray(x, dtype=np.float64) for x in (o, h, lo, c, v)]
    times = np.ascontiguousarray(t, dtype=np.int64)
    for a in range(0, len(t), CHUNK):
        b = min(a + CHUNK, len(t))
        bank.apply_bars(True, True, rec, slots[: b - a], times[a:b], *(x[a:b] for x in cols))
        out[a:b] = rec[: b - a, rows]
    return out


def compute(table: Table) -> np.ndarray:
    """One row per bar, one column per DEFAULT_OUTPUTS name; raises InputError for the first bad cell."""
    bars = parse_bars(table)
    pos, values = bars.pos, bars.values
    high, low = values["high"], values["low"]
    bars.problems.flag(high < low, pos["high"], lambda i: (
        f"high {table.rows[i][pos['high']].strip()} is below low {table.rows[i][pos['low']].strip()} "
        f"({table.label(pos['low'])})"))
    bars.problems.raise_first()

    return _indicators(bars.t, values["open"], high, low, values["close"], values["volume"])


REPR_LOW, REPR_HIGH = 1e-4, 1e16
"""``repr`` writes a float without an exponent when ``REPR_LOW <= |x| < REPR_HIGH`` (or x is 0); there
msgspec's JSON float text is the same (shortest round-trip digits, same layout, checked by the tests), and
several times faster. Values outside, and infinities, are written with ``repr`` itself."""


def _format_rows(values: np.ndarray) -> list[str]:
    """Each row of ``values`` as its cells joined by commas: ``repr`` of each float, NaN as empty."""
    import msgspec

    text = msgspec.json.encode(values.tolist()).decode()
    rows = text[2:-2].split("],[") if len(values) else []
    size = np.abs(values)
    odd = ~np.isnan(values) & ((size >= REPR_HIGH) | ((size < REPR_LOW) & (values != 0)))
    for i in np.flatnonzero(odd.any(axis=1)).tolist():
        cells = rows[i].split(",")
        for j in np.flatnonzero(odd[i]).tolist():
            cells[j] = repr(float(values[i, j]))
        rows[i] = ",".join(cells)
    return [row.replace("null", "") for row in rows]  # NaN; "null" is no part of any number's text


def _write(table: Table, out: np.ndarray, stream: TextIO) -> None:
    """The input fields as they were, then the outputs: ``repr`` (shortest round-trip), NaN as empty.

    The same text as ``csv.writer`` (and ``DataFrame.to_csv``) writes row by row, built ``CHUNK`` rows at
    a time (``_format_rows``). A row whose input fields need quoting (a comma, quote or line break inside)
    goes through ``csv.writer``."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*table.header, *DEFAULT_OUTPUTS])
    width = len(table.header)
    for a in range(0, len(table.rows), CHUNK):
        lines: list[str] = []
        for fields, values in zip(table.rows[a : a + CHUNK], _format_rows(out[a : a + CHUNK]), strict=True):
            given = ",".join(fields)
            if given.count(",") != width - 1 or '"' in given or "\n" in given or "\r" in given:
                stream.write("".join(lines))
                lines = []
                writer.writerow([*fields, *(values.split(","))])
                continue
            lines.append(f"{given},{values}\n")
        stream.write("".join(lines))


def _check_output(output: str) -> Path:
    target = Path(output)
    directory = target.parent
    if not directory.is_dir():
        raise InputError(f"cannot write {output}: directory {str(directory)!r} does not exist")
    if target.is_dir():
        raise InputError(f"cannot write {output}: it is a directory")
    return target


def _write_atomically(table: Table, out: np.ndarray, target: Path) -> None:
    """Write next to ``target`` and rename into place: readers never see a partial file."""
    try:
        write_atomically(target, lambda fh: _write(table, out, fh))
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None


def run(input_path: str, output_path: str | None = None) -> int:
    """The ``indicators`` command: 0 on success; raises InputError for the user's mistakes."""
    target = None if output_path is None or output_path == "-" else _check_output(output_path)
    table = read_csv(input_path)
    out = compute(table)
    if target is None:
        _write(table, out, sys.stdout)
        sys.stdout.flush()
    else:
        _write_atomically(table, out, target)
    return 0

"""``tickdeck positions import FILE.csv | export``: the positions kept in the state file, as CSV.

- ``import FILE.csv [--feed F] [--replace]``: read the lots (format: :mod:`engine.positions.csvfile`)
  and add them, in file order, to feed F's positions (default: the configured feed), as if typed at the
  prompt; ``--replace`` replaces that feed's positions instead. All or nothing: a malformed file is one
  line naming the line and column, exit status 2, and the state file is not touched.
- ``export [--feed F] [--file PATH]``: every lot of feed F's positions as CSV, to standard output or
  to PATH (written next to it and renamed into place, so a failed export leaves nothing).

The state file is the console's (``console.state``): same directory, same atomic write. A damaged state
file is set aside as the console would, and said. Import while no console runs on that feed: a console
keeps its positions in memory and would write them over the imported ones with its next edit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # imported when a command runs: 'tickdeck --help' builds the parser and stays light
    from console.state import StateStore

__all__ = ["PositionsCommandError", "add_parser", "run"]


class PositionsCommandError(Exception):
    """A mistake in a ``tickdeck positions`` command: one line for the user."""


def add_parser(commands: argparse._SubParsersAction, feeds: tuple[str, ...]) -> None:
    positions = commands.add_parser(
        "positions", help="import or export the positions kept with your watchlists, as CSV",
        description="Positions are kept per feed in the state file, next to the watchlists. The CSV "
                    "has a header row: symbol, quantity, price, and optionally fee and date (ISO "
                    "8601). Options such as --config go before 'positions'.")
    sub = positions.add_subparsers(dest="positions_command", metavar="COMMAND", title="commands",
                                   required=True)
    imp = sub.add_parser("import", help="add the lots of a CSV file to a feed's positions (all or nothing)")
    imp.add_argument("input", metavar="FILE.csv", help="columns symbol, quantity, price[, fee][, date]")
    imp.add_argument("--replace", action="store_true",
                     help="replace the feed's positions with the file's, instead of adding to them")
    exp = sub.add_parser("export", help="write a feed's lots as CSV (stdout, or --file)")
    exp.add_argument("--file", dest="positions_file", metavar="PATH", help="write to PATH instead of stdout")
    for parser in (imp, exp):
        parser.add_argument("--feed", dest="positions_feed", metavar="NAME", choices=feeds,
                            help=f"whose positions: {', '.join(feeds)} (default: the configured feed)")


def run(args: argparse.Namespace, feed: str, store: StateStore | None = None,
        stdout: TextIO | None = None) -> int:
    """The command, for ``feed``; 0 on success; PositionsCommandError for the user's mistakes."""
    from console.state import StateStore

    store = store or StateStore.default()
    out = stdout or sys.stdout
    if args.positions_command == "import":
        return _import(Path(args.input), bool(args.replace), feed, store)
    return _export(args.positions_file, feed, store, out)


def _import(path: Path, replace: bool, feed: str, store: StateStore) -> int:
    from console.book import StateError
    from console.state import positions_change
    from engine.positions.book import Lot, PositionError
    from engine.positions.csvfile import FileProblem, read_lots

    try:
        if path.is_dir():
            raise PositionsCommandError(f"cannot import {path}: it is a directory")
        data = path.read_bytes()
    except FileNotFoundError:
        raise PositionsCommandError(f"cannot import {path}: no such file") from None
    except OSError as exc:
        raise PositionsCommandError(f"cannot import {path}: {exc.strerror or exc}") from None
    try:
        lots = read_lots(data, str(path))
    except FileProblem as exc:
        raise PositionsCommandError(f"{exc}; nothing was imported") from None
    book, warning = store.load_positions(feed)
    if warning:
        print(f"tickdeck: {warning}", file=sys.stderr)
    try:
        if replace:
            grouped: dict[str, list[Lot]] = {}
            for symbol, lot in lots:
                grouped.setdefault(symbol, []).append(lot)
            book.replace_all(grouped)
        else:
            book.add_many(lots)
        store.apply([positions_change(feed, book)])
    except (PositionError, StateError) as exc:
        raise PositionsCommandError(f"{exc}; nothing was imported") from None
    symbols = len({s for s, _ in lots})
    verb = "replaced" if replace else "added"
    print(f"{verb} {len(lots)} lots in {symbols} symbols: {feed} now holds {len(book)} positions "
          f"({store.path})", file=sys.stderr)
    return 0


def _export(target: str | None, feed: str, store: StateStore, out: TextIO) -> int:
    from engine.files import write_atomically
    from engine.positions.csvfile import book_lots, write_lots

    book, warning = store.load_positions(feed)
    if warning:
        print(f"tickdeck: {warning}", file=sys.stderr)
    lots = book_lots(book)
    if target is None:
        write_lots(out, lots)
        out.flush()
        return 0
    path = Path(target)
    if path.is_dir():
        raise PositionsCommandError(f"cannot export to {path}: it is a directory")
    if not path.parent.resolve().is_dir():
        raise PositionsCommandError(f"cannot export to {path}: no directory {path.parent}")
    def write(fh: TextIO) -> None:
        write_lots(fh, lots)

    try:
        write_atomically(path, write)
    except OSError as exc:
        raise PositionsCommandError(f"cannot export to {path}: {exc.strerror or exc}") from None
    print(f"wrote {len(lots)} lots of {feed}'s {len(book)} positions to {path}", file=sys.stderr)
    return 0

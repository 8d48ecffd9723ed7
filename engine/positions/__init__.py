"""Positions and P&L: what is held, at what cost, what it is worth, what it made today.

Pure Python and numpy (no textual, no console), shared by the console, the headless service and the CLI:

- :mod:`~engine.positions.book`: lots per symbol folded by average cost into positions, with exact
  Decimal cost basis and realized P&L, edits and undo (:class:`PositionBook`, one per feed).
- :mod:`~engine.positions.entry`: the prompt's grammar, ``AAPL 10 @ 182.50 + 1.20`` and
  ``AAPL stop 170 target 200`` (:func:`parse_entry` answers a lot, a :class:`LevelChange`, or the sentence
  saying what was expected; the symbol check is a hook).
- :mod:`~engine.positions.stored`: the JSON the state file keeps (``console.state`` writes it).
- :mod:`~engine.positions.csvfile`: the CSV ``tickdeck positions import/export`` read and write.
- :mod:`~engine.positions.valuation`: per-row figures and totals for a watchlist, vectorised, once per
  snapshot; totals are the sums of the rows as displayed.
- :mod:`~engine.positions.session`: the previous session's close per feed, for the day P&L.
- :mod:`~engine.positions.alerts`: the book as the signal detector's position rules take it (``pnl``,
  ``stop``, ``target``): per symbol floats, once per change.
- :mod:`~engine.positions.portfolio`: the headless service's positions (read from the state file,
  reloaded when it changes) valued for its status line and ``/metrics``.

How a console builds on this (the columns, the totals row and the portfolio pane)::

    book, warning = store.load_positions(feed)          # console.state; warning: a damaged file
    entry = parse_entry(text, runtime.check_symbol, today)   # Entry, LevelChange, or the message
    fill = book.add(entry.symbol, entry.lot)            # an Entry; fill.realized: what a close booked
    entry.apply(book)                                   # a LevelChange: the stop and target set or cleared
    await runtime.set_positions(book)                   # after each change: the alerts see the new book
    saver.save_positions(feed, book)                    # console.state_saver, atomic, off the loop
    h = holdings(book, watchlist_symbols)               # again only when book.version or rows change
    v = value(h, last, previous_closes(...), price_decimals(last, known_decimals))  # per snapshot
    v.unrealized[i], v.totals.unrealized, v.totals.decimals            # what to draw

``valuation`` imports numpy; the other modules only the standard library, so the CLI stays light.
"""

from engine.positions.book import Fill, Lot, Position, PositionBook, PositionError
from engine.positions.entry import Entry, LevelChange, entry_text, levels_text, parse_entry

__all__ = ["Entry", "Fill", "LevelChange", "Lot", "Position", "PositionBook", "PositionError", "entry_text",
           "levels_text", "parse_entry"]

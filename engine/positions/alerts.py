"""The book as the signal detector takes it: per symbol, floats for the position rules' kernel.

The ``pnl``, ``stop`` and ``target`` rules (``engine.signals.rules``) are evaluated in the detector's
compiled kernel, which reads one float64 column per symbol slot. :func:`figures` converts the book once
per change (:attr:`~engine.positions.book.PositionBook.version` says when), never per tick; hand the
result to ``SignalDetector.set_positions`` on the engine's thread (``Runtime.set_positions`` does both).
"""

from __future__ import annotations

from engine.positions.book import PositionBook

NAN = float("nan")


def figures(book: PositionBook) -> dict[str, tuple[float, float, float, float]]:
    """``(average cost, quantity, stop, target)`` of every open position (NaN: no stop or target). A
    flat position is left out: it holds realized P&L only, so no alert watches it."""
    out = {}
    for position in book:
        average = position.average_cost
        if average is None:
            continue
        out[position.symbol] = (float(average), float(position.quantity),
                                NAN if position.stop is None else float(position.stop),
                                NAN if position.target is None else float(position.target))
    return out

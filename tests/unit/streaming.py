"""Drive an IndicatorBank one bar at a time, as a live feed would, and collect the series."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.indicators.bank import IndicatorBank
from tests.data import Bars


def stream(names: Sequence[str], bars: Bars, slot: int = 0, capacity: int = 3) -> dict[str, np.ndarray]:
    """Committed value of each output after each bar, streamed through ``commit``."""
    bank = IndicatorBank(names, capacity)
    rows = {n: bank.row(n) for n in names}
    out = {n: np.empty(len(bars)) for n in names}
    for i, (t, o, h, l, c, v) in enumerate(bars.rows()):
        bank.commit(slot, t, o, h, l, c, v)
        for n, r in rows.items():
            out[n][i] = bank.committed[r, slot]
    return out

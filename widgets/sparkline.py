"""Text sparklines: a series drawn with the eight unicode lower blocks, one cell per point.

:func:`spark` is a pure function of its inputs (no textual, no numpy), so widgets call it while they
draw and tests check it on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, SupportsFloat, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Series: TypeAlias = "Sequence[SupportsFloat] | npt.NDArray[np.floating]"
"""A series of numbers: a list, a tuple, or a one-dimensional numpy array."""

BLOCKS = "▁▂▃▄▅▆▇█"
"""The eight levels, lowest first."""
GAP = " "
"""Drawn for a missing (NaN or infinite) point."""


def resample(values: Series, width: int, stretch: bool = False) -> list[float]:
    """At most ``width`` points spanning all of ``values``: each is the last value of its bucket.

    Taking the bucket's last value (like a bar's close) keeps the newest value as the last point, so
    the line ends where the price is. Fewer values than ``width`` are returned as they are, or, with
    ``stretch``, each repeated over its share of the ``width`` cells (oldest first, newest last).
    """
    n = len(values)
    if width <= 0 or n == 0:
        return []
    if n < width and stretch:
        return [float(values[i * n // width]) for i in range(width)]
    if n <= width:
        return [float(v) for v in values]
    return [float(values[(i + 1) * n // width - 1]) for i in range(width)]


def spark(values: Series, width: int, stretch: bool = False) -> str:
    """``values`` (oldest first) as a sparkline at most ``width`` cells wide.

    The lowest finite value is drawn ``▁`` and the highest ``█``; a flat series sits at mid-height;
    non-finite points are blanks. Longer series are resampled to span the whole history
    (see :func:`resample`); shorter ones take one cell per value, or with ``stretch`` the whole
    ``width`` (a panel whose history has only begun: the line spans its place from the first sample).
    """
    points = resample(values, width, stretch)
    finite = [v for v in points if math.isfinite(v)]
    if not finite:
        return GAP * len(points)
    low, high = min(finite), max(finite)
    top = len(BLOCKS) - 1
    if high == low:
        return "".join(BLOCKS[top // 2] if math.isfinite(v) else GAP for v in points)
    scale = top / (high - low)
    return "".join(BLOCKS[round((v - low) * scale)] if math.isfinite(v) else GAP for v in points)

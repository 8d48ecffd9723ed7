"""The event the signal detector emits: one rule firing for one symbol on one bar."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Signal:
    """A rule fired.

    ``bar_time`` is the open time of the bar that fired it (ns since the epoch); ``price`` is that bar's
    close (provisional for live rules); ``values`` holds the operands that crossed, by name, e.g.
    ``{"rsi_14": 29.1, "level": 30.0}``; ``detected_ns`` is the wall-clock time of detection.

    ``warmup`` is True when the bar came from the past (history generated, fetched or loaded to warm the
    indicators), not from the live tape: such a signal is not news, so the sinks and standard output
    skip it unless told otherwise, and the console shows it as history.

    ``position`` is set by the position rules (``pnl``, ``stop``, ``target``): the symbol's position when
    it fired, ``quantity`` (signed), ``average_cost``, ``unrealized`` (money, at ``price``),
    ``unrealized_pct`` (of the cost basis), ``stop`` and ``target`` (NaN, ``null`` in JSON: none set).
    Other signals have None, and ``to_dict`` leaves the key out, so their JSON is as it was.
    """

    symbol: str
    rule: str
    direction: Direction
    bar_time: int
    price: float
    values: dict[str, float]
    detected_ns: int
    warmup: bool = False
    position: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (non-finite floats become ``None``, so strict JSON encoders accept it)."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "rule": self.rule,
            "direction": self.direction,
            "bar_time": int(self.bar_time),
            "price": _finite(self.price),
            "values": {k: _finite(v) for k, v in self.values.items()},
            "detected_ns": int(self.detected_ns),
            "warmup": bool(self.warmup),
        }
        if self.position is not None:
            out["position"] = {k: _finite(v) for k, v in self.position.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signal:
        """The inverse of ``to_dict`` (``None`` reads back as NaN; no ``warmup`` reads as live, as a
        publisher from before the field sends it)."""
        direction = data["direction"]
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        warmup = data.get("warmup", False)
        if not isinstance(warmup, bool):
            raise ValueError(f"warmup must be true or false, got {warmup!r}")
        position = data.get("position")
        if position is not None and not isinstance(position, Mapping):
            raise ValueError(f"position must be an object, got {type(position).__name__}")
        return cls(
            symbol=str(data["symbol"]),
            rule=str(data["rule"]),
            direction=direction,
            bar_time=int(data["bar_time"]),
            price=_float(data["price"]),
            values={str(k): _float(v) for k, v in data["values"].items()},
            detected_ns=int(data["detected_ns"]),
            warmup=warmup,
            position=None if position is None else {str(k): _float(v) for k, v in position.items()},
        )


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)

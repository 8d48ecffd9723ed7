"""Signal rules: the config's rule tables, parsed into frozen ``Rule`` objects and checked at load.

Pure Python (no numpy, no numba), like the indicator catalogue, so a config can be validated before
anything is compiled. Every mistake raises ``RuleError`` naming the rule (its id, or ``rule #N``, its
1-based position in its file, when it has none), the file, the key and what is allowed.

A rule table, as the config model hands it over (one dict per rule, with the path it came from)::

    id = "rsi-oversold"      # required, unique, [a-z0-9_-]+
    kind = "cross"           # cross | volume_spike | move | price | pnl | stop | target
    a = "rsi_14"             # cross: an indicator output, a bar field (open high low close volume)
    b = 30                   #        or a number
    direction = "down"       # cross, move: up | down | both (default both)
    cooldown = "15m"         # seconds (a number) or "30s" "15m" "1h" "1d"; default 0
    symbols = ["BTCUSDT"]    # default: every symbol
    on = "close"             # close (committed values of closed bars) | live (the forming bar)
    enabled = true

``volume_spike`` takes ``window`` (>= 2) and ``zscore`` (> 0) and fires up when ``volume_zscore_<window>``
crosses above ``zscore``. ``move`` takes ``window`` (>= 1) and ``pct`` (> 0) and fires up when
``roc_<window>`` crosses above ``pct``, down when it crosses below ``-pct``. ``price`` takes exactly one
of ``above`` or ``below`` (a level the close crosses) and is evaluated live unless ``on`` says otherwise.

Three kinds watch the positions (``engine.positions``; the detector is given them per symbol slot by
``SignalDetector.set_positions``) and are evaluated live unless ``on`` says otherwise; a symbol with no
open position never fires them. ``pnl`` takes ``above`` and/or ``below``, levels in percent of the cost
basis (``above = 5``, ``below = -3``), and fires when the position's unrealized P&L % crosses one (up
through ``above``, down through ``below``; the P&L % of a short rises as the price falls, so no flip is
needed). ``stop`` and ``target`` take no keys of their own: ``stop`` fires when the close crosses the
position's stop level against it (down for a long, up for a short), ``target`` when it crosses the
target level in its favour (up for a long, down for a short); the signal's direction is the price's.

Every rule compiles to one or two ``Crossing``s (operand ``a`` crossing operand ``b``); the detector
only knows crossings, so new kinds are new parsers here, not new kernels.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from engine.indicators.catalogue import IndicatorError, resolve

RuleKind = Literal["cross", "volume_spike", "move", "price", "pnl", "stop", "target"]
RuleDirection = Literal["up", "down", "both"]
Mode = Literal["close", "live"]
Source = Literal["output", "field", "const", "position"]

BAR_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
RULE_KINDS: tuple[str, ...] = ("cross", "move", "pnl", "price", "stop", "target", "volume_spike")
POSITION_KINDS: tuple[str, ...] = ("pnl", "stop", "target")
"""Kinds that watch a position: evaluated live by default, like ``price``."""
COMMON_KEYS: tuple[str, ...] = ("id", "kind", "cooldown", "symbols", "on", "enabled")
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "cross": ("a", "b", "direction"),
    "volume_spike": ("window", "zscore"),
    "move": ("window", "pct", "direction"),
    "price": ("above", "below"),
    "pnl": ("above", "below"),
    "stop": (),
    "target": (),
}
POSITION_OPERANDS: tuple[str, ...] = ("average_cost", "quantity", "stop", "target", "pnl_pct")
"""A position operand's names, in the order of ``engine.signals.kernel``'s POS_* indices."""
LEVEL = "level"  # the name a constant operand carries in ``Signal.values``

_ID = re.compile(r"[a-z0-9_-]+")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_OPERAND_HELP = (
    "an indicator output name (e.g. rsi_14, macd_signal_12_26_9), a bar field "
    f"({', '.join(BAR_FIELDS)}) or a number"
)
_ID_HELP = "a unique name of lowercase letters, digits, '_' and '-'"


class RuleError(ValueError):
    """A rule that cannot be used. ``rule``, ``file`` and ``key`` say where; the message says why."""

    def __init__(self, rule: str, file: str, key: str | None, message: str) -> None:
        self.rule = rule
        self.file = file
        self.key = key
        where = f"{file}: {rule}" + (f", key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Operand:
    """One side of a crossing: an indicator output (canonical name), a bar field, or a constant."""

    source: Source
    name: str  # canonical output name, bar field name, or LEVEL for a constant
    value: float = math.nan  # the constant, for source == "const"

    def __str__(self) -> str:
        return f"{self.value:g}" if self.source == "const" else self.name


@dataclass(frozen=True, slots=True)
class Crossing:
    """``a`` crossing ``b`` in ``direction`` (up: from <= to >, down: from >= to <); with ``flip_short``,
    the other direction when the symbol's position is short."""

    a: Operand
    b: Operand
    direction: RuleDirection
    flip_short: bool = False

    def __str__(self) -> str:
        verb = {"up": "crosses above", "down": "crosses below", "both": "crosses"}[self.direction]
        flipped = {"up": " (below for a short)", "down": " (above for a short)", "both": ""}[self.direction]
        return f"{self.a} {verb} {self.b}" + (flipped if self.flip_short else "")


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated rule. ``symbols`` is None for every symbol; ``cooldown_ns`` is in bar time."""

    id: str
    kind: RuleKind
    crossings: tuple[Crossing, ...]
    direction: RuleDirection
    cooldown_ns: int = 0
    symbols: tuple[str, ...] | None = None
    on: Mode = "close"
    enabled: bool = True
    file: str = ""

    def applies_to(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols

    def outputs(self) -> list[str]:
        """The canonical indicator outputs this rule reads."""
        names: list[str] = []
        for c in self.crossings:
            for op in (c.a, c.b):
                if op.source == "output" and op.name not in names:
                    names.append(op.name)
        return names

    def describe(self) -> str:
        return " or ".join(str(c) for c in self.crossings)


def load_rules(tables: Iterable[tuple[Mapping[str, Any], str | os.PathLike[str]]]) -> tuple[Rule, ...]:
    """Parse every (table, file) pair, in order; ids must be unique across all files."""
    rules: list[Rule] = []
    seen: dict[str, tuple[str, int]] = {}
    positions: dict[str, int] = {}
    for table, path in tables:
        file = os.fspath(path)
        position = positions[file] = positions.get(file, 0) + 1
        rule = parse_rule(table, file, position)
        if rule.id in seen:
            first_file, first_pos = seen[rule.id]
            raise RuleError(f"rule {rule.id!r}", file, "id",
                            f"duplicate id {rule.id!r}; it is already rule #{first_pos} of {first_file}, "
                            f"and each rule needs {_ID_HELP}")
        seen[rule.id] = (file, position)
        rules.append(rule)
    return tuple(rules)


def required_outputs(rules: Iterable[Rule]) -> list[str]:
    """The canonical output names an IndicatorBank must compute for the enabled ``rules``, in order."""
    names: list[str] = []
    for rule in rules:
        if rule.enabled:
            names.extend(n for n in rule.outputs() if n not in names)
    return names


def parse_rule(table: Mapping[str, Any], file: str | os.PathLike[str], position: int = 1) -> Rule:
    """Parse one rule table; ``position`` (1-based, within ``file``) names a rule without an id."""
    return _Parser(table, os.fspath(file), position).rule()


class _Parser:
    def __init__(self, table: Mapping[str, Any], file: str, position: int) -> None:
        self.file = file
        rid = table.get("id") if isinstance(table, Mapping) else None
        self.label = f"rule {rid!r}" if isinstance(rid, str) and rid else f"rule #{position}"
        if not isinstance(table, Mapping):
            self.fail(None, f"must be a table of keys, got {type(table).__name__}")
        self.table = table

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise RuleError(self.label, self.file, key, message)

    def rule(self) -> Rule:
        t = self.table
        if "id" not in t:
            self.fail("id", f"required: {_ID_HELP}")
        rid = t["id"]
        if not isinstance(rid, str) or not _ID.fullmatch(rid):
            self.fail("id", f"must be {_ID_HELP}, got {rid!r}")
        kinds = ", ".join(RULE_KINDS)
        if "kind" not in t:
            self.fail("kind", f"required: one of {kinds}")
        kind = t["kind"]
        if kind not in RULE_KINDS:  # the tuple, not the dict: a list kind is unhashable
            self.fail("kind", f"unknown kind {kind!r}; allowed: {kinds}")
        allowed = COMMON_KEYS + KIND_KEYS[kind]
        for key in t:
            if key not in allowed:
                self.fail(str(key), f"unknown key for a {kind} rule; allowed: {', '.join(allowed)}")

        crossings, direction = getattr(self, f"_{kind}")()
        return Rule(
            id=rid,
            kind=kind,
            crossings=crossings,
            direction=direction,
            cooldown_ns=self.cooldown(),
            symbols=self.symbols(),
            on=self.choice("on", ("close", "live"),
                           "live" if kind in ("price", *POSITION_KINDS) else "close"),
            enabled=self.boolean("enabled", True),
            file=self.file,
        )

    # --- kinds ------------------------------------------------------------------------------
    def _cross(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        a, b = self.operand("a"), self.operand("b")
        if a.source == "const" and b.source == "const":
            self.fail("b", "a and b are both numbers, so they never cross; "
                           "at least one must be an indicator output or a bar field")
        if a == b:
            self.fail("b", f"a and b are both {a.name}, so they never cross; they must differ")
        direction = self.direction()
        return (Crossing(a, b, direction),), direction

    def _volume_spike(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        window = self.integer("window", 2)
        level = self.number("zscore", positive=True)
        z = Operand("output", self.output(f"volume_zscore_{window}", "window"))
        return (Crossing(z, Operand("const", LEVEL, level), "up"),), "up"

    def _move(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        window = self.integer("window", 1)
        pct = self.number("pct", positive=True)
        roc = Operand("output", self.output(f"roc_{window}", "window"))
        direction = self.direction()
        legs: list[Crossing] = []
        if direction in ("up", "both"):
            legs.append(Crossing(roc, Operand("const", LEVEL, pct), "up"))
        if direction in ("down", "both"):
            legs.append(Crossing(roc, Operand("const", LEVEL, -pct), "down"))
        return tuple(legs), direction

    def _price(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        present = [k for k in ("above", "below") if k in self.table]
        if len(present) != 1:
            key = present[-1] if present else "above"
            self.fail(key, "a price rule takes exactly one of 'above' or 'below' (a price level), "
                           f"got {len(present)}")
        key = present[0]
        level = self.number(key)
        direction: RuleDirection = "up" if key == "above" else "down"
        return (Crossing(Operand("field", "close"), Operand("const", LEVEL, level), direction),), direction

    def _pnl(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        present = [k for k in ("above", "below") if k in self.table]
        if not present:
            self.fail("above", "a pnl rule takes 'above' and/or 'below': levels of the position's "
                               "unrealized P&L in percent of its cost (e.g. above = 5, below = -3)")
        pct = Operand("position", "pnl_pct")
        legs = [Crossing(pct, Operand("const", LEVEL, self.number(key)), "up" if key == "above" else "down")
                for key in present]
        if len(legs) == 2 and legs[0].b.value <= legs[1].b.value:
            self.fail("below", f"must be below 'above' ({legs[0].b.value:g}), got {legs[1].b.value:g}")
        direction: RuleDirection = "both" if len(legs) == 2 else legs[0].direction
        return tuple(legs), direction

    def _stop(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        return (Crossing(Operand("field", "close"), Operand("position", "stop"), "down", True),), "both"

    def _target(self) -> tuple[tuple[Crossing, ...], RuleDirection]:
        return (Crossing(Operand("field", "close"), Operand("position", "target"), "up", True),), "both"

    # --- values -----------------------------------------------------------------------------
    def required(self, key: str, what: str) -> Any:
        if key not in self.table:
            self.fail(key, f"required: {what}")
        return self.table[key]

    def operand(self, key: str) -> Operand:
        value = self.required(key, _OPERAND_HELP)
        if _is_number(value):
            if not math.isfinite(value):
                self.fail(key, f"must be a finite number, got {value!r}")
            return Operand("const", LEVEL, float(value))
        if isinstance(value, str):
            text = value.strip().lower()
            if text in BAR_FIELDS:
                return Operand("field", text)
            return Operand("output", self.output(text, key))
        self.fail(key, f"must be {_OPERAND_HELP}, got {value!r}")

    def output(self, name: str, key: str) -> str:
        try:
            return resolve(name).name
        except IndicatorError as exc:
            self.fail(key, f"{exc}; allowed: {_OPERAND_HELP}")

    def integer(self, key: str, low: int) -> int:
        value = self.required(key, f"an integer >= {low}")
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, f"must be an integer >= {low}, got {value!r}")
        return value

    def number(self, key: str, positive: bool = False) -> float:
        what = "a number > 0" if positive else "a number"
        value = self.required(key, what)
        if not _is_number(value) or not math.isfinite(value) or (positive and value <= 0):
            self.fail(key, f"must be {what}, got {value!r}")
        return float(value)

    def choice(self, key: str, allowed: Sequence[str], default: str) -> Any:
        value = self.table.get(key, default)
        if value not in allowed:
            self.fail(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def direction(self) -> RuleDirection:
        result: RuleDirection = self.choice("direction", ("up", "down", "both"), "both")
        return result

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def cooldown(self) -> int:
        value = self.table.get("cooldown", 0)
        what = 'a number of seconds >= 0 or a duration such as "30s", "15m", "1h", "1d"'
        if _is_number(value):
            if not math.isfinite(value) or value < 0:
                self.fail("cooldown", f"must be {what}, got {value!r}")
            return round(value * 10**9)
        if isinstance(value, str):
            m = _DURATION.fullmatch(value.strip().lower())
            if m:
                return round(float(m.group(1)) * _UNIT_NS[m.group(2)])
        self.fail("cooldown", f"must be {what}, got {value!r}")

    def symbols(self) -> tuple[str, ...] | None:
        if "symbols" not in self.table:
            return None
        value = self.table["symbols"]
        what = "a non-empty list of symbol names (leave the key out for every symbol)"
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
            self.fail("symbols", f"must be {what}, got {value!r}")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.fail("symbols", f"must be {what}; {item!r} is not a symbol name")
        return tuple(dict.fromkeys(s.strip() for s in value))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

"""``[[sinks]]`` tables: checked at load into frozen ``SinkSpec`` objects, built into sinks at start.

Pure Python, like the rules: a config is validated before anything heavy is imported. Every mistake
raises ``SinkError`` naming the sink (``sink #N``, its 1-based position in its file, its name when it has
one, and its type), the file and the key, and saying what is allowed.

Keys every sink takes::

    type = "jsonl"            # required; known: jsonl
    name = "audit"            # optional, unique ([a-z0-9_-]+); default "<type>-<N>"
    enabled = true
    symbols = ["BTCUSDT"]     # optional filters: only signals of these symbols,
    rules = ["rsi_oversold"]  #   of these rule ids (checked against the configured rules),
    directions = ["up"]       #   in these directions (up, down)

``jsonl``: one JSON line per signal appended to a file (``engine.sinks.jsonl``)::

    path = "signals.jsonl"    # required; a relative path is relative to the config file's directory
    fsync = false             # fsync after every write: durable, slower
    max_bytes = 104857600     # rotate before the file would grow past this (default 100 MiB)
    backups = 5               # rotated files kept: path.1 (newest) .. path.5

``webhook``, ``telegram``, ``websocket`` and ``metrics`` sinks are planned; naming one is an error that
says it is not available in this version and lists the types that are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from engine.sinks.base import SignalFilter, Sink
from engine.sinks.jsonl import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, JsonlSink

SINK_TYPES: tuple[str, ...] = ("jsonl",)
PLANNED_TYPES: tuple[str, ...] = ("webhook", "telegram", "websocket", "metrics")
COMMON_KEYS: tuple[str, ...] = ("type", "name", "enabled", "symbols", "rules", "directions")
TYPE_KEYS: dict[str, tuple[str, ...]] = {"jsonl": ("path", "fsync", "max_bytes", "backups")}
DIRECTIONS: tuple[str, ...] = ("up", "down")
COMMAND_LINE = "the command line"
MAX_BACKUPS = 1000

_NAME = re.compile(r"[a-z0-9_-]+")
_NAME_HELP = "a unique name of lowercase letters, digits, '_' and '-'"


class SinkError(ValueError):
    """A sink table that cannot be used. ``sink``, ``file`` and ``key`` say where; the message says why."""

    def __init__(self, sink: str, file: str, key: str | None, message: str) -> None:
        self.sink = sink
        self.file = file
        self.key = key
        where = f"{file}: {sink}" + (f", key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class JsonlSettings:
    path: Path  # absolute
    fsync: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One validated sink: what ``build_sink`` makes, and where it was configured (for messages)."""

    type: str
    name: str
    label: str  # "sink #2 (jsonl)", as messages name it
    file: str
    filter: SignalFilter
    settings: JsonlSettings
    enabled: bool = True


def load_sinks(tables: Iterable[tuple[Mapping[str, Any], str | os.PathLike[str]]], *,
               rule_ids: Sequence[str] | None = None,
               signals_out: str | os.PathLike[str] | None = None) -> tuple[SinkSpec, ...]:
    """Check every (table, file) pair, in order, then add ``--signals-out`` (a jsonl sink of every signal).

    ``rule_ids``, when given, are the configured rules: a ``rules`` filter naming another id is an error.
    Names must be unique, and no two jsonl sinks may write the same file.
    """
    specs: list[SinkSpec] = []
    positions: dict[str, int] = {}
    for table, path in tables:
        file = os.fspath(path)
        position = positions[file] = positions.get(file, 0) + 1
        specs.append(_Parser(table, file, position, rule_ids).spec())
    if signals_out is not None:
        specs.append(signals_out_spec(signals_out))
    names: dict[str, SinkSpec] = {}
    files: dict[Path, SinkSpec] = {}
    for spec in specs:
        if spec.name in names:
            first = names[spec.name]
            raise SinkError(spec.label, spec.file, "name", f"duplicate name {spec.name!r}; {first.label} of "
                            f"{first.file} has it already, and each sink needs {_NAME_HELP}")
        names[spec.name] = spec
        if spec.enabled and spec.type == "jsonl":
            target = spec.settings.path
            if target in files:
                first = files[target]
                other = "--signals-out" if first.file == COMMAND_LINE else f"{first.label} of {first.file}"
                raise SinkError(spec.label, spec.file, "path" if spec.file != COMMAND_LINE else None,
                                f"{target} is also written by {other}; two writers would interleave their "
                                "rotations, so each jsonl sink needs its own file")
            files[target] = spec
    return tuple(specs)


def signals_out_spec(path: str | os.PathLike[str]) -> SinkSpec:
    """``--signals-out PATH``: every signal to a jsonl file with the default settings."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    return SinkSpec("jsonl", "signals-out", "--signals-out", COMMAND_LINE, SignalFilter(),
                    JsonlSettings(target))


def build_sink(spec: SinkSpec) -> Sink:
    if spec.type == "jsonl":
        s = spec.settings
        return JsonlSink(s.path, fsync=s.fsync, max_bytes=s.max_bytes, backups=s.backups, name=spec.name,
                         filter=spec.filter)
    raise ValueError(f"no sink type {spec.type!r}")  # load_sinks lets no other type through


def build_sinks(specs: Iterable[SinkSpec]) -> list[Sink]:
    """The enabled sinks, in order (not started)."""
    return [build_sink(spec) for spec in specs if spec.enabled]


class _Parser:
    def __init__(self, table: Mapping[str, Any], file: str, position: int,
                 rule_ids: Sequence[str] | None) -> None:
        self.file = file
        self.position = position
        self.rule_ids = rule_ids
        self.label = f"sink #{position}"
        if not isinstance(table, Mapping):
            self.fail(None, f"must be a table of keys, got {type(table).__name__}")
        self.table = table

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise SinkError(self.label, self.file, key, message)

    def spec(self) -> SinkSpec:
        t = self.table
        known = ", ".join(SINK_TYPES)
        if "type" not in t:
            self.fail("type", f"required: one of {known}")
        kind = t["type"]
        if isinstance(kind, str) and kind.strip():
            self.label = f"sink #{self.position} ({kind})"
        if kind in PLANNED_TYPES:
            self.fail("type", f"sink type {kind!r} is not available in this version; available: {known}")
        if kind not in SINK_TYPES:
            self.fail("type", f"unknown sink type {kind!r}; known: {known}")
        name = t.get("name", f"{kind}-{self.position}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self.fail("name", f"must be {_NAME_HELP}, got {name!r}")
        named = f" {name!r}" if "name" in t else ""
        self.label = f"sink #{self.position}{named} ({kind})"
        allowed = COMMON_KEYS + TYPE_KEYS[kind]
        for key in t:
            if key not in allowed:
                self.fail(str(key), f"unknown key for a {kind} sink; allowed: {', '.join(allowed)}")
        enabled = self.boolean("enabled", True)
        filter = SignalFilter(symbols=self.names("symbols"), rules=self.rules(), directions=self.directions())
        return SinkSpec(kind, name, self.label, self.file, filter, self._jsonl(), enabled)

    def _jsonl(self) -> JsonlSettings:
        return JsonlSettings(path=self.path("path"), fsync=self.boolean("fsync", False),
                             max_bytes=self.integer("max_bytes", DEFAULT_MAX_BYTES, 1),
                             backups=self.integer("backups", DEFAULT_BACKUPS, 0, MAX_BACKUPS))

    # --- values -------------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        if key not in self.table:
            self.fail(key, "required: the file to append signals to")
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a file path (a non-empty string), got {value!r}")
        path = Path(value.strip()).expanduser()
        if not path.is_absolute():
            config_file = Path(self.file)
            base = config_file.parent if config_file.is_file() else Path.cwd()
            path = base / path
        return Path(os.path.abspath(path))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self.table.get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high):
            what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
            self.fail(key, f"must be {what}, got {value!r}")
        return int(value)

    def names(self, key: str) -> frozenset[str] | None:
        if key not in self.table:
            return None
        value = self.table[key]
        what = f"a non-empty list of {key[:-1]} names (leave the key out for every {key[:-1]})"
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
            self.fail(key, f"must be {what}, got {value!r}")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.fail(key, f"must be {what}; {item!r} is not a {key[:-1]} name")
        return frozenset(v.strip() for v in value)

    def rules(self) -> frozenset[str] | None:
        ids = self.names("rules")
        if ids is not None and self.rule_ids is not None:
            unknown = sorted(ids - set(self.rule_ids))
            if unknown:
                self.fail("rules", f"no rule with id {', '.join(map(repr, unknown))}; "
                                   f"configured rules: {', '.join(self.rule_ids) or 'none'}")
        return ids

    def directions(self) -> frozenset[str] | None:
        values = self.names("directions")
        if values is not None:
            wrong = sorted(values - set(DIRECTIONS))
            if wrong:
                self.fail("directions", f"must list directions out of {', '.join(DIRECTIONS)}, "
                                        f"got {', '.join(map(repr, wrong))}")
        return values

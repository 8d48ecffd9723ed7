"""tickdeck's one typed configuration model, loaded from TOML with ``tomllib``.

Layers, highest precedence first; each layer overrides the ones below it key by key, so a file that
sets only ``ui.fps`` keeps every other value from the layers beneath:

1. command-line flags (``--feed``, ``--theme``, ``--interval``), passed to :func:`load_config` as
   ``overrides``: a mapping of dotted keys (``{"engine.interval": "5m"}``);
2. the environment: ``TICKDECK_<SECTION>_<KEY>``, the dotted key upper-cased with dots as underscores,
   e.g. ``TICKDECK_FEED_NAME=binance``, ``TICKDECK_UI_FPS=20``, ``TICKDECK_FEEDS_BINANCE_URL=ws://...``.
   Values are coerced to the key's type; lists are comma-separated (``TICKDECK_UI_COLUMNS=rsi_14,cci_20``)
   or a TOML array. A variable that starts like a section (``TICKDECK_UI_…``) but names no key is an
   error, as is a value of the wrong type; both messages name the variable;
3. the file given with ``--config PATH`` (it must exist);
4. the user's file, ``config.toml`` in ``platformdirs.user_config_dir("tickdeck")`` or in
   ``$TICKDECK_CONFIG_DIR`` when that is set (optional);
5. the repository's ``config.toml``, which holds exactly the built-in defaults (a test checks that the
   dataclass defaults below equal it, so a wheel install without that file behaves the same).

``[[rules]]`` tables are not merged key by key: the highest layer that has any ``[[rules]]`` (even an
empty ``rules = []``) supplies the whole list. They are kept as plain dicts, each with the file it came
from (:class:`RuleTable`); the signal module validates their contents.

File paths (``feed.record``, ``feeds.replay.file``, ``history.store``, ``bus.*``; :data:`PATH_KEYS`) are
``~``-expanded in every layer. A relative path in a config file is relative to *that file's* directory,
as the ``[[sinks]]`` paths are, so a service started from any working directory (systemd starts it in
``/``) finds and writes the same files. A relative path from a command-line flag or an environment
variable stays relative to the working directory, as a shell user expects.

Every mistake raises :class:`ConfigError` with one line that names the dotted key and where the value
came from: unknown sections and keys, wrong types (``ui.fps in /path/config.toml must be an integer,
got 'fast'``), out-of-range values, unknown indicator names, unreadable or invalid TOML, and a key of
``[keys]`` taken by two actions or kept by the console (:mod:`engine.config_keys`; the message names
both actions, the key and where each was set).

No numpy, numba or pandas here: the console loads its config before drawing its first frame.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import platformdirs

from engine.config_keys import key_clash
from engine.config_model import (  # re-exported: the model is part of this module's interface
    BUILTIN,
    THEME_NAMES,
    Check,
    Config,
    RuleTable,
    parse_duration,
    parse_interval,
)
from engine.feeds.registry import FEED_NAMES  # re-exported: the names feed.name may take
from engine.indicators.catalogue import IndicatorError

__all__ = ["BUILTIN", "FEED_NAMES", "THEME_NAMES", "Config", "ConfigError", "RuleTable", "env_var",
           "load_config", "parse_duration", "parse_interval"]

ARRAY_TABLES = ("rules", "sinks")
"""Top-level arrays of tables (``[[rules]]``, ``[[sinks]]``): kept whole from the highest layer that has
them, as (table, file) pairs; the module that owns each validates its tables."""


ENV_PREFIX = "TICKDECK_"
CONFIG_DIR_VAR = "TICKDECK_CONFIG_DIR"
CONFIG_FILENAME = "config.toml"
PATH_KEYS = ("feed.record", "feeds.replay.file", "history.store", "bus.creds_file", "bus.buffer")
"""Keys that name a file or directory: ``~``-expanded; relative to the config file's directory when set
in one. ``history.store``'s and ``bus.buffer``'s ``"auto"`` is a word, not a path (``./auto`` names a
directory)."""

class ConfigError(ValueError):
    """A configuration mistake; the message is one line naming the key and its file or variable."""

    def __init__(self, message: str, key: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.source = source


# --- schema: dotted key -> (leaf type, check), derived from the dataclasses above ------------------

@dataclass(frozen=True)
class _Key:
    path: str
    kind: Any  # int, float, str or tuple (of str)
    check: Check | None

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.path.replace(".", "_").upper()


def _walk(cls: type, prefix: str = "") -> Iterator[_Key]:
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        path = prefix + f.name
        hint = hints[f.name]
        if is_dataclass(hint):
            yield from _walk(typing.cast(type, hint), path + ".")
        elif f.name not in (*ARRAY_TABLES, "files"):
            kind = tuple if typing.get_origin(hint) is tuple else dict if typing.get_origin(hint) is dict \
                else hint
            yield _Key(path, kind, f.metadata.get("check"))


KEYS: dict[str, _Key] = {k.path: k for k in _walk(Config)}
"""Every settable dotted key (``[[rules]]`` aside)."""
_ENV_KEYS: dict[str, _Key] = {k.env_var: k for k in KEYS.values()}
_ENV_SECTION_PREFIXES = tuple(sorted({ENV_PREFIX + p.split(".", 1)[0].upper() + "_" for p in KEYS}))


def env_var(key: str) -> str:
    """The environment variable that sets dotted ``key``, e.g. ``ui.fps`` → ``TICKDECK_UI_FPS``."""
    return KEYS[key].env_var


def _type_name(kind: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            tuple: "a list of strings", dict: "a table"}[kind]


def _shown(value: object) -> str:
    return "a table" if isinstance(value, dict) else repr(value)


def _typed(key: _Key, value: object) -> tuple[bool, object]:
    """``(ok, value)`` for a TOML (or Python) value against the key's type."""
    if key.kind is bool:
        return isinstance(value, bool), value
    if key.kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if key.kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value  # type: ignore[arg-type]
    if key.kind is str:
        return isinstance(value, str), value
    if key.kind is dict:  # a table taken whole (feeds.ccxt.options: whatever the exchange takes)
        return isinstance(value, dict), value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return True, tuple(value)
    return False, value


def _from_text(key: _Key, text: str) -> tuple[bool, object]:
    """``(ok, value)`` for an environment variable or command-line string."""
    raw = text.strip()
    if key.kind is bool:
        flag = {"true": True, "1": True, "yes": True, "on": True,
                "false": False, "0": False, "no": False, "off": False}.get(raw.lower())
        return flag is not None, text if flag is None else flag
    if key.kind is int:
        try:
            return True, int(raw)
        except ValueError:
            return False, text
    if key.kind is float:
        try:
            number = float(raw)
        except ValueError:
            return False, text
        return math.isfinite(number), number
    if key.kind is str:
        return True, text
    if key.kind is dict:  # an inline TOML table: {timeout = 20000}
        try:
            return _typed(key, tomllib.loads(f"v = {raw}")["v"])
        except (tomllib.TOMLDecodeError, RecursionError):
            return False, text
    if raw.startswith("["):
        try:
            return _typed(key, tomllib.loads(f"v = {raw}")["v"])
        except (tomllib.TOMLDecodeError, RecursionError):
            return False, text
    return True, tuple(part.strip() for part in raw.split(",") if part.strip())


def _validated(key: _Key, value: object, subject: str, source: str) -> object:
    if key.check is None:
        return value
    try:
        return key.check(value)
    except IndicatorError as exc:
        raise ConfigError(f"{subject}: {exc}", key.path, source) from None
    except ValueError as exc:
        raise ConfigError(f"{subject} {exc}", key.path, source) from None


# --- layers ----------------------------------------------------------------------------------------

@dataclass
class _Layers:
    values: dict[str, object] = field(default_factory=dict)
    arrays: dict[str, tuple[RuleTable, ...]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    """Where each value of ``values`` came from (a file, a variable, the command line)."""


def _unknown(path: str, known: list[str], source: str, section: bool) -> ConfigError:
    parent, _, name = path.rpartition(".")
    close = difflib.get_close_matches(name, known, n=1)
    guess = f"{parent}.{close[0]}" if close and parent else (close or [""])[0]
    allowed = f"known: {', '.join(sorted(known))}"
    hint = f" (did you mean {guess!r}? {allowed})" if close else f" ({allowed})"
    if section:  # a quoted TOML key may hold a newline: repr keeps the message on one line
        what = f"section [{path}]" if path.isprintable() else f"section {path!r}"
    else:
        what = f"key {path!r}"
    return ConfigError(f"unknown {what} in {source}{hint}", path, source)


def _read_table(table: Mapping[str, object], prefix: str, source: str, layers: _Layers) -> None:
    """Check one TOML table against the schema and record its values as ``source``'s."""
    children = sorted({p[len(prefix):].split(".", 1)[0] for p in KEYS if p.startswith(prefix)}
                      | (set(ARRAY_TABLES) if not prefix else set()))
    for name, value in table.items():
        path = prefix + name
        if name not in children:
            raise _unknown(path, children, source, section=isinstance(value, dict))
        if path in ARRAY_TABLES:
            layers.arrays[path] = _read_array(path, value, source)
        elif path in KEYS:
            key = KEYS[path]
            ok, typed = _typed(key, value)
            if not ok:
                raise ConfigError(f"{path} in {source} must be {_type_name(key.kind)}, got {_shown(value)}",
                                  path, source)
            value = _validated(key, typed, f"{path} in {source}", source)
            layers.values[path] = _file_path(value, Path(source).parent) if path in PATH_KEYS else value
            layers.sources[path] = source
        elif isinstance(value, dict):
            _read_table(value, path + ".", source, layers)
        else:
            raise ConfigError(f"{path} in {source} must be a table ([{path}]), got {_shown(value)}",
                              path, source)


def _read_array(name: str, value: object, source: str) -> tuple[RuleTable, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{name} in {source} must be an array of tables ([[{name}]]), got {_shown(value)}",
                          name, source)
    return tuple(RuleTable(dict(v), source) for v in value)


def _file_path(value: object, base: Path | None = None) -> object:
    """A path setting ``~``-expanded and, given the directory of the file it came from, made absolute
    against it; empty (off) stays empty. Without ``base`` a relative path stays relative (to the working
    directory, where the command was started)."""
    if not isinstance(value, str) or not value.strip() or value.strip() == "auto":
        return value
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(os.path.abspath(base / path))
    return str(path)


def _read_file(path: Path, layers: _Layers) -> None:
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", source=source) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{source} is not valid TOML: arrays or tables nested too deeply",
                          source=source) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}", source=source) from None
    _read_table(data, "", source, layers)
    layers.files.append(source)


def _read_env(env: Mapping[str, str], layers: _Layers) -> None:
    for var in sorted(env):
        key = _ENV_KEYS.get(var)
        if key is None:
            if var.startswith(_ENV_SECTION_PREFIXES):
                known = sorted(_ENV_KEYS)
                close = difflib.get_close_matches(var, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"unknown setting in the environment: {var}{hint}", source=var)
            continue
        subject = f"{var} ({key.path})"
        ok, value = _from_text(key, env[var])
        if not ok:
            raise ConfigError(f"{subject} must be {_type_name(key.kind)}, got {env[var]!r}", key.path, var)
        value = _validated(key, value, subject, var)
        layers.values[key.path] = _file_path(value) if key.path in PATH_KEYS else value
        layers.sources[key.path] = var


def _read_overrides(overrides: Mapping[str, object], layers: _Layers) -> None:
    source = "the command line"
    for path, raw in overrides.items():
        if raw is None:
            continue
        key = KEYS.get(path)
        if key is None:
            raise _unknown(path, sorted(KEYS), source, section=False)
        subject = f"{path} on {source}"
        ok, value = _from_text(key, raw) if isinstance(raw, str) else _typed(key, raw)
        if not ok:
            raise ConfigError(f"{subject} must be {_type_name(key.kind)}, got {raw!r}", path, source)
        value = _validated(key, value, subject, source)
        layers.values[path] = _file_path(value) if path in PATH_KEYS else value
        layers.sources[path] = source


def repo_config_path() -> Path | None:
    """The repository's ``config.toml`` when running from a checkout; None in an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    try:
        is_checkout = 'name = "tickdeck"' in (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    path = root / CONFIG_FILENAME
    return path if is_checkout and path.is_file() else None


def user_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """``config.toml`` in ``$TICKDECK_CONFIG_DIR`` or the platform's user config directory."""
    base = env.get(CONFIG_DIR_VAR) or platformdirs.user_config_dir("tickdeck")
    return Path(base) / CONFIG_FILENAME


def _build(cls: type, values: Mapping[str, object], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for f in fields(cls):
        path = prefix + f.name
        if is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, path + ".")
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def _check_keys(config: Config, sources: Mapping[str, str], defaults: str | None) -> None:
    """Refuse two actions on one key, or an action on a key the console keeps for itself."""
    keys = dataclasses.asdict(config.keys)
    clash = key_clash(keys)
    if clash is None:
        return
    first, key, second = clash

    def where(action: str) -> str | None:  # None: the built-in default
        source = sources.get(f"keys.{action}")
        if source is None or source == defaults:
            return None
        if source.startswith(ENV_PREFIX):
            return f"set by {source}"
        return source if source == "the command line" else f"in {source}"

    if second.startswith("reserved:"):
        what = second[len("reserved:"):]
        raise ConfigError(f"keys.{first} = {keys[first]!r} {where(first) or 'by default'}: {key!r} is kept "
                          f"for {what}; choose another key", f"keys.{first}", sources.get(f"keys.{first}"))
    if where(second) is not None:  # lead with the action remapped last (the one most likely mistaken)
        first, second = second, first
    raise ConfigError(
        f"keys.{first} = {keys[first]!r} {where(first) or 'by default'} uses {key!r}, the key of "
        f"keys.{second} ({keys[second]!r} {where(second) or 'by default'}): each action needs a key of its "
        f"own; change one of them in [keys]", f"keys.{first}", sources.get(f"keys.{first}"))


def load_config(
    config_path: str | None = None,
    overrides: Mapping[str, object] = {},
    env: Mapping[str, str] = os.environ,
) -> Config:
    """Merge every layer (see the module docstring) into one validated :class:`Config`.

    ``overrides`` maps dotted keys to values from command-line flags; ``None`` values are skipped,
    strings are coerced like environment values. Raises :class:`ConfigError`.
    """
    layers = _Layers()
    repo = repo_config_path()
    if repo is not None:
        _read_file(repo, layers)
    user = user_config_path(env)
    if user.is_file():
        _read_file(user, layers)
    if config_path is not None:
        path = Path(config_path).expanduser()
        if path.is_dir():
            raise ConfigError(f"config file {config_path} is a directory", source=config_path)
        _read_file(path, layers)
    _read_env(env, layers)
    _read_overrides(overrides, layers)
    config: Config = _build(Config, layers.values)
    _check_keys(config, layers.sources, None if repo is None else str(repo))
    return dataclasses.replace(config, rules=layers.arrays.get("rules", config.rules),
                               sinks=layers.arrays.get("sinks", config.sinks), files=tuple(layers.files))

"""Fuzzing the config loader, and every invalid value of every key getting a message that says where and
what is allowed.

Fuzz: random TOML documents over the real sections and keys (values of the right type, of the wrong
type, out of range, nested, ``[[rules]]`` and ``[[sinks]]`` tables of random keys), random text and
bytes, and the repository's ``config.toml`` with a line changed, removed or added. ``load_config`` (and
then ``load_rules``/``load_sinks``, which validate the array tables) returns a config or raises its
module's error (``ConfigError``, ``RuleError``, ``SinkError``) with one line naming the file.

Systematic: the keys are found by walking the config dataclasses (independently of the loader's own
walk); for every key, values of every wrong type and values outside its range or choices are written to a
file, and the message must name the dotted key, the file and what is allowed; an unknown key and an
unknown section in every table must be named, with the keys that table does have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import KEYS, ConfigError, load_config, repo_config_path
from engine.config_model import BINANCE_KLINES, Config
from engine.feeds.binance import KLINE_INTERVALS, BinanceFeed
from engine.signals.rules import COMMON_KEYS, KIND_KEYS, RULE_KINDS, RuleError, load_rules
from engine.sinks.config import SinkError, load_sinks
from engine.ticks import SymbolTable
from tests.fuzz_settings import fuzz, tried

# --- the model, walked here ----------------------------------------------------------------------------


def leaf_keys(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """Every settable dotted key and its annotated type, by walking the dataclasses."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(leaf_keys(typing.cast(type, hint), f"{prefix}{f.name}."))
        elif f.name != "files" and (typing.get_origin(hint) is not tuple or typing.get_args(hint)[0] is str):
            out[prefix + f.name] = hint  # (a tuple of RuleTable is [[rules]] or [[sinks]], not a key)
    return out


def tables(cls: type = Config, prefix: str = "") -> dict[str, list[str]]:
    """Every table (``""`` for the top level) and the names it may hold."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "files"]
    out = {prefix.rstrip("."): names}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(tables(typing.cast(type, hints[f.name]), f"{prefix}{f.name}."))
    return out


LEAVES = leaf_keys()
TABLES = tables()


def test_the_walk_finds_exactly_the_loaders_keys() -> None:
    assert set(LEAVES) == set(KEYS) and len(LEAVES) > 30


# --- writing TOML -------------------------------------------------------------------------------------

def toml(value: Any) -> str:
    """A TOML value (inline tables and arrays); floats include inf and nan, as TOML allows."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") if not math.isfinite(value) \
            else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    pairs = (f"{json.dumps(str(k), ensure_ascii=False)} = {toml(v)}" for k, v in value.items())
    return "{" + ", ".join(pairs) + "}"


def document(values: dict[str, Any]) -> str:
    """Dotted keys (``feeds.sim.rate``) as one line each: TOML's dotted keys make the tables."""
    return "".join(f"{'.'.join(json.dumps(p) for p in key.split('.'))} = {toml(v)}\n"
                   for key, v in values.items())


text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
toml_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), text,
                         st.sampled_from(["1m", "0s", "25h", "kline_7m", "kline_1M", "max", "-1",
                                          "rsi_14", "ws://127.0.0.1:1", "rsi_1", "sma_0", "macd_1_2_3", "",
                                          " ", "trade", "shift+up"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=8)


def value_for(hint: Any) -> st.SearchStrategy[Any]:
    """Mostly the key's own type (so the range checks are reached), sometimes anything."""
    own: st.SearchStrategy[Any] = {
        bool: st.booleans(), int: st.integers(-(2**63), 2**63 - 1) | st.integers(-5, 200_000),
        float: st.floats() | st.floats(-10, 1e6),
        str: text | toml_scalars.filter(lambda v: isinstance(v, str)),
    }.get(hint, st.lists(text | st.sampled_from(["rsi_14", "cci_20", "BTCUSDT", ""]), max_size=4))
    return st.one_of(own, own, toml_values)


RULE_KEYS = sorted({*COMMON_KEYS, *(k for keys in KIND_KEYS.values() for k in keys)})
SINK_KEYS = ["type", "name", "path", "url", "host", "port", "token_env", "fsync", "max_bytes", "backups",
             "rules", "symbols", "directions", "chat_id", "fps", "max_queue", "timeout", "retries", "headers",
             "enabled", "base_url", "backoff", "max_backoff", "dead_letter", "audit", "queue"]
rule_tables = st.fixed_dictionaries({"kind": st.sampled_from(RULE_KINDS) | text}, optional={
    k: toml_values | st.sampled_from(["rsi_14", "close", "up", "15m", 30, 2.5])
    for k in RULE_KEYS if k != "kind"})
sink_tables = st.fixed_dictionaries(
    {"type": st.sampled_from(["jsonl", "webhook", "telegram", "metrics", "websocket"]) | text},
    optional={k: toml_values | st.sampled_from(["127.0.0.1", 0, 8765, "s.jsonl", "http://127.0.0.1:1", True])
              for k in SINK_KEYS if k != "type"})


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(sorted(LEAVES)), max_size=6, unique=True))
    values = {key: draw(value_for(LEAVES[key])) for key in keys}
    if draw(st.integers(0, 3)) == 0:  # a key or section nobody knows
        values[f"{draw(st.sampled_from(sorted(TABLES)))}.{draw(text)}".lstrip(".")] = draw(toml_values)
    out = document(values)
    if draw(st.booleans()):
        out += f"rules = {toml(draw(st.lists(rule_tables, max_size=3)))}\n"
    if draw(st.integers(0, 2)) == 0:
        out += f"sinks = {toml(draw(st.lists(sink_tables, max_size=2)))}\n"
    return out


REPO_LINES = (repo_config_path() or Path("config.toml")).read_text(encoding="utf-8").splitlines()


@st.composite
def mutated_repo_config(draw: st.DrawFn) -> str:
    """The repository's config.toml with a value replaced, a line removed or a line added."""
    lines = list(REPO_LINES)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["value", "value", "remove", "add", "header"]))
        if action == "value" and "=" in lines[i] and not lines[i].lstrip().startswith("#"):
            lines[i] = lines[i].split("=", 1)[0] + "= " + toml(draw(toml_values))
        elif action == "remove":
            del lines[i]
        elif action == "add":
            lines.insert(i, draw(text))
        else:
            header = draw(st.sampled_from(["[engine]", "[[rules]]", "[feeds]", "[ui.x]", "[[sinks]]"]))
            lines.insert(i, header)
    return "\n".join(lines) + "\n"


# --- the fuzz tests --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


def load(folder: Path, data: bytes) -> None:
    """Load ``data`` as the ``--config`` file, then its rules and sinks; only the named errors, one line
    each, naming the file."""
    path = folder / "config.toml"
    path.write_bytes(data)
    env = {"TICKDECK_CONFIG_DIR": str(folder / "no-user-config")}
    try:
        config = load_config(str(path), env=env)
        load_rules(config.rules)
        load_sinks(config.sinks, rule_ids=None, env=env)
    except (ConfigError, RuleError, SinkError) as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message


@fuzz(300)
@given(doc=config_documents())
def test_fuzz_config_documents(folder: Path, doc: str) -> None:
    tried("test_fuzz_config_documents")
    load(folder, doc.encode())


@fuzz(150)
@given(data=st.one_of(mutated_repo_config().map(str.encode), st.binary(max_size=200), text.map(str.encode),
                      st.integers(900, 3000).map(lambda n: b"a = " + b"[" * n + b"]" * n),
                      st.integers(900, 3000).map(lambda n: b"a = " + b"{b = " * n + b"1" + b"}" * n)))
def test_fuzz_config_bytes(folder: Path, data: bytes) -> None:
    tried("test_fuzz_config_bytes")
    load(folder, data)


ENV_VARS = [*sorted(f"TICKDECK_{k.replace('.', '_').upper()}" for k in KEYS), "TICKDECK_UI_FSP",
            "TICKDECK_FEEDS_X"]


@fuzz(200)
@given(env=st.dictionaries(st.sampled_from(ENV_VARS),
                           text | st.sampled_from(["[", "[1,", "[" * 2000, "nan", "1e400", "0x10", "yes"]),
                           max_size=4))
def test_fuzz_config_environment(folder: Path, env: dict[str, str]) -> None:
    tried("test_fuzz_config_environment")
    env = {**env, "TICKDECK_CONFIG_DIR": str(folder / "no-user-config")}
    try:
        load_config(None, env=env)
    except ConfigError as exc:
        assert "\n" not in str(exc) and exc.source in env, exc


# --- every key: a message naming it, the file, and what is allowed ---------------------------------------

WRONG_TYPES: dict[Any, list[Any]] = {
    bool: ["yes", 1, [True]],
    int: ["fast", 1.5, True, [1]],
    float: ["quick", True, math.inf, math.nan, [1.0]],
    str: [5, True, ["a"], {"a": 1}],
}
WRONG_LISTS: list[Any] = ["rsi_14", 5, [1, 2], [["a"]]]
NUMBER_PROBES = (-(10**12), -1, 0, 10**12, 10**18)
TEXT_PROBES = ("", "   ", "bogus-value", "kline_7m", "0s", "ftp://x", "1 2", "rsi_0")
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def message_for(tmp_path: Path, key: str, value: Any) -> str | None:
    """The ConfigError message for ``key = value`` in a file, or None when the value is accepted."""
    path = tmp_path / "config.toml"
    path.write_text(document({key: value}), encoding="utf-8")
    try:
        load_config(str(path), env={"TICKDECK_CONFIG_DIR": str(tmp_path / "none")})
    except ConfigError as exc:
        message = str(exc)
        assert exc.key == key and exc.source == str(path), message
        assert message.startswith(f"{key} in {path}"), message  # the dotted key, then the file
        assert "\n" not in message
        return message
    return None


def says_what_is_allowed(message: str) -> bool:
    """The message states the allowed values: a type, a range with its bounds, the choices, a form."""
    rule = message.partition(" in ")[2]
    if "known:" in rule:  # an indicator name: the catalogue's names follow
        return len(rule.partition("known:")[2].split(",")) > 5
    found = re.search(r"must (be|name|not be) (.+?)(, got .*)?$", rule)
    if found is None:
        return False
    allowed = found.group(2)
    if re.search(r"\b(between|at least|greater than)\b", allowed):
        return bool(re.search(r"\d|\bone\b", allowed))
    if "one of" in allowed:
        return allowed.count(",") >= 1
    return len(allowed.split()) >= 2 or allowed in ("empty",)


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_every_invalid_value_of_every_key_names_the_key_the_file_and_what_is_allowed(
        tmp_path: Path, key: str) -> None:
    hint = LEAVES[key]
    wrong = WRONG_TYPES.get(hint, WRONG_LISTS)
    for value in wrong:
        message = message_for(tmp_path, key, value)
        assert message is not None, f"{key} = {value!r} was accepted"
        assert says_what_is_allowed(message), message
        if hint in TYPE_NAMES:
            assert f"must be {TYPE_NAMES[hint]}" in message, message
    probes: tuple[Any, ...] = NUMBER_PROBES if hint in (int, float) else TEXT_PROBES if hint is str else (
        [""], ["rsi_0"], ["nope_42"])
    for value in probes:
        if hint is float:
            value = float(value)
        message = message_for(tmp_path, key, value)
        if message is not None:  # out of range, not a choice, not the right form
            assert says_what_is_allowed(message), message


@pytest.mark.parametrize("table", sorted(TABLES))
def test_an_unknown_key_or_section_in_every_table_is_named_with_what_the_table_holds(
        tmp_path: Path, table: str) -> None:
    path = tmp_path / "config.toml"
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "none")}
    for name, value, what in (("bogus_key", 1, "key"), ("bogus_section", {"x": 1}, "section")):
        dotted = f"{table}.{name}" if table else name
        path.write_text(document({dotted: value}), encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(str(path), env=env)
        message = str(info.value)
        named = f"unknown key {dotted!r}" if what == "key" else f"unknown section [{dotted}]"
        assert message.startswith(f"{named} in {path} ("), message
        assert info.value.key == dotted and info.value.source == str(path)
        known = message.rpartition("known: ")[2].rstrip(")").split(", ")
        assert set(TABLES[table]) <= set(known), message


def test_a_typo_gets_a_guess_and_the_known_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[ui]\nfsp = 3\n")
    with pytest.raises(ConfigError, match=r"^unknown key 'ui.fsp' in .*config.toml \(did you mean 'ui.fps'\? "
                                          r"known: columns, fps, position_columns, theme"):
        load_config(str(path), env={"TICKDECK_CONFIG_DIR": str(tmp_path / "none")})


# --- regressions -------------------------------------------------------------------------------------------

def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    """Regression: tomllib parses arrays and inline tables recursively; RecursionError escaped."""
    path = tmp_path / "config.toml"
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "none")}
    for body in ("a = " + "[" * 3000 + "]" * 3000, "[ui]\nfps = " + "{a = " * 3000 + "1" + "}" * 3000):
        path.write_text(body)
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not valid TOML: .*too deep"):
            load_config(str(path), env=env)
    with pytest.raises(ConfigError, match=r"^TICKDECK_UI_COLUMNS \(ui.columns\) must be a list of strings"):
        load_config(None, env={**env, "TICKDECK_UI_COLUMNS": "[" * 3000})


def test_the_binance_streams_the_config_accepts_are_the_ones_the_feed_accepts(tmp_path: Path) -> None:
    """Regression: ``kline_7m`` passed the config check (any number and unit) and then made
    ``BinanceFeed`` raise ValueError when the feed started."""
    assert BINANCE_KLINES == KLINE_INTERVALS  # the config model cannot import the feed (websockets, numpy)
    for interval in KLINE_INTERVALS:
        assert message_for(tmp_path, "feeds.binance.stream", f"kline_{interval}") is None
        BinanceFeed(SymbolTable(1), "ws://127.0.0.1:9", stream=f"kline_{interval}")
    for stream in ("kline_7m", "kline_2d", "kline_", "1m", "klines_1m"):
        message = message_for(tmp_path, "feeds.binance.stream", stream)
        assert message is not None and "kline_<interval>" in message and "1s, 1m, 3m" in message, stream
        with pytest.raises(ValueError):
            BinanceFeed(SymbolTable(1), "ws://127.0.0.1:9", stream=stream)


def test_a_rule_kind_that_is_not_a_string_is_a_rule_error(tmp_path: Path) -> None:
    """Regression: ``kind = []`` raised TypeError (unhashable) out of ``load_rules``."""
    path = tmp_path / "config.toml"
    path.write_text('[[rules]]\nid = "r1"\nkind = []\n')
    config = load_config(str(path), env={"TICKDECK_CONFIG_DIR": str(tmp_path / "none")})
    expected = rf"^{re.escape(str(path))}: rule 'r1', key 'kind': unknown kind \[\]; allowed: cross, move, "
    with pytest.raises(RuleError, match=expected + "pnl, price, stop, target, volume_spike$"):
        load_rules(config.rules)


def test_names_with_a_newline_stay_on_one_line(tmp_path: Path) -> None:
    """Regression: a quoted TOML key or a sink type holding a newline was put in the message as it was,
    so the one-line message ran over two."""
    path = tmp_path / "config.toml"
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "none")}
    path.write_text('["ui\\nx"]\na = 1\n')
    with pytest.raises(ConfigError, match=r"^unknown section 'ui\\nx' in ") as info:
        load_config(str(path), env=env)
    assert "\n" not in str(info.value)
    path.write_text('[[sinks]]\ntype = "0\\n"\n')
    config = load_config(str(path), env=env)
    with pytest.raises(SinkError) as sink_info:
        load_sinks(config.sinks, env=env)
    assert "\n" not in str(sink_info.value) and "sink #1, key 'type'" in str(sink_info.value)

"""The config model: five layers in order, per-key merging, and one clear error per mistake."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from engine import config as cfg
from engine.config import KEYS, Config, ConfigError, load_config, parse_interval
from engine.config_model import DEFAULT_RULES
from engine.indicators.catalogue import DEFAULT_OUTPUTS

ROOT = Path(__file__).resolve().parents[2]
REPO_TOML = ROOT / "config.toml"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose user config directory is an empty temp dir (never the real one)."""
    user = tmp_path / "user"
    user.mkdir()
    return {"TICKDECK_CONFIG_DIR": str(user), "HOME": str(tmp_path)}


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def lookup(config: Config, key: str) -> object:
    value: object = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def without_rules(config: Config) -> Config:
    return replace(config, rules=())


# --- defaults ---------------------------------------------------------------------------------------

def test_repo_config_toml_holds_exactly_the_dataclass_defaults() -> None:
    data = tomllib.loads(REPO_TOML.read_text(encoding="utf-8"))
    defaults = Config()
    for key in KEYS:
        node: object = data
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"config.toml does not set {key}"
            node = node[part]
        expected = lookup(defaults, key)
        assert (tuple(node) if isinstance(node, list) else node) == expected, key
        assert type(node if not isinstance(node, list) else tuple(node)) is type(expected), key
    assert data["rules"] == list(DEFAULT_RULES)
    assert [r.table for r in defaults.rules] == list(DEFAULT_RULES)


def test_loading_the_repo_file_gives_the_defaults(env: dict[str, str]) -> None:
    assert cfg.repo_config_path() == REPO_TOML
    config = load_config(env=env)
    assert config.files == (str(REPO_TOML),)
    assert without_rules(config) == without_rules(Config())
    assert [r.table for r in config.rules] == [r.table for r in Config().rules]
    assert {r.file for r in config.rules} == {str(REPO_TOML)}


def test_defaults_do_not_need_the_repo_file(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cfg, "repo_config_path", lambda: None)
    config = load_config(env=env)
    assert config == Config()
    assert config.files == ()
    assert config.engine.indicators == DEFAULT_OUTPUTS
    assert {r.file for r in config.rules} == {cfg.BUILTIN}


def test_defaults_pass_their_own_checks(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cfg, "repo_config_path", lambda: None)
    overrides = {key: lookup(Config(), key) for key in KEYS}
    assert load_config(overrides=overrides, env=env) == Config()


def test_default_rules_are_fresh_copies() -> None:
    Config().rules[0].table["id"] = "mutated"
    assert Config().rules[0].table["id"] == "rsi_oversold"


# --- precedence -------------------------------------------------------------------------------------

def test_five_layers_in_order(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = write(tmp_path / "repo.toml", '[ui]\nfps = 11\ntheme = "light"\n[feeds.sim]\nsymbols = 3\n')
    monkeypatch.setattr(cfg, "repo_config_path", lambda: Path(repo))
    write(Path(env["TICKDECK_CONFIG_DIR"]) / "config.toml", "[ui]\nfps = 12\n")
    given = write(tmp_path / "given.toml", "[ui]\nfps = 13\n")
    env_on = {**env, "TICKDECK_UI_FPS": "14"}
    flags = {"ui.fps": 15}

    assert load_config(given, flags, env_on).ui.fps == 15
    assert load_config(given, {}, env_on).ui.fps == 14
    assert load_config(given, {}, env).ui.fps == 13
    assert load_config(None, {}, env).ui.fps == 12
    (Path(env["TICKDECK_CONFIG_DIR"]) / "config.toml").unlink()
    assert load_config(None, {}, env).ui.fps == 11

    config = load_config(given, flags, env_on)
    # keys no higher layer sets survive from the lower ones (per-key merge)
    assert config.ui.theme == "light"
    assert config.feeds.sim.symbols == 3
    assert config.feeds.sim.seed == 7
    assert config.files == (repo, given)


def test_user_file_sets_one_key_and_keeps_the_rest(env: dict[str, str]) -> None:
    write(Path(env["TICKDECK_CONFIG_DIR"]) / "config.toml", "[ui]\nfps = 30\n")
    config = load_config(env=env)
    assert config.ui.fps == 30
    assert without_rules(config) == without_rules(replace(Config(), ui=replace(Config().ui, fps=30)))
    assert len(config.rules) == len(DEFAULT_RULES)


def test_user_config_dir_defaults_to_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cfg.platformdirs, "user_config_dir", lambda app: str(tmp_path / app))
    assert cfg.user_config_path({}) == tmp_path / "tickdeck" / "config.toml"
    assert cfg.user_config_path({"TICKDECK_CONFIG_DIR": "/x"}) == Path("/x/config.toml")


def test_highest_layer_with_rules_replaces_the_list(tmp_path: Path, env: dict[str, str]) -> None:
    user = write(Path(env["TICKDECK_CONFIG_DIR"]) / "config.toml",
                 '[[rules]]\nid = "mine"\nkind = "move"\nwindow = 3\npct = 1.0\n')
    config = load_config(env=env)
    assert config.rules == (cfg.RuleTable({"id": "mine", "kind": "move", "window": 3, "pct": 1.0}, user),)

    given = write(tmp_path / "given.toml", "rules = []\n")
    assert load_config(given, env=env).rules == ()
    no_rules = write(tmp_path / "plain.toml", "[ui]\nfps = 5\n")
    assert load_config(no_rules, env=env).rules == config.rules  # a layer without rules keeps them


def test_rule_tables_are_not_validated_here(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path / "c.toml", '[[rules]]\nwhatever = "goes"\n')
    assert load_config(path, env=env).rules[0].table == {"whatever": "goes"}


# --- mistakes in files ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "key", "words"), [
    ("[ui]\nfsp = 3\n", "ui.fsp", ["unknown key 'ui.fsp'", "did you mean 'ui.fps'"]),
    ("[uii]\nfps = 3\n", "uii", ["unknown section [uii]", "did you mean 'ui'"]),
    ("[feeds.kraken]\nurl = 'x'\n", "feeds.kraken", ["unknown section [feeds.kraken]"]),
    ("[feeds.sim]\nspeed = 1\n", "feeds.sim.speed", ["unknown key 'feeds.sim.speed'"]),
    ("fps = 3\n", "fps", ["unknown key 'fps'"]),
])
def test_unknown_keys_name_key_and_file(tmp_path: Path, env: dict[str, str], text: str, key: str,
                                        words: list[str]) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env)
    message = str(err.value)
    assert path in message
    for word in words:
        assert word in message
    assert err.value.key == key and err.value.source == path


def test_unknown_key_in_the_user_file_names_that_file(env: dict[str, str]) -> None:
    user = write(Path(env["TICKDECK_CONFIG_DIR"]) / "config.toml", "[engine]\nintervall = '5m'\n")
    with pytest.raises(ConfigError, match=r"engine\.intervall") as err:
        load_config(env=env)
    assert user in str(err.value)


def test_type_error_message(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path / "config.toml", '[ui]\nfps = "fast"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env)
    assert str(err.value) == f"ui.fps in {path} must be an integer, got 'fast'"


@pytest.mark.parametrize(("text", "words"), [
    ("[engine]\nhistory = 1.5\n", ["engine.history", "must be an integer, got 1.5"]),
    ("[ui]\nfps = true\n", ["ui.fps", "must be an integer, got True"]),
    ("[feeds.sim]\nrate = 'quick'\n", ["feeds.sim.rate", "must be a number, got 'quick'"]),
    ("[feeds.sim]\nrate = inf\n", ["feeds.sim.rate", "must be a number"]),
    ("[ui]\ncolumns = 'rsi_14'\n", ["ui.columns", "must be a list of strings"]),
    ("[ui]\ncolumns = [14]\n", ["ui.columns", "must be a list of strings"]),
    ("[feed]\nname = 3\n", ["feed.name", "must be a string, got 3"]),
    ("ui = 3\n", ["ui", "must be a table"]),
    ("[feeds]\nsim = 3\n", ["feeds.sim", "must be a table"]),
    ("[rules]\nid = 'x'\n", ["rules", "array of tables"]),
    ("[ui]\nfps = 0\n", ["ui.fps", "between 1 and 60, got 0"]),
    ("[ui]\nfps = 61\n", ["ui.fps", "between 1 and 60"]),
    ("[ui]\ntheme = ''\n", ["ui.theme", "dark, light, high-contrast, ansi16", "got ''"]),
    ("[ui]\ntheme = 'purple'\n", ["ui.theme", "dark, light, high-contrast, ansi16", "got 'purple'"]),
    ("[ui]\ntheme = 'dracula'\n", ["ui.theme", "got 'dracula'"]),  # Textual's themes are not offered
    ("[engine]\nhistory = 9\n", ["engine.history", "between 10 and 1000000"]),
    ("[engine]\nhistory = 1000001\n", ["engine.history", "between 10 and 1000000"]),
    ("[engine]\nmax_symbols = 0\n", ["engine.max_symbols", "between 1 and 100000"]),
    ("[engine]\nmax_symbols = 100001\n", ["engine.max_symbols", "between 1 and 100000"]),
    ("[engine]\ninterval = '2d'\n", ["engine.interval", "between '1s' and '1d'"]),
    ("[engine]\ninterval = 'fast'\n", ["engine.interval", "'fast'"]),
    ("[feed]\nname = 'kraken'\n", ["feed.name", "sim, replay, binance, coinbase, yahoo", "'kraken'"]),
    ("[feeds.sim]\nsymbols = 5001\n", ["feeds.sim.symbols", "between 1 and 5000"]),
    ("[feeds.sim]\nrate = 0\n", ["feeds.sim.rate", "greater than 0"]),
    ("[feeds.sim]\nseed = -1\n", ["feeds.sim.seed", "at least 0"]),
    ("[feeds.binance]\nurl = 'https://x'\n", ["feeds.binance.url", "wss:// or ws://"]),
    ("[feeds.yahoo]\nurl = 'query1'\n", ["feeds.yahoo.url", "https:// or http://"]),
    ("[engine]\nindicators = ['sma_20', 'smaa_20']\n", ["engine.indicators", "unknown indicator 'smaa_20'"]),
    ("[ui]\ncolumns = ['rsi_1']\n", ["ui.columns", "'rsi_1'", "period must be between"]),
])
def test_bad_values_name_key_and_file(tmp_path: Path, env: dict[str, str], text: str,
                                      words: list[str]) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env)
    message = str(err.value)
    assert path in message
    for word in words:
        assert word in message
    assert "\n" not in message


def test_invalid_toml_names_file_and_position(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path / "config.toml", "[ui]\nfps = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(path, env=env)
    assert path in str(err.value) and "line 2" in str(err.value)


def test_missing_or_unreadable_config_file(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.toml"), env=env)
    with pytest.raises(ConfigError, match="directory"):
        load_config(str(tmp_path), env=env)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[ui]\n")
    with pytest.raises(ConfigError, match=r"bin\.toml"):
        load_config(str(binary), env=env)


def test_indicator_names_are_canonical_and_unique(tmp_path: Path, env: dict[str, str]) -> None:
    text = '[engine]\nindicators = ["RSI", "rsi_14", "macd"]\n[ui]\ncolumns = []\n'
    path = write(tmp_path / "c.toml", text)
    config = load_config(path, env=env)
    assert config.engine.indicators == ("rsi_14", "macd_12_26_9")
    assert config.ui.columns == ()


def test_integers_are_accepted_for_floats(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path / "c.toml", "[feeds.sim]\nrate = 50\n")
    rate = load_config(path, env=env).feeds.sim.rate
    assert rate == 50.0 and isinstance(rate, float)


# --- environment and flags --------------------------------------------------------------------------

def test_env_names_follow_the_key_paths() -> None:
    assert cfg.env_var("feed.name") == "TICKDECK_FEED_NAME"
    assert cfg.env_var("ui.fps") == "TICKDECK_UI_FPS"
    assert cfg.env_var("feeds.binance.url") == "TICKDECK_FEEDS_BINANCE_URL"
    assert cfg.env_var("engine.max_symbols") == "TICKDECK_ENGINE_MAX_SYMBOLS"


def test_env_values_are_coerced(env: dict[str, str]) -> None:
    config = load_config(env={
        **env,
        "TICKDECK_FEED_NAME": "binance",
        "TICKDECK_UI_FPS": " 20 ",
        "TICKDECK_FEEDS_SIM_RATE": "250",
        "TICKDECK_FEEDS_BINANCE_URL": "ws://127.0.0.1:9443",
        "TICKDECK_UI_COLUMNS": "rsi_14, cci_20",
        "TICKDECK_ENGINE_INDICATORS": '["sma_20", "ema_20"]',
        "TICKDECK_ENGINE_INTERVAL": "5m",
        "TICKDECK_NUMBA_CACHE": "/tmp/elsewhere",  # not a config key: left alone
    })
    assert config.feed.name == "binance"
    assert config.ui.fps == 20
    assert config.feeds.sim.rate == 250.0 and isinstance(config.feeds.sim.rate, float)
    assert config.feeds.binance.url == "ws://127.0.0.1:9443"
    assert config.ui.columns == ("rsi_14", "cci_20")
    assert config.engine.indicators == ("sma_20", "ema_20")
    assert config.engine.interval_ns == 300_000_000_000


@pytest.mark.parametrize(("var", "value", "words"), [
    ("TICKDECK_UI_FPS", "fast", ["TICKDECK_UI_FPS", "must be an integer, got 'fast'"]),
    ("TICKDECK_UI_FPS", "99", ["TICKDECK_UI_FPS", "between 1 and 60"]),
    ("TICKDECK_FEEDS_SIM_RATE", "abc", ["TICKDECK_FEEDS_SIM_RATE", "must be a number"]),
    ("TICKDECK_FEEDS_SIM_RATE", "nan", ["TICKDECK_FEEDS_SIM_RATE", "must be a number"]),
    ("TICKDECK_FEED_NAME", "kraken", ["TICKDECK_FEED_NAME", "'kraken'"]),
    ("TICKDECK_UI_THEME", "purple", ["TICKDECK_UI_THEME", "'purple'", "high-contrast"]),
    ("TICKDECK_UI_COLUMNS", "rsi_14,nope", ["TICKDECK_UI_COLUMNS", "unknown indicator 'nope'"]),
    ("TICKDECK_UI_COLUMNS", "[1, 2]", ["TICKDECK_UI_COLUMNS", "list of strings"]),
    ("TICKDECK_ENGINE_INTERVAL", "1w", ["TICKDECK_ENGINE_INTERVAL", "'1w'"]),
    ("TICKDECK_UI_FSP", "20", ["TICKDECK_UI_FSP", "did you mean TICKDECK_UI_FPS"]),
    ("TICKDECK_FEEDS_SIM_SPEED", "2", ["TICKDECK_FEEDS_SIM_SPEED"]),
])
def test_bad_env_values_name_the_variable(env: dict[str, str], var: str, value: str,
                                          words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={**env, var: value})
    for word in words:
        assert word in str(err.value)


def test_overrides_take_strings_or_values(env: dict[str, str]) -> None:
    config = load_config(overrides={"engine.interval": "15s", "feed.name": "yahoo", "ui.theme": None,
                                    "feeds.sim.symbols": 12, "ui.fps": "25"}, env=env)
    assert config.engine.interval == "15s"
    assert config.feed.name == "yahoo"
    assert config.ui.theme == "dark"
    assert config.feeds.sim.symbols == 12
    assert config.ui.fps == 25


@pytest.mark.parametrize(("overrides", "words"), [
    ({"engine.interval": "7x"}, ["engine.interval", "command line", "'7x'"]),
    ({"ui.theme": "purple"}, ["ui.theme", "command line", "'purple'", "dark, light, high-contrast, ansi16"]),
    ({"ui.fps": "fast"}, ["ui.fps", "command line", "must be an integer"]),
    ({"ui.fps": 2.5}, ["ui.fps", "must be an integer"]),
    ({"ui.colour": "x"}, ["ui.colour", "unknown key"]),
])
def test_bad_overrides(env: dict[str, str], overrides: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides, env=env)
    for word in words:
        assert word in str(err.value)


# --- intervals --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1), ("5s", 5), ("15s", 15), ("30s", 30), ("1m", 60), ("5m", 300), ("15m", 900),
    ("30m", 1800), ("1h", 3600), ("4h", 14_400), ("1d", 86_400), ("90s", 90), ("24h", 86_400),
    ("1440m", 86_400), ("86400s", 86_400), ("7m", 420),
])
def test_intervals(text: str, seconds: int, env: dict[str, str]) -> None:
    assert parse_interval(text) == seconds * 1_000_000_000
    config = load_config(overrides={"engine.interval": text}, env=env)
    assert config.engine.interval_ns == seconds * 1_000_000_000


@pytest.mark.parametrize("text", ["0s", "86401s", "25h", "2d", "1M", "1", "m", "1.5m", "-1m", "1w", "",
                                  "01m", "1 m"])
def test_bad_intervals(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


def test_durations_have_no_upper_bound() -> None:
    assert cfg.parse_duration("7d") == 7 * 86_400 * 1_000_000_000


# --- import weight ----------------------------------------------------------------------------------

def test_config_imports_no_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from engine.config import load_config\n"
        "load_config(env={'TICKDECK_CONFIG_DIR': '/nonexistent'})\n"
        "print(sorted(m for m in ('numpy', 'numba', 'pandas', 'textual', 'rich') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sinks_are_kept_whole_with_their_file(tmp_path: Path) -> None:
    conf = tmp_path / "service.toml"
    conf.write_text('[[sinks]]\ntype = "jsonl"\npath = "/var/log/x.jsonl"\n\n[[sinks]]\n'
                    'type = "webhook"\nurl = "http://127.0.0.1:9/hook"\nrules = ["rsi_oversold"]\n',
                    encoding="utf-8")
    config = load_config(str(conf), env={})
    assert [t.table["type"] for t in config.sinks] == ["jsonl", "webhook"]
    assert {t.file for t in config.sinks} == {str(conf)}
    # an array the file does not set comes from a lower layer
    assert [t.table for t in config.rules] == [t.table for t in Config().rules]
    assert Config().sinks == ()
    bad = tmp_path / "bad.toml"
    bad.write_text('sinks = "stdout"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sinks in .*bad.toml must be an array of tables"):
        load_config(str(bad), env={})


# --- file paths -------------------------------------------------------------------------------------

def test_paths_in_a_config_file_are_relative_to_its_directory_and_expand_the_home(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # the working directory is not where the files are meant to be
    etc = tmp_path / "etc" / "tickdeck"
    etc.mkdir(parents=True)
    given = write(etc / "service.toml", '[feed]\nrecord = "rec/today.jsonl.gz"\n'
                                        '[feeds.replay]\nfile = "~/data/ACME.csv"\n')
    config = load_config(given, {}, env)
    assert config.feed.record == str(etc / "rec" / "today.jsonl.gz")
    assert config.feeds.replay.file == str(tmp_path / "home" / "data" / "ACME.csv")
    user = write(Path(env["TICKDECK_CONFIG_DIR"]) / "config.toml", '[feed]\nrecord = "../mine.parquet"\n')
    assert load_config(None, {}, env).feed.record == str(Path(user).parent.parent / "mine.parquet")
    relative = write(tmp_path / "etc" / "rel.toml", '[feeds.replay]\nfile = "x.csv"\n')
    monkeypatch.chdir(tmp_path / "etc")  # --config given as a relative path: its directory still counts
    replay = load_config("tickdeck/../rel.toml", {}, env).feeds.replay.file
    assert replay == str(Path(relative).parent / "x.csv")
    absolute = write(etc / "abs.toml", f'[feed]\nrecord = "{tmp_path / "abs.jsonl"}"\n')
    assert load_config(absolute, {}, env).feed.record == str(tmp_path / "abs.jsonl")
    assert load_config(None, {}, {**env, "TICKDECK_CONFIG_DIR": str(tmp_path / "none")}).feed.record == ""


def test_paths_from_flags_and_the_environment_stay_relative_to_the_working_directory(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    on_env = {**env, "TICKDECK_FEED_RECORD": "out/r.jsonl", "TICKDECK_FEEDS_REPLAY_FILE": "~/a.csv"}
    config = load_config(None, {}, on_env)
    assert config.feed.record == str(Path("out/r.jsonl"))
    assert config.feeds.replay.file == str(tmp_path / "home" / "a.csv")
    flags = load_config(None, {"feed.record": "r.parquet", "feeds.replay.file": "~/b.csv"}, env)
    assert flags.feed.record == "r.parquet"
    assert flags.feeds.replay.file == str(tmp_path / "home" / "b.csv")

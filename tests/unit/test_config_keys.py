"""``[keys]``: every spelling of a key becomes Textual's name, and a key taken twice is refused at start
with one line that names both actions, the key and the file."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Config, ConfigError, load_config
from engine.config_keys import RESERVED, key_clash, key_names

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose user config directory is an empty temp dir (never the real one)."""
    user = tmp_path / "user"
    user.mkdir()
    return {"TICKDECK_CONFIG_DIR": str(user), "HOME": str(tmp_path)}


def keys_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(f"[keys]\n{text}\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("written", "name"), [
    ("/", "slash"), ("?", "question_mark"), ("slash", "slash"), ("esc", "escape"), ("pgdn", "pagedown"),
    ("shift+↑", "shift+up"), ("→", "right"), ("-", "minus"), ("+", "plus"), ("!", "exclamation_mark"),
    ("x, delete", "x,delete"), ("ctrl+/", "ctrl+slash"), ("[", "left_square_bracket"), ("f5", "f5"),
])
def test_every_spelling_becomes_textuals_name(written: str, name: str) -> None:
    assert key_names(written) == name


@pytest.mark.parametrize("written", ["", "a,", "Ctrl+P", "shift+", "a b", "é"])
def test_what_names_no_key_is_refused(written: str) -> None:
    with pytest.raises(ValueError, match="must be key names"):
        key_names(written)


def test_the_defaults_take_no_key_twice() -> None:
    assert key_clash(dataclasses.asdict(Config().keys)) is None


def test_a_key_given_to_a_second_action_names_both_the_key_and_the_file(
        tmp_path: Path, env: dict[str, str]) -> None:
    path = keys_file(tmp_path, 'delete = "q"')
    with pytest.raises(ConfigError) as error:
        load_config(path, env=env)
    message = str(error.value)
    assert message == (f"keys.delete = 'q' in {path} uses 'q', the key of keys.quit ('q' by default): "
                       f"each action needs a key of its own; change one of them in [keys]")
    assert error.value.key == "keys.delete" and error.value.source == path


def test_two_spellings_of_one_key_clash(tmp_path: Path, env: dict[str, str]) -> None:
    path = keys_file(tmp_path, 'help = "/"')
    with pytest.raises(ConfigError, match=r"keys\.help = 'slash' in .* uses 'slash', the key of keys\.filt"):
        load_config(path, env=env)
    path = keys_file(tmp_path, 'filter = "ctrl+f"\nhelp = "/"')  # the old key freed first: fine
    assert load_config(path, env=env).keys.help == "slash"


def test_both_actions_remapped_onto_one_key_name_both_sources(tmp_path: Path, env: dict[str, str]) -> None:
    path = keys_file(tmp_path, 'sort = "x"')
    with pytest.raises(ConfigError) as error:
        load_config(path, env={**env, "TICKDECK_KEYS_PERF": "x"})
    message = str(error.value)
    assert "keys.perf = 'x' set by TICKDECK_KEYS_PERF" in message
    assert f"the key of keys.sort ('x' in {path})" in message


@pytest.mark.parametrize(("text", "key", "what"), [
    ('add = "tab"', "tab", "moving between the watchlist and the signal log"),
    ('add = "ctrl+i"', "tab", "moving between the watchlist and the signal log"),  # what tab sends
    ('sort = "ctrl+p"', "ctrl+p", "the command palette"),
    ('undo = "esc"', "escape", "closing windows and prompts"),
    ('delete = "down"', "down", "moving the cursor and scrolling"),
    ('list_1 = "f1"\ndelete = "1"', "1", "switching watchlists"),
])
def test_keys_the_console_keeps_are_refused(tmp_path: Path, env: dict[str, str], text: str, key: str,
                                            what: str) -> None:
    path = keys_file(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, env=env)
    message = str(error.value)
    assert f"{key!r} is kept for {what}" in message and path in message
    assert message.startswith("keys.")


def test_swapped_and_moved_keys_load(tmp_path: Path, env: dict[str, str]) -> None:
    path = keys_file(tmp_path, 'delete = "q"\nquit = "d"\nopen = "o,enter"\nlist_1 = "f1"\nlist_2 = "1"')
    keys = load_config(path, env=env).keys
    assert (keys.delete, keys.quit, keys.open, keys.list_2) == ("q", "d", "o,enter", "1")


def test_reserved_keys_are_names_textual_fires() -> None:
    for key in RESERVED:
        assert key_names(key) == key


def test_the_cli_refuses_a_conflict_with_one_line_and_status_2(tmp_path: Path) -> None:
    path = keys_file(tmp_path, 'delete = "q"')
    env = {"PATH": "", "HOME": str(tmp_path), "TICKDECK_CONFIG_DIR": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "console", "--config", path], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (f"tickdeck: keys.delete = 'q' in {path} uses 'q', the key of keys.quit ('q' by "
                           f"default): each action needs a key of its own; change one of them in [keys]\n")

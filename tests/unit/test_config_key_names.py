"""Key names in ``[keys]``: Textual's names, where a capital letter stands for itself (shift+letter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import CONFIG_DIR_VAR, ConfigError, load_config


def test_the_list_keys_default_to_capital_d_and_the_angle_brackets(tmp_path: Path) -> None:
    keys = load_config(env={CONFIG_DIR_VAR: str(tmp_path)}).keys
    assert (keys.delete_list, keys.move_list_left, keys.move_list_right) == (
        "D", "less_than_sign", "greater_than_sign")


@pytest.mark.parametrize("value", ["X", "shift+x", "X,delete"])
def test_a_capital_letter_is_a_key_name(tmp_path: Path, value: str) -> None:
    keys = load_config(overrides={"keys.delete_list": value}, env={CONFIG_DIR_VAR: str(tmp_path)}).keys
    assert keys.delete_list == value


@pytest.mark.parametrize("value", ["DD", "Delete", "shift+", "D+x", ""])
def test_other_capitals_are_not(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"keys\.delete_list"):
        load_config(overrides={"keys.delete_list": value}, env={CONFIG_DIR_VAR: str(tmp_path)})

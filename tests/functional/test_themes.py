"""Choosing a theme: only tickdeck's themes, from ``t``, the command palette, the config and ``--theme``;
a theme chosen in the console is remembered by every route, and ``t`` goes on from the one in force."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot

from console import cli
from console.app import TickdeckApp, build_app
from console.state import StateStore
from engine.config import CONFIG_DIR_VAR, Config
from tests.functional.support import record_notifications, wait_for
from themes import THEME_NAMES

SIZE = (100, 30)


def offered(app: TickdeckApp) -> list[str]:
    """The prompts the command palette on screen offers (empty until it has any)."""
    if not isinstance(app.screen, CommandPalette):
        return []
    commands = app.screen.query_one(CommandList)
    return [str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)]


async def open_theme_picker(app: TickdeckApp, pilot: Pilot[object]) -> None:
    """ctrl+p, then the palette's Theme command: the picker listing every theme."""
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
    await pilot.press(*"theme")
    await wait_for(pilot, lambda: any(p.startswith("Theme") for p in offered(app)), "the Theme command")
    commands = app.screen.query_one(CommandList)
    assert str(commands.get_option_at_index(commands.highlighted or 0).prompt).startswith("Theme")
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(offered(app)) >= len(THEME_NAMES), "the theme picker's list")


async def pick(app: TickdeckApp, pilot: Pilot[object], name: str) -> None:
    """Choose ``name`` in the open theme picker by typing it and pressing Enter."""
    await pilot.press(*name)
    await wait_for(pilot, lambda: offered(app)[:1] == [name], f"{name} first in the picker")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), "the picker to close")


async def test_the_palette_offers_only_tickdecks_themes(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await open_theme_picker(app, pilot)
        assert sorted(offered(app)) == sorted(THEME_NAMES)  # no dracula, catppuccin, textual-dark …
        assert sorted(app.available_themes) == sorted(THEME_NAMES)


async def test_a_theme_picked_in_the_palette_is_remembered(config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await open_theme_picker(app, pilot)
        await pick(app, pilot, "high-contrast")
        assert app.theme == "high-contrast"
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert StateStore.default().load_theme() == "high-contrast"
    again = build_app(config)  # a restart with the same state directory
    async with again.run_test(size=SIZE):
        assert again.theme == "high-contrast"


async def test_t_after_a_palette_pick_goes_on_from_it(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await open_theme_picker(app, pilot)
        await pick(app, pilot, "light")
        await pilot.press("t")
        assert app.theme == THEME_NAMES[THEME_NAMES.index("light") + 1]
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert StateStore.default().load_theme() == THEME_NAMES[THEME_NAMES.index("light") + 1]


async def test_an_unknown_remembered_theme_falls_back_with_a_warning(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state file from a version that remembered Textual's themes ("dracula") starts in the default."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text('{"version": 1, "theme": "dracula", "feeds": {}}')
    app = build_app(config)
    seen = record_notifications(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "dark"
        await wait_for(pilot, lambda: any("dracula" in text for _, text, _ in seen), "the warning")


@pytest.mark.parametrize("value", ["purple", "dracula", "textual-dark"])
def test_an_unknown_theme_in_the_config_file_exits_with_the_message(
        value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(CONFIG_DIR_VAR, str(tmp_path))  # not the user's own config file
    opened: list[Config] = []
    monkeypatch.setattr("console.app.run_app", lambda config, runtime=None, saved_theme=True: opened.append(
        config) or 0)
    path = tmp_path / "mine.toml"
    path.write_text(f'[ui]\ntheme = "{value}"\n')
    assert cli.main(["--config", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    for part in ("ui.theme", repr(value), str(path), *THEME_NAMES):
        assert part in err, (part, err)
    assert opened == []


def test_an_unknown_theme_on_the_command_line_exits_with_the_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(CONFIG_DIR_VAR, str(tmp_path))
    opened: list[Config] = []
    monkeypatch.setattr("console.app.run_app", lambda config, runtime=None, saved_theme=True: opened.append(
        config) or 0)
    assert cli.main(["--theme", "purple"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    for part in ("ui.theme", "'purple'", "command line", *THEME_NAMES):
        assert part in err, (part, err)
    assert opened == []

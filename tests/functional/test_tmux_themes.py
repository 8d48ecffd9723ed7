"""Every theme in a real terminal (tmux) at 16, 256 and 16 million colours, and ansi16 on a light
terminal: no text drawn in its background colour, and no selection bar that hides its text.

The real command runs once per theme and terminal; ``capture-pane -e`` gives each cell's colours as
the terminal received them, and :mod:`tests.functional.terminal_cells` resolves them to what that
terminal draws (its default colours, reverse video). Textual picks its colour system from the
environment the way rich does: ``COLORTERM=truecolor`` gives 16 million colours, a ``TERM`` ending in
``-256color`` 256, anything else (``TERM=screen``) the 16 ANSI colours. ``screen``'s terminfo claims 8:
its selection bars are also checked as an 8-colour terminal draws them (bright colours as plain ones).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.color import Color, ColorSystem
from textual.theme import Theme

from tests.functional.terminal_cells import DEFAULT, Cell, Terminal, parse_cells, shown, visible
from themes import THEME_NAMES, THEMES

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 0.2
WAIT_S = 240.0
"""Generous: a fresh checkout compiles the numba kernels on the first start (30-60 s)."""
MIN_BAR_CONTRAST = 2.0
"""The least contrast (WCAG ratio, 1 to 21) of text on a selection bar, in rich's ANSI palette.
Comfortable reading is 4.5 and up; below 2 the text on the bar is hard to make out (white on gold was
1.1 in high-contrast)."""

DARK = Terminal(default_fg=7, default_bg=0)
LIGHT = Terminal(default_fg=0, default_bg=7)
EIGHT = Terminal(default_fg=7, default_bg=0, bright=False)


@dataclass(frozen=True)
class Setup:
    name: str
    env: dict[str, str]
    terminal: Terminal
    window_style: str = "default"
    bars_also: Terminal | None = None
    """A second terminal the selection bars are checked on (an 8-colour one for ``TERM=screen``)."""


SETUPS = {
    "screen": Setup("screen", {"TERM": "screen"}, DARK, bars_also=EIGHT),
    "screen-256color": Setup("screen-256color", {"TERM": "screen-256color"}, DARK),
    "truecolor": Setup("truecolor", {"TERM": "tmux-256color", "COLORTERM": "truecolor"}, DARK),
    "light": Setup("light", {"TERM": "tmux-256color", "COLORTERM": "truecolor"}, LIGHT,
                   window_style="bg=white,fg=black"),
}
CASES = [(theme, setup) for theme in THEME_NAMES for setup in ("screen", "screen-256color", "truecolor")]
CASES.append(("ansi16", "light"))  # the only theme drawn in the terminal's own default colours


_SERVERS = itertools.count()


@pytest.fixture
def tmux() -> Iterator[Callable[..., str]]:
    assert shutil.which("tmux"), "tmux is needed for this test (the console's terminal test)"
    # One tmux server per test: the previous test's server may still be shutting down on its socket.
    socket = f"tickdeck-themes-{os.getpid()}-{next(_SERVERS)}"

    def run(*args: str) -> str:
        out = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 or args[0] == "capture-pane", f"tmux {args[0]}: {out.stderr}"
        return out.stdout

    yield run
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)


def capture(tmux: Callable[..., str], condition: Callable[[str], bool], what: str) -> list[list[Cell]]:
    """The screen's cells, once its text meets ``condition``."""
    deadline = time.monotonic() + WAIT_S
    text = ""
    while time.monotonic() < deadline:
        text = tmux("capture-pane", "-p", "-t", "t")
        if condition(text):
            return parse_cells(tmux("capture-pane", "-e", "-p", "-t", "t"))
        time.sleep(STEP_S)
    raise AssertionError(f"timed out waiting for {what}; the screen was:\n{text}")


def text_of(row: list[Cell]) -> str:
    return "".join(cell.char for cell in row)


def line_index(rows: list[list[Cell]], start: str) -> int:
    return next(i for i, row in enumerate(rows) if text_of(row).startswith(start))


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    def luminance(rgb: tuple[int, int, int]) -> float:
        def channel(v: int) -> float:
            c = v / 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (channel(v) for v in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def unreadable(rows: list[list[Cell]], terminal: Terminal) -> list[str]:
    """Every visible character drawn in its own background colour, as 'row:col char'."""
    return [f"{y}:{x} {cell.char!r}" for y, row in enumerate(rows) for x, cell in enumerate(row)
            if visible(cell.char) and len(set(shown(cell, terminal))) == 1]


def check_bar(rows: list[list[Cell]], y: int, what: str, setup: Setup, *, stands_out: bool = True) -> None:
    """Row ``y`` is a selection bar whose text reads on it, and (``stands_out``) whose background is not
    the one of the row below it. Contrast is checked where the bar has a colour of its own: text on the
    terminal's default background is the terminal palette's business (ansi16's unfocused cursor is an
    underline there)."""
    row = [cell for cell in rows[y] if visible(cell.char)]
    assert row, f"{what}: nothing on row {y}"
    for terminal in (setup.terminal, setup.bars_also):
        if terminal is None:
            continue
        for cell in row:
            fg, bg = shown(cell, terminal)
            assert fg != bg, f"{what}: {cell.char!r} drawn in its background colour {bg} ({terminal})"
    for cell in row:
        if (cell.fg if cell.reverse else cell.bg) == DEFAULT:
            continue
        fg, bg = shown(cell, setup.terminal)
        ratio = contrast(fg, bg)
        assert ratio >= MIN_BAR_CONTRAST, f"{what}: {cell.char!r} {fg} on {bg}, contrast {ratio:.2f}"
    if stands_out:
        bar = {shown(cell, setup.terminal)[1] for cell in rows[y]}
        below = {shown(cell, setup.terminal)[1] for cell in rows[y + 1]}
        assert not bar <= below, (f"{what}: the bar's background {bar} is the row below's {below}:\n"
                                  f"{text_of(rows[y])}\n{text_of(rows[y + 1])}")


@pytest.mark.parametrize(("theme", "setup_name"), CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_every_theme_is_readable_in_a_real_terminal(tmux: Callable[..., str], tmp_path: Path,
                                                    theme: str, setup_name: str) -> None:
    setup = SETUPS[setup_name]
    config = tmp_path / "config"
    config.mkdir()
    env = " ".join(f"{k}={v}" for k, v in setup.env.items())
    command = (f"cd {ROOT} && env -u COLORTERM -u NO_COLOR -u TEXTUAL_COLOR_SYSTEM {env} "
               f"TICKDECK_STATE_DIR={tmp_path / 'state'} TICKDECK_CONFIG_DIR={config} "
               f"{sys.executable} -m console --theme {theme} --interval 1s; sleep 30")
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command)
    tmux("set-option", "-t", "t", "window-style", setup.window_style)

    rows = capture(tmux, lambda s: "live" in s and "\n AAPL " in s and "Signals" in s,
                   "the watchlist on a live feed")
    assert unreadable(rows, setup.terminal) == []
    check_bar(rows, line_index(rows, " AAPL "), "the watchlist's cursor row", setup)
    check_bar(rows, line_index(rows, " 1 Main"), "the active list's tab", setup, stands_out=False)

    tmux("send-keys", "-t", "t", "Tab")  # the signal log takes focus; the watchlist's cursor is blurred
    rows = capture(tmux, lambda s: "Go to symbol" in s, "the signal log's keys in the footer")
    assert unreadable(rows, setup.terminal) == []
    check_bar(rows, line_index(rows, "─Signals") + 1, "the signal log's selected row", setup)
    check_bar(rows, line_index(rows, " AAPL "), "the watchlist's unfocused cursor row", setup,
              stands_out=False)
    tmux("send-keys", "-t", "t", "q")


def nearest(colour: str, system: ColorSystem) -> int | None:
    return Color.parse(colour).downgrade(system).number


@pytest.mark.parametrize("theme", [t for t in THEMES if not t.ansi], ids=lambda t: t.name)
@pytest.mark.parametrize("system", [ColorSystem.STANDARD, ColorSystem.EIGHT_BIT], ids=["16", "256"])
def test_rises_and_falls_keep_their_own_colours_without_truecolor(theme: Theme, system: ColorSystem) -> None:
    """What rich writes for a theme's up and down colours on a terminal with fewer colours: two
    different colours, neither the background's (Textual's tinted defaults both became white)."""
    colours = {**theme.to_color_system().generate(), **theme.variables}  # as App.get_css_variables
    up, down = nearest(colours["text-success"], system), nearest(colours["text-error"], system)
    surface = nearest(colours["surface"], system)
    assert len({up, down, surface}) == 3, (up, down, surface)
    if system == ColorSystem.STANDARD:
        assert up in (2, 10) and down in (1, 9), (up, down)  # green and red, as in truecolor

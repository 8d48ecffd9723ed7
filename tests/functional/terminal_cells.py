"""Reading what a terminal shows: the cells of ``tmux capture-pane -e`` with the colour each is drawn in.

A capture is text with SGR escape sequences (tmux writes only the changes from the cell before, across
line ends too). :func:`parse_cells` turns it into rows of :class:`Cell`; :func:`shown` resolves a cell's
colours to the RGB a given terminal would draw (its default colours, reverse video, an 8-colour terminal
where the bright colours fall back to the plain ones), so two colours that look the same compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.color import EIGHT_BIT_PALETTE

Colour = tuple[str, int, int, int]
"""``("default", 0, 0, 0)``, ``("index", n, 0, 0)`` (the 256-colour palette, 0 to 15 the ANSI colours) or
``("rgb", r, g, b)``."""

DEFAULT: Colour = ("default", 0, 0, 0)
_SGR = re.compile(r"\x1b\[([0-9;:]*)m")


@dataclass(frozen=True)
class Cell:
    char: str
    fg: Colour
    bg: Colour
    reverse: bool


@dataclass(frozen=True)
class Terminal:
    """How a terminal draws colours: its default foreground and background (ANSI indexes, as a
    terminal's palette or tmux's ``window-style`` sets them) and whether it has the 8 bright colours."""

    default_fg: int = 7
    default_bg: int = 0
    bright: bool = True


def _index(n: int) -> Colour:
    return ("index", n, 0, 0)


def _extended(params: list[int], i: int) -> tuple[Colour, int]:
    """The colour of ``38;5;n`` or ``38;2;r;g;b`` from ``params[i]`` (the 5 or 2), and the next index."""
    if params[i] == 5:
        return _index(params[i + 1]), i + 2
    return ("rgb", params[i + 1], params[i + 2], params[i + 3]), i + 4


def _apply(codes: str, fg: Colour, bg: Colour, reverse: bool) -> tuple[Colour, Colour, bool]:
    params = [int(p) if p else 0 for p in re.split(r"[;:]", codes)] if codes else [0]
    i = 0
    while i < len(params):
        code = params[i]
        i += 1
        if code == 0:
            fg, bg, reverse = DEFAULT, DEFAULT, False
        elif code == 7:
            reverse = True
        elif code == 27:
            reverse = False
        elif 30 <= code <= 37:
            fg = _index(code - 30)
        elif 90 <= code <= 97:
            fg = _index(code - 90 + 8)
        elif code == 39:
            fg = DEFAULT
        elif 40 <= code <= 47:
            bg = _index(code - 40)
        elif 100 <= code <= 107:
            bg = _index(code - 100 + 8)
        elif code == 49:
            bg = DEFAULT
        elif code in (38, 48, 58):
            colour, i = _extended(params, i)
            if code == 38:
                fg = colour
            elif code == 48:
                bg = colour
    return fg, bg, reverse


def parse_cells(capture: str) -> list[list[Cell]]:
    """The rows of a ``capture-pane -e -p`` capture, one :class:`Cell` per character."""
    rows: list[list[Cell]] = []
    fg, bg, reverse = DEFAULT, DEFAULT, False
    for line in capture.split("\n"):
        row: list[Cell] = []
        pos = 0
        for match in _SGR.finditer(line):
            row.extend(Cell(ch, fg, bg, reverse) for ch in line[pos:match.start()])
            fg, bg, reverse = _apply(match.group(1), fg, bg, reverse)
            pos = match.end()
        row.extend(Cell(ch, fg, bg, reverse) for ch in line[pos:])
        rows.append(row)
    return rows


def _rgb(colour: Colour, terminal: Terminal, default: int) -> tuple[int, int, int]:
    kind, a, b, c = colour
    if kind == "rgb":
        return a, b, c
    number = default if kind == "default" else a
    if number < 16 and not terminal.bright:
        number %= 8  # an 8-colour terminal draws bright red as red
    triplet = EIGHT_BIT_PALETTE[number]
    return triplet.red, triplet.green, triplet.blue


def shown(cell: Cell, terminal: Terminal) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The (foreground, background) RGB ``terminal`` draws ``cell`` in (reverse video applied)."""
    fg = _rgb(cell.fg, terminal, terminal.default_fg)
    bg = _rgb(cell.bg, terminal, terminal.default_bg)
    return (bg, fg) if cell.reverse else (fg, bg)


def visible(char: str) -> bool:
    """Whether ``char`` puts ink on the screen (not a space, nor the blank Braille pattern)."""
    return not char.isspace() and char != "\u2800"

"""tickdeck's colour themes and the app's stylesheet.

Themes are the only place where colours are written down. Stylesheets (``app.tcss`` and the widgets'
``DEFAULT_CSS``) refer to theme variables only (``$primary``, ``$text-success``, ``$text-error``, …), so
switching theme recolours everything, and a new theme is one more :class:`~textual.theme.Theme` here.

- ``dark`` (the default) and ``light``: everyday themes, rises green and falls red;
- ``high-contrast``: pure black and white with saturated accents, for bright rooms and weak eyes;
- ``ansi16``: only the 16 ANSI colours, drawn in the terminal's own palette (for terminals without
  truecolor, and for people who have tuned their palette).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from textual.theme import BUILTIN_THEMES, Theme

from engine.config_model import THEME_NAMES

APP_CSS_PATH = Path(__file__).with_name("app.tcss")
"""The app's layout stylesheet."""

DEFAULT_THEME = "dark"

# Colours that terminals without truecolor draw too. Textual writes the nearest of the 16 ANSI colours
# on TERM=screen (rich's ColorSystem.STANDARD; COLORTERM=truecolor or a TERM ending in -256color gives
# more), where close colours fall together: Textual's own rise and fall text colours (success and
# error tinted toward the foreground) both became white, so they are set here to colours whose nearest
# ANSI colour is green or red. A component class's background is drawn without its alpha, so the
# unfocused cursor (Textual's default: primary at 30 %) came out as a full primary bar under coloured
# text (white on gold in high-contrast); it is given as an opaque colour instead, a dark blue whose
# nearest ANSI colour is blue: ANSI grey would have the same brightness as the bright red of a fall.
# tests/functional/test_tmux_themes.py checks every theme at 16, 256 and 16 million colours.

THEMES: tuple[Theme, ...] = (
    Theme(
        name="dark",
        primary="#3B82C4",
        secondary="#2A5C8A",
        accent="#E0A040",
        warning="#E0A040",
        error="#E5534B",
        success="#3FB950",
        foreground="#D6DCE4",
        background="#0F1419",
        surface="#161D24",
        panel="#1E2731",
        dark=True,
        variables={
            "text-success": "#56D364",
            "text-error": "#FF6B63",
            "block-cursor-blurred-background": "#1F2F80",
        },
    ),
    Theme(
        name="light",
        primary="#1F5FA8",
        secondary="#3B82C4",
        accent="#B8620B",
        warning="#B8620B",
        error="#C62828",
        success="#1B7F3B",
        foreground="#1C2430",
        background="#F5F7FA",
        surface="#E9EDF2",
        panel="#DCE2EA",
        dark=False,
        variables={
            "text-success": "#0E7A30",
            "block-cursor-blurred-background": "#C4D4E8",
        },
    ),
    Theme(
        name="high-contrast",
        primary="#FFD700",
        secondary="#00BFFF",
        accent="#FF00FF",
        warning="#FFD700",
        error="#FF3030",
        success="#00FF00",
        foreground="#FFFFFF",
        background="#000000",
        surface="#000000",
        panel="#1A1A1A",
        dark=True,
        luminosity_spread=0.3,
        text_alpha=1.0,
        variables={
            "text-muted": "#C0C0C0",
            "block-cursor-background": "#FFD700",
            "block-cursor-foreground": "#000000",
            "block-cursor-blurred-background": "#1A1A7A",
            "footer-key-foreground": "#FFD700",
        },
    ),
    Theme(
        name="ansi16",
        ansi=True,
        primary="ansi_blue",
        secondary="ansi_cyan",
        accent="ansi_magenta",
        warning="ansi_yellow",
        error="ansi_red",
        success="ansi_green",
        foreground="ansi_default",
        background="ansi_default",
        surface="ansi_default",
        panel="ansi_default",
        boost="ansi_default",
        dark=True,
        variables={
            "text-success": "ansi_green",  # the bright ones wash out on a light terminal background
            "text-error": "ansi_red",
            "text-warning": "ansi_yellow",
            "text-primary": "ansi_bright_blue",
            "text-accent": "ansi_magenta",
            "text-muted": "ansi_bright_black",
            "ansi-background": "ansi_black",
            "ansi-foreground": "ansi_white",
            "border": "ansi_blue",
            "border-blurred": "ansi_bright_black",
            # Neither black nor white: one of those is the terminal's own background, light or dark,
            # and the bar would vanish into it (black on white was no bar on a light terminal).
            "block-cursor-foreground": "ansi_bright_white",
            "block-cursor-background": "ansi_blue",
            # Unfocused, the cursor row is underlined (app.tcss) on no background: no ANSI grey keeps
            # red, green and the default text readable on both light and dark terminals.
            "block-cursor-blurred-foreground": "ansi_default",
            "block-cursor-blurred-background": "ansi_default",
            "footer-key-foreground": "ansi_bright_blue",
            "footer-background": "ansi_default",
            "scrollbar": "ansi_bright_black",
            "scrollbar-hover": "ansi_white",
            "scrollbar-active": "ansi_bright_white",
            "scrollbar-background": "ansi_default",
            "scrollbar-background-hover": "ansi_default",
            "scrollbar-background-active": "ansi_default",
            "scrollbar-corner-color": "ansi_default",
            "screen-selection-background": "ansi_bright_blue",
            "screen-selection-foreground": "ansi_black",
        },
    ),
)
"""Every tickdeck theme, in the order ``t`` cycles through them (:data:`THEME_NAMES`, which the config
checks ``ui.theme`` against without importing Textual)."""

__all__ = ["APP_CSS_PATH", "DEFAULT_THEME", "THEMES", "THEME_NAMES", "next_theme", "register_themes"]


class _ThemeRegistry(Protocol):
    def register_theme(self, theme: Theme) -> None: ...

    def unregister_theme(self, theme_name: str) -> None: ...


def register_themes(app: _ThemeRegistry) -> None:
    """Make tickdeck's themes the only ones ``app`` offers.

    Textual registers its own (dracula, catppuccin, textual-dark, …) in every app, and its command
    palette's theme picker lists whatever is registered. They are dropped: they were not designed for
    tickdeck's charts and ansi16 rules, the config accepts only :data:`THEME_NAMES`, and ``t`` cycles
    through those, so a theme picked in the palette is always one that can be remembered and cycled on
    from. Set ``app.theme`` to one of ours right after (``App.theme`` starts as textual-dark).
    """
    for theme in THEMES:
        app.register_theme(theme)
    for name in BUILTIN_THEMES:
        if name not in THEME_NAMES:
            app.unregister_theme(name)


def next_theme(current: str) -> str:
    """The theme after ``current`` in :data:`THEME_NAMES`, wrapping; the first one after any other."""
    try:
        return THEME_NAMES[(THEME_NAMES.index(current) + 1) % len(THEME_NAMES)]
    except ValueError:
        return THEME_NAMES[0]

"""The console's keys in ``[keys]``: how a key may be spelled, and which keys are taken.

A key is written as Textual names it (``"slash"``, ``"shift+up"``, ``"ctrl+d"``), as the character
itself (``"/"``, ``"?"``), or as the help screen shows it (``"esc"``, ``"pgdn"``, ``"shift+↑"``).
:func:`key_names` turns every spelling into Textual's name, the only one a binding fires for (Textual's
keymap does not translate ``"/"``), so the console receives names it can bind and two spellings of one
key compare equal.

:func:`key_clash` finds two actions on one key, or an action on a key the console keeps for itself
(:data:`RESERVED`). The loader (``engine.config``) refuses either with a message naming both and the
file. The check lives here, with plain tables and no textual import, so every command that loads a
config (the console, ``attach``, the service) refuses the same mistake the same way, before any window
opens; a functional test checks :data:`RESERVED` against the bindings the console really has.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

SPELLINGS = {"esc": "escape", "return": "enter", "pgup": "pageup", "pgdn": "pagedown", "del": "delete",
             "↑": "up", "↓": "down", "←": "left", "→": "right"}
"""Other names for a key: those the help screen and the footer show, and a few common ones."""

_CHARACTER_NAMES = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at",
                    "hyphen_minus": "minus", "plus_sign": "plus", "low_line": "underscore"}
"""Textual's short names for some characters (``textual.keys.KEY_NAME_REPLACEMENTS``); every other
punctuation character is named by its Unicode name (``?`` → ``question_mark``), as Textual names it."""

ALIASES = {"ctrl+i": "tab", "ctrl+m": "enter", "ctrl+left_square_bracket": "escape",
           "ctrl+space": "ctrl+at", "newline": "ctrl+j"}
"""Keys a terminal cannot tell apart (``textual.keys.KEY_ALIASES``): one key for comparing."""

RESERVED: dict[str, tuple[str, frozenset[str]]] = {
    **{k: ("moving the cursor and scrolling", frozenset())
       for k in ("up", "down", "left", "right", "pageup", "pagedown", "home", "end", "ctrl+pageup",
                 "ctrl+pagedown")},
    "tab": ("moving between the watchlist and the signal log", frozenset()),
    "shift+tab": ("moving between the watchlist and the signal log", frozenset()),
    "ctrl+p": ("the command palette", frozenset()),
    "ctrl+q": ("quitting", frozenset({"quit"})),
    "ctrl+c": ("copying (and, pressed alone, how to quit)", frozenset()),
    "enter": ("choosing (a signal, a prompt's answer)", frozenset({"open"})),
    "escape": ("closing windows and prompts", frozenset({"back"})),
    **{str(n): ("switching watchlists", frozenset(f"list_{m}" for m in range(1, 10))) for n in range(1, 10)},
}
"""Keys the console binds outside ``[keys]``: key -> (what it does, the actions that may also use it)."""

_NAME = re.compile(r"[a-z0-9_]+(\+[a-z0-9_]+)*|[A-Z]")
"""Textual's names: lower case, except a capital letter alone (``D``: shift+d as a terminal sends it)."""


_MESSAGE = ("must be key names separated by commas, such as 'a', 'f5', 'shift+up', 'ctrl+d', 'slash' or "
            "'/', got {!r}")


def key_name(text: str) -> str | None:
    """Textual's name for one key however it is spelled; None when it names no key."""
    text = text.strip()
    if text.endswith("+"):  # the plus key itself, alone or with modifiers ("+", "ctrl++")
        if text != "+" and not text.endswith("++"):
            return None
        modifiers, name = (text[:-2].split("+") if text != "+" else []), "+"
    else:
        *modifiers, name = text.split("+")
    name = SPELLINGS.get(name, name)
    if len(name) == 1 and not name.isalnum() and name.isprintable() and not name.isspace():
        spoken = unicodedata.name(name, "").lower().replace("-", "_").replace(" ", "_")
        name = _CHARACTER_NAMES.get(spoken, spoken)
    key = "+".join([*modifiers, name])
    return key if _NAME.fullmatch(key) else None


def key_names(value: str) -> str:
    """A ``[keys]`` value with every key in Textual's name, comma-separated; ValueError if one names
    no key (the check of every ``keys.<action>``)."""
    names = [key_name(k) for k in value.split(",")]
    if None in names:
        raise ValueError(_MESSAGE.format(value))
    return ",".join(n for n in names if n is not None)


def key_clash(keys: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The first clash among ``keys`` (action -> normalised keys, comma-separated), in the order of
    ``keys``: ``(action, key, other)``, where ``other`` is another action on that key, or the reserved
    use of the key (``"the command palette"``) when it starts with ``"reserved:"``; None when none clash."""
    owner: dict[str, str] = {}
    for action, value in keys.items():
        for key in dict.fromkeys(ALIASES.get(k, k) for k in value.split(",")):
            if key in RESERVED and action not in RESERVED[key][1]:
                return action, key, f"reserved:{RESERVED[key][0]}"
            if key in owner:
                return owner[key], key, action
            owner[key] = action
    return None

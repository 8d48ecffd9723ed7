"""Keys act in the order they were typed, however many arrive in one read of the terminal.

A terminal hands over every key of one read at once: a paste, fast typing over a slow SSH link, a macro.
The app forwards each to the focused widget as it takes it from its queue, and Textual runs a binding
only once its key has bubbled back up to the app, after the keys that came with it were forwarded: ``a``
(open the prompt) then ``jpm`` in one read sent ``jpm`` to the rows, as row keys, before the prompt
opened. (Textual's own issue: Textualize/textual issue 6605; its proposed fix, pull request 6631,
runs a widget's own bindings in its key handler, as :class:`widgets.prompt.PromptInput` does.) The
focusable widgets of this app therefore run the bindings in reach in their key handler, at once, and
hand a key that arrives after an earlier key moved the focus to the widget that has it now.
"""

from __future__ import annotations

from textual import events
from textual.widget import Widget


def refocused(widget: Widget, event: events.Key) -> bool:
    """Hand ``event`` on to the widget focused now if ``widget`` lost the focus since the app sent the key
    its way (True: handed on, ``widget`` must ignore it)."""
    focused = widget.app.focused
    if focused is None or focused is widget:
        return False
    event.stop()
    event.prevent_default()
    focused._forward_event(events.Key(event.key, event.character))  # a fresh event: this one is stopped
    return True


async def bound(widget: Widget, event: events.Key) -> bool:
    """Run the binding ``event`` would run once bubbled up to the app (the focused widget's, its
    ancestors', the screen's, the app's: Textual's own lookup, ``App._check_bindings``), here and now
    (True: it ran, and the event is stopped)."""
    if await widget.app._check_bindings(event.key):
        event.stop()
        event.prevent_default()
        return True
    return False

"""The real ``tickdeck`` command in a real terminal (tmux): enter a position with the keyboard, see it
valued with its totals row, quit, and find it in the saved state file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.functional.test_tmux import STEP_S, console_command, tmux, wait_screen

__all__ = ["tmux"]  # the fixture, shared with the watchlist's terminal test


def test_enter_a_position_in_a_real_terminal_quit_and_find_it_saved(tmux: Callable[..., str],
                                                                    tmp_path: Path) -> None:
    state, config = tmp_path / "state", tmp_path / "config"
    config.mkdir()
    exited = tmp_path / "exited"
    env = f"TICKDECK_STATE_DIR={state} TICKDECK_CONFIG_DIR={config}"
    command = console_command(env, "--interval 1s", exited)
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command)
    wait_screen(tmux, lambda s: "live" in s and "AAPL" in s, "the watchlist on a live feed")

    tmux("send-keys", "-t", "t", "e")
    wait_screen(tmux, lambda s: "Position:" in s and "esc Cancel" in s, "the prompt, focused")
    tmux("send-keys", "-t", "t", "C-u")  # the selected row's symbol is typed already: start afresh
    tmux("send-keys", "-t", "t", "-l", "aapl 12.5 @ 101.25 + 0.75")
    wait_screen(tmux, lambda s: "Position: aapl 12.5 @ 101.25 + 0.75" in s, "the entry typed in the prompt")
    tmux("send-keys", "-t", "t", "Enter")
    # the confirmation shows for 4 s, which a starved machine can miss (test_positions.py reads its
    # text): the row is what lasts
    screen = wait_screen(tmux, lambda s: "Σ" in s and "Qty" in s, "the position columns and the totals")
    assert any(line.startswith(" AAPL ") and " 12.5 " in line for line in screen.splitlines()), screen
    tmux("send-keys", "-t", "t", "q")
    deadline = time.monotonic() + 30
    while not exited.exists() and time.monotonic() < deadline:
        time.sleep(STEP_S)
    assert exited.read_text().strip() == "0", "tickdeck did not exit cleanly on q"

    saved = json.loads((state / "state.json").read_text())
    [lot] = saved["positions"]["sim"]["AAPL"]["lots"]
    assert (lot["quantity"], lot["price"], lot["fee"]) == ("12.5", "101.25", "0.75")

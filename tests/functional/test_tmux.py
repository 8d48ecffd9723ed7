"""The real ``tickdeck`` command in a real terminal (tmux): add a symbol with the keyboard, quit, and
find it saved in the state directory.

This is the path no Pilot test covers: the installed entry point, the terminal driver, escape
sequences from a real terminal, and the exit. tmux runs on its own socket, so it never touches a
tmux server of the user's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from engine.feeds.sim import universe

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 0.2
WAIT_S = 240.0
"""Generous: a fresh checkout compiles the numba kernels on the first start (30-60 s)."""


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., str]]:
    assert shutil.which("tmux"), "tmux is needed for this test (the console's terminal test)"
    socket = f"tickdeck-test-{os.getpid()}"

    def run(*args: str) -> str:
        out = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)
        return out.stdout

    yield run
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)


def console_command(env: str, args: str, exited: Path) -> str:
    """The pane's shell command: the console, then its exit status into ``exited`` and onto the screen (a
    process that dies without restoring the terminal leaves its last frame there, which alone would read
    as a hang)."""
    return (f"cd {ROOT} && {env} {sys.executable} -m console {args}; status=$?; echo $status > {exited}; "
            f"echo; echo \"[tickdeck exited with status $status]\"; sleep 30")


def wait_screen(tmux: Callable[..., str], condition: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        late = time.monotonic() >= deadline  # a last look after the deadline: a stalled test is no failure
        screen = tmux("capture-pane", "-p", "-t", "t")
        if condition(screen):
            return screen
        if late:
            why = diagnosis(tmux)
            raise AssertionError(f"timed out waiting for {what}; the screen was:\n{screen}\n{why}")
        time.sleep(STEP_S)


def diagnosis(tmux: Callable[..., str]) -> str:
    """What the console's process was doing when a wait timed out: gone (its exit status is on the screen
    above), or alive with its state and every thread's stack (SIGUSR1: the faulthandler the entry point
    registers), read from the pane's output (``pipe-pane``), since a live console redraws over it."""
    pane = tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip()
    try:
        shell = psutil.Process(int(pane))
        found = [p for p in shell.children(recursive=True) if "console" in p.cmdline()]
    except (ValueError, psutil.Error) as exc:
        return f"(the pane's process is not found: {pane!r}, {exc})"
    if not found:
        return "the console's process is gone"
    process = found[0]
    pane_state = tmux("display-message", "-p", "-t", "t", "in mode #{pane_in_mode}, dead #{pane_dead}")
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "pane"
        tmux("pipe-pane", "-t", "t", "-o", f"cat >> {output}")
        try:
            with process.oneshot():
                cpu, rss = process.cpu_times(), process.memory_info().rss
                state = (f"the console (pid {process.pid}) is {process.status()}, {cpu.user + cpu.system:.1f}"
                         f" s CPU, {rss >> 20} MB, {process.num_threads()} threads")
            process.send_signal(signal.SIGUSR1)
        except psutil.Error as exc:
            return f"the console's process: {exc}"
        time.sleep(2)
        tmux("pipe-pane", "-t", "t")
        text = output.read_text(errors="replace") if output.exists() else ""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")
    dump = re.compile(r'\s*(File "|Thread 0x|Current thread 0x)')
    stacks = [line for line in plain.splitlines() if dump.match(line)]
    return f"{state}; the pane: {pane_state.strip()}; its threads' stacks:\n" + "\n".join(stacks)


def row_of(symbol: str, screen: str) -> bool:
    """Whether the watchlist shows a row of ``symbol`` (signal log lines start with a time instead)."""
    return any(line.startswith(f" {symbol} ") for line in screen.splitlines())


def test_add_a_symbol_in_a_real_terminal_quit_and_find_it_saved(tmux: Callable[..., str],
                                                               tmp_path: Path) -> None:
    state, config = tmp_path / "state", tmp_path / "config"
    config.mkdir()
    exited = tmp_path / "exited"
    symbol, second = universe(40, 7)[30:32]  # in the sim's market, not in the first watchlist
    env = f"TICKDECK_STATE_DIR={state} TICKDECK_CONFIG_DIR={config}"
    command = console_command(env, "--interval 1s", exited)
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command)
    wait_screen(tmux, lambda s: "live" in s and "AAPL" in s, "the watchlist on a live feed")
    shown = tmux("capture-pane", "-p", "-t", "t")
    assert not row_of(symbol, shown) and not row_of(second, shown)  # (their signals may be in the log)

    tmux("send-keys", "-t", "t", "a")
    wait_screen(tmux, lambda s: "Add to Main:" in s, "the add prompt")
    tmux("send-keys", "-t", "t", "-l", symbol.lower())
    tmux("send-keys", "-t", "t", "Enter")
    wait_screen(tmux, lambda s: f"added {symbol}" in s, "the confirmation")
    wait_screen(tmux, lambda s: row_of(symbol, s), "its row, selected and scrolled into view")
    # typed ahead: the key that opens the prompt and the answer without waiting for the prompt (a paste,
    # a slow SSH link): the answer's keys must land in the prompt, not on the rows as row keys
    tmux("send-keys", "-t", "t", "-l", f"a{second.lower()}")
    tmux("send-keys", "-t", "t", "Enter")
    wait_screen(tmux, lambda s: row_of(second, s), "the symbol typed ahead, added")
    tmux("send-keys", "-t", "t", "q")
    deadline = time.monotonic() + 30
    while not exited.exists() and time.monotonic() < deadline:
        time.sleep(STEP_S)
    assert exited.read_text().strip() == "0", "tickdeck did not exit cleanly on q"

    saved = json.loads((state / "state.json").read_text())
    [main] = saved["feeds"]["sim"]["watchlists"]
    assert main["name"] == "Main" and main["symbols"][-2:] == [symbol, second]
    assert symbol not in main["symbols"][:-2] and second not in main["symbols"][:-2]

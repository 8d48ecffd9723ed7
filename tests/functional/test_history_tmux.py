"""The real ``tickdeck --feed binance`` in a real terminal (tmux), against the Binance stand-ins run as
their own process (``python -m bench.servers.history``): within seconds of the first frame every row
shows RSI 14 and SMA 200, from history fetched over REST and the live stream that continues it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.functional.test_tmux import ROOT, console_command, row_of, tmux, wait_screen  # noqa: F401  (tmux: a fixture)

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.fixture
def market() -> Iterator[dict[str, str]]:
    command = [sys.executable, "-m", "bench.servers.history", "--symbols", "3", "--bars", "260",
               "--rate", "20"]
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the stand-in did not start"
        yield json.loads(line)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # it serves until its standard input closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cell(screen: str, title: str, symbol: str) -> str:
    """The text of ``symbol``'s row under the column ``title`` (cells are right-aligned under it)."""
    lines = screen.splitlines()
    head = next(line for line in lines if "Symbol" in line and title in line)
    end = head.index(title) + len(title)
    row = next(line for line in lines if line.startswith(f" {symbol} "))
    return row[end - 8: end].split()[-1]


def _warm(screen: str) -> bool:
    try:
        return all(row_of(s, screen) and all(math.isfinite(float(_cell(screen, t, s).replace(",", "")))
                                             for t in ("RSI 14", "SMA 200")) for s in SYMBOLS)
    except (StopIteration, ValueError, IndexError):
        return False


def test_tickdeck_on_binance_shows_rsi_and_sma_200_for_every_row(tmux: Callable[..., str],  # noqa: F811
                                                                 market: dict[str, str],
                                                                 tmp_path: Path) -> None:
    exited = tmp_path / "exited"
    env = (f"TICKDECK_STATE_DIR={tmp_path / 'state'} TICKDECK_CONFIG_DIR={tmp_path / 'config'} "
           f"TICKDECK_FEEDS_BINANCE_URL={market['ws']} TICKDECK_FEEDS_BINANCE_REST_URL={market['rest']} "
           f"TICKDECK_FEEDS_BINANCE_SYMBOLS={','.join(SYMBOLS)} TICKDECK_UI_COLUMNS=rsi_14,sma_200")
    command = console_command(env, "--feed binance", exited)
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command)
    screen = wait_screen(tmux, _warm, "RSI 14 and SMA 200 on every row")
    assert "binance" in screen and "live" in screen
    tmux("send-keys", "-t", "t", "q")
    wait_screen(tmux, lambda _: exited.exists(), "tickdeck to exit")
    assert exited.read_text().strip() == "0"

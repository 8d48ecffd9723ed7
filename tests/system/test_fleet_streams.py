"""The streams' limits a fleet sets in ``[bus]``, on a real ``nats-server -js``: bars kept per symbol
(``bars_max_per_subject``, JetStream's ``max_msgs_per_subject``) and the replica count, which a single
server refuses above one with a message that says what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.bus.buffer import DiskBuffer
from engine.bus.connection import BusError, Retention, connect, ensure_streams, settings_from
from engine.bus.publisher import BusPublisher
from engine.bus.subjects import BARS_STREAM, SIGNALS_STREAM, bar_subject
from tests.servers.nats import NatsServer

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def nats_server(tmp_path: Path) -> Any:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


async def test_the_bar_stream_keeps_the_last_bars_of_each_symbol(nats_server: NatsServer) -> None:
    client = await connect(settings_from(nats_server.url))
    try:
        js = client.jetstream()
        await ensure_streams(js, Retention(bars_max_per_subject=3))
        for symbol in ("AAA", "BBB"):
            for t in range(5):
                await js.publish(bar_subject("sim", "1m", symbol), f"{symbol}{t}".encode())
        info = await js.stream_info(BARS_STREAM)
        assert info.config.max_msgs_per_subject == 3
        assert info.state.messages == 6  # three of each symbol
        last = await js.get_last_msg(BARS_STREAM, bar_subject("sim", "1m", "AAA"))
        assert last.data == b"AAA4"
        assert (await js.stream_info(SIGNALS_STREAM)).config.max_msgs_per_subject == -1
        await ensure_streams(js, Retention())  # 0: the limit lifted again, as the config says
        assert (await js.stream_info(BARS_STREAM)).config.max_msgs_per_subject == -1
    finally:
        await client.close()


async def test_replicas_a_single_server_cannot_place_is_one_clear_error(nats_server: NatsServer,
                                                                          tmp_path: Path) -> None:
    settings = settings_from(nats_server.url, connect_timeout=2.0)
    publisher = BusPublisher(settings, DiskBuffer(tmp_path / "buffer"), feed="sim", interval="1m",
                             engine="test", retention=Retention(replicas=3), snapshot_every=0)
    with pytest.raises(BusError, match=r"refused the streams .*\[bus\] replicas = 3 needs a JetStream "
                                       r"cluster of at least 3 servers"):
        await publisher.open()

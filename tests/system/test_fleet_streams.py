"""What a fleet sets in ``[bus]`` for a cluster, on a real ``nats-server -js``: bars kept per symbol
(``bars_max_per_subject``, JetStream's ``max_msgs_per_subject``), the replica count, which a single server
refuses above one with a message that says what to change, and a cluster's URLs, tried in turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.bus.buffer import DiskBuffer
from engine.bus.connection import BusError, Retention, connect, ensure_streams, settings_from
from engine.bus.publisher import BusPublisher
from engine.bus.subjects import BARS_STREAM, SIGNALS_STREAM, bar_subject
from engine.config import ConfigError, load_config
from tests.servers.hooks import closed_port
from tests.servers.nats import NatsServer

pytestmark = pytest.mark.usefixtures("clean_env")


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


async def test_a_cluster_url_list_connects_through_the_server_that_is_up(nats_server: NatsServer,
                                                                          tmp_path: Path) -> None:
    down = f"nats://127.0.0.1:{closed_port()}"
    settings = settings_from(f"{down}, {nats_server.url}", connect_timeout=2.0)
    assert settings.servers == [down, nats_server.url]
    assert settings.shown == f"{down},{nats_server.url}"
    publisher = BusPublisher(settings, DiskBuffer(tmp_path / "buffer"), feed="sim", interval="1m",
                             engine="test", retention=Retention(), snapshot_every=0)
    await publisher.open()
    try:
        assert publisher.state == "live"
    finally:
        await publisher.close()
    with pytest.raises(BusError, match=r"must be nats://HOST:PORT .*got 'http://b'"):
        settings_from(f"{nats_server.url},http://b")


def test_the_config_takes_a_cluster_url_list_and_names_a_bad_one() -> None:
    config = load_config(overrides={"bus.url": "nats://a:4222,nats://b:4222"}, env={})
    assert config.bus.url == "nats://a:4222,nats://b:4222"
    with pytest.raises(ConfigError, match=r"bus\.url.*must be a nats:// or tls:// URL, got 'https://c'"):
        load_config(overrides={"bus.url": "nats://a:4222,https://c"}, env={})

"""The feed registry: one list of feeds that the config's check, ``--help`` and ``build_feed`` all read;
every name in it builds, an unknown one gets a clear message, and reading it imports no feed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from console.cli import build_parser, main
from engine.config import Config, ConfigError, load_config
from engine.feeds.base import Feed
from engine.feeds.registry import FEED_NAMES, FEEDS, FeedUnavailable, build_feed
from engine.runtime import build_engine

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {  # nothing is contacted while a feed is built; were it, it would be this machine
    "feeds.binance.url": "ws://127.0.0.1:9", "feeds.binance.rest_url": "http://127.0.0.1:9",
    "feeds.coinbase.url": "ws://127.0.0.1:9", "feeds.coinbase.rest_url": "http://127.0.0.1:9",
    "feeds.yahoo.url": "http://127.0.0.1:9", "feeds.yahoo.cookie_url": "http://127.0.0.1:9",
    "feeds.yahoo.consent_url": "http://127.0.0.1:9", "feeds.yahoo.stream_url": "ws://127.0.0.1:9",
}


def _config(tmp_path: Path, name: str) -> Config:
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n"
                   "2024-01-02 00:00:00,10,11,9,10.5,100\n2024-01-02 00:01:00,10.5,12,10,11,80\n")
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "no-config"), "TICKDECK_DATA_DIR": str(tmp_path / "data")}
    return load_config(overrides={**LOOPBACK, "feed.name": name, "feeds.replay.file": str(csv)}, env=env)


@pytest.mark.parametrize("name", FEED_NAMES)
def test_every_registered_feed_builds_with_its_symbols_registered(tmp_path: Path, name: str) -> None:
    config = _config(tmp_path, name)
    engine = build_engine(config)
    feed = build_feed(config, engine)
    assert isinstance(feed, Feed)
    assert feed.name == name
    universe = feed.universe()
    assert universe, f"the {name} feed has no symbols"
    if name in ("binance", "coinbase", "yahoo", "ccxt"):  # a live feed's symbols: slots before a trade
        assert all(s in engine.symbols for s in universe), universe


def test_the_config_and_the_command_line_offer_exactly_the_registered_feeds(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert FEED_NAMES == tuple(FEEDS) == ("sim", "replay", "binance", "coinbase", "yahoo", "ccxt")
    parser = build_parser()
    for name in (*FEED_NAMES, "ccxt:kraken"):  # the ccxt feed also takes its exchange
        assert parser.parse_args(["--feed", name]).feed == name
    for name in FEED_NAMES:
        assert load_config(overrides={"feed.name": name}, env={}).feed.name == name


def test_an_unknown_feed_is_refused_with_the_names_it_could_be(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "sim")
    unknown = dataclasses.replace(config, feed=dataclasses.replace(config.feed, name="kraken"))
    with pytest.raises(FeedUnavailable) as info:
        build_feed(unknown, build_engine(config))
    assert str(info.value) == ("feed 'kraken' is not available in this version; "
                               "available: sim, replay, binance, coinbase, yahoo, ccxt")
    with pytest.raises(ConfigError, match=r"feed\.name .*must be one of sim, replay, binance, coinbase, "
                                          r"yahoo, ccxt, got 'kraken'"):
        load_config(overrides={"feed.name": "kraken"}, env={})
    with pytest.raises(SystemExit):
        main(["--feed", "kraken"])
    assert "invalid choice: 'kraken'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--feed", "binance:kraken"])
    assert "only the ccxt feed takes an exchange" in capsys.readouterr().err


def test_reading_the_registry_imports_no_feed() -> None:
    code = ("import sys\n"
            "import engine.feeds.registry, engine.config\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba', 'aiohttp', 'pandas')\n"
            "         or (m.startswith('engine.feeds.') and m != 'engine.feeds.registry')\n"
            "         or m.startswith('engine.backfill')]\n"
            "print('HEAVY', sorted(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "HEAVY []", out.stdout

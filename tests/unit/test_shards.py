"""Sharding without a server: ``--shard`` / ``bus.shard`` parsed and refused as one line, the fixed
``K/N`` shares, the rendezvous assignment (stable, balanced, minimal movement), the bucket's keys, and
the start-up mistakes of a sharded service."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from console.cli import main
from engine import headless
from engine.bus.connection import BusError
from engine.bus.shard_keeper import ShardTiming, assignment_key, key_token, presence_key
from engine.bus.shards import Shard, ShardError, assign, in_shard, parse_shard, static_share, weight
from engine.config import ConfigError, load_config
from tests.data import random_walk

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = [f"T{i:04d}USDT" for i in range(1000)]

pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)


# --- the setting ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "shard"), [
    ("", None), ("  ", None), ("auto", Shard()), ("AUTO", Shard()), ("1/2", Shard(1, 2)),
    (" 2/2 ", Shard(2, 2)), ("1/1", Shard(1, 1)), ("7/16", Shard(7, 16))])
def test_shard_settings(text: str, shard: Shard | None) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "x", "1/0", "1/", "/2", "-1/2", "1.5/2", "1/2/3", "half"])
def test_bad_shard_settings(text: str) -> None:
    with pytest.raises(ShardError, match="must be K/N"):
        parse_shard(text)


@pytest.mark.parametrize("bad", ["0/2", "3/2", "x"])
def test_a_bad_shard_flag_is_one_line_naming_the_flag(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--headless", "--shard", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tickdeck: --shard must be K/N") and repr(bad) in err


def test_the_shard_flag_needs_headless(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--shard", "1/2"]) == 2
    assert capsys.readouterr().err == "tickdeck: --shard works with --headless only\n"


def test_a_bad_shard_in_the_config_names_the_file_and_key(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[bus]\nshard = "3/2"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bus\.shard in .*config\.toml must be K/N with 1 <= K <= N"):
        load_config(bad, env={})
    assert main(["--config", str(bad), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bus.shard" in err and str(bad) in err and "'3/2'" in err


def test_the_renewal_must_come_before_the_expiry() -> None:
    with pytest.raises(BusError, match=r"bus\.shard_renew \(3 s\) must be less than bus\.shard_ttl \(3 s\)"):
        ShardTiming(ttl=3.0, renew=3.0, check=1.0).checked()
    assert ShardTiming(ttl=3.0, renew=0.5, check=0.5).checked().takeover_s == 3.5


# --- K/N ----------------------------------------------------------------------------------------------------

def test_fixed_shares_split_the_symbols_exactly_once() -> None:
    for n in (1, 2, 3, 7):
        shares = [static_share(SYMBOLS, Shard(k, n)) for k in range(1, n + 1)]
        assert sorted(s for share in shares for s in share) == sorted(SYMBOLS)
        assert all(len(share) > len(SYMBOLS) / n * 0.8 for share in shares)  # balanced, roughly


def test_shares_are_the_same_in_every_process() -> None:
    """CRC-32, not Python's salted hash(): pinned here, and the same under another hash seed."""
    majors = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT"]
    # CRC-32s: BTCUSDT ac8ea3c3, ETHUSDT 1ef9ac5c, SOLUSDT 86665130, BNBUSDT 33a3ab8e, XRPUSDT 9e396e0c,
    # ADAUSDT e470e8a5: the even ones are share 1 of 2
    assert static_share(majors, Shard(1, 2)) == ["ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    assert static_share(majors, Shard(2, 2)) == ["BTCUSDT", "ADAUSDT"]
    code = ("from engine.bus.shards import Shard, static_share, weight\n"
            f"print(static_share({majors!r}, Shard(1, 2)), weight('a', 'BTCUSDT'))")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             check=True, env=env).stdout.strip()
        assert out == f"{static_share(majors, Shard(1, 2))} {weight('a', 'BTCUSDT')}"
    with pytest.raises(ValueError, match="auto"):
        in_shard("BTCUSDT", Shard())


# --- auto: rendezvous -------------------------------------------------------------------------------------

def test_the_assignment_is_the_same_whatever_the_order() -> None:
    engines = ["e1", "e2", "e3", "e4"]
    first = assign(SYMBOLS, engines)
    rng = random.Random(4)
    for _ in range(5):
        shuffled_symbols, shuffled_engines = SYMBOLS[:], engines[:]
        rng.shuffle(shuffled_symbols)
        rng.shuffle(shuffled_engines)
        again = assign(shuffled_symbols, shuffled_engines)
        assert {e: sorted(s) for e, s in again.items()} == {e: sorted(s) for e, s in first.items()}
    assert sorted(s for share in first.values() for s in share) == sorted(SYMBOLS)  # each once


def test_the_assignment_is_balanced() -> None:
    for n in (2, 4, 10):
        shares = assign(SYMBOLS, [f"engine-{i}" for i in range(n)])
        assert all(abs(len(s) - 1000 / n) < 0.25 * 1000 / n for s in shares.values()), \
            {e: len(s) for e, s in shares.items()}


def test_a_departure_moves_only_the_departed_engines_symbols() -> None:
    engines = ["a", "b", "c", "d"]
    before = assign(SYMBOLS, engines)
    after = assign(SYMBOLS, ["a", "b", "d"])
    for engine in ("a", "b", "d"):
        assert set(after[engine]) >= set(before[engine])
        assert set(after[engine]) - set(before[engine]) <= set(before["c"])
    # and one joining takes only from the others, about a fifth of the whole
    joined = assign(SYMBOLS, [*engines, "e"])
    for engine in engines:
        assert set(joined[engine]) <= set(before[engine])
    assert 150 < len(joined["e"]) < 250


def test_no_engine_no_assignment() -> None:
    assert assign(SYMBOLS, []) == {}
    assert assign([], ["a"]) == {"a": []}


# --- the bucket's keys -------------------------------------------------------------------------------------

def test_keys_are_bucket_keys_whatever_the_names() -> None:
    assert presence_key("binance", "1m", "vps-1") == "presence.binance.1m.vps-1"
    key = assignment_key("binance", "1m", "host.example.com-42")
    assert key == "assignment.binance.1m.host=2Eexample=2Ecom-42"
    assert key_token("") == "=" and key_token("a b") == "a=20b"


# --- a sharded service's start-up mistakes ----------------------------------------------------------------

def test_auto_sharding_a_replay_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "ACME.csv"
    data.write_text("timestamp,open,high,low,close,volume\n1800000000,1,2,0.5,1.5,10\n", encoding="utf-8")
    overrides = {"feeds.replay.file": str(data), "feed.name": "replay", "bus.shard": "auto",
                 "bus.url": "nats://127.0.0.1:9", "history.store": ""}
    config = load_config(overrides=overrides, env={})
    err = io.StringIO()
    assert headless.main(config, status_every=0, stdout_fd=None, stderr=err) == 2
    assert err.getvalue().splitlines()[-1] == (
        "tickdeck: --shard auto needs a feed that subscribes symbols and loads their history (binance, "
        "coinbase, yahoo, ccxt); with the replay feed, use --shard K/N")


def test_fixed_shares_of_a_replay_fire_the_whole_runs_signals_between_them(tmp_path: Path) -> None:
    """Two engines on 1/2 and 2/2 of a six-symbol replay: each fires on its own symbols only, and
    together they fire exactly the signals of one engine on all six (the feed's wrapper drops the other
    share's ticks before the engine)."""
    names = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT"]
    data = tmp_path / "six.csv"
    rows = sorted(((row[0], k, f"{name},{row[0]},{','.join(str(x) for x in row[1:])}")
                   for k, name in enumerate(names) for row in random_walk(300, seed=k).rows()))
    data.write_text("symbol,timestamp,open,high,low,close,volume\n" + "".join(r[2] + "\n" for r in rows),
                    encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nid = "x"\nkind = "cross"\na = "close"\nb = "ema_20"\non = "close"\n',
                     encoding="utf-8")

    def run(shard: str) -> list[dict[str, object]]:
        out = tmp_path / f"signals-{shard.replace('/', '-') or 'all'}.jsonl"
        config = load_config(rules, overrides={"feeds.replay.file": str(data), "feed.name": "replay",
                                               "feeds.replay.speed": "max", "bus.shard": shard,
                                               "history.store": ""}, env={})
        err = io.StringIO()
        code = headless.main(config, signals_out=out, status_every=0, stdout_fd=None, stderr=err)
        assert code == 0, err.getvalue()[-2000:]
        return [json.loads(line) for line in out.read_text().splitlines()]

    whole, first, second = run(""), run("1/2"), run("2/2")
    assert {s["symbol"] for s in first} == set(static_share(names, Shard(1, 2)))
    assert {s["symbol"] for s in second} == set(static_share(names, Shard(2, 2)))
    def key(s: dict[str, object]) -> str:
        return json.dumps({k: v for k, v in s.items() if k != "detected_ns"}, sort_keys=True)

    assert sorted(map(key, first + second)) == sorted(map(key, whole)) and len(whole) > 50


def test_auto_without_a_bus_is_one_line_and_exit_2() -> None:
    config = load_config(overrides={"feed.name": "binance", "feeds.binance.url": "ws://127.0.0.1:9",
                                    "bus.shard": "auto", "history.store": "", "history.fetch": False}, env={})
    err = io.StringIO()
    assert headless.main(config, status_every=0, stdout_fd=None, stderr=err) == 2
    assert err.getvalue().splitlines()[-1] == (
        "tickdeck: --shard auto keeps the assignment on the bus: it needs --publish nats://HOST:4222 "
        "(bus.url)")


# --- giving a symbol up ---------------------------------------------------------------------------------

def test_a_symbol_given_up_goes_no_further_and_its_forming_bar_is_never_closed() -> None:
    import numpy as np

    from engine.bus.sharding import Share
    from engine.feeds.base import HistoryBars, Refill
    from engine.runtime import build_engine
    from engine.ticks import BAR_DTYPE, TICK_DTYPE

    config = load_config(overrides={"engine.interval": "1m"}, env={})
    engine = build_engine(config)
    for name in ("KEEP", "GIVE"):
        engine.add_symbol(name)
    keep, give = engine.symbols.get("KEEP"), engine.symbols.get("GIVE")
    closed: list[int] = []
    engine.on_closed = lambda slots, t, bars, warm: closed.extend(slots.tolist())
    minute = 60 * 10**9
    batch = np.zeros(4, dtype=TICK_DTYPE)
    batch["sym"] = [keep, give, keep, give]
    batch["ts"] = batch["recv"] = [10**9, 2 * 10**9, 3 * 10**9, 4 * 10**9]
    batch["price"], batch["size"], batch["trade_id"] = 100.0, 1.0, -1
    share = Share(engine, ["KEEP", "GIVE"], ["KEEP", "GIVE"])
    assert share.only(batch) is batch
    engine.ingest(batch)  # both have a forming bar
    share.set(["KEEP"])  # GIVE went to another engine
    share.drop_forming(share.slots(["GIVE", "KEEP"]))  # (KEEP is held: its bar stays)
    engine.close_due(2 * minute)
    assert closed == [keep]  # GIVE's partial bar was not closed, so neither published nor fired on
    kept = share.only(batch)
    assert isinstance(kept, np.ndarray) and kept["sym"].tolist() == [keep, keep]
    assert share.only(batch[batch["sym"] == give]) is None
    bars = np.zeros(2, dtype=BAR_DTYPE)
    bars["sym"] = [keep, give]
    history = share.only(HistoryBars(bars))
    assert isinstance(history, HistoryBars) and history.bars["sym"].tolist() == [keep]
    refill = Refill(give, 0, batch[batch["sym"] == give][:0])
    assert share.only(refill) is None


def test_a_new_share_keeps_the_followed_symbols_outside_the_feeds_list() -> None:
    """A held position's symbol outside the feed's list (followed by the positions) passes every
    engine's share filter: a change of the share keeps it in the snapshots, and drops the lost ones."""
    from engine.bus.sharding import watched

    universe = ["AAA", "BBB", "CCC", "DDD"]
    before = ["AAA", "BBB", "POS1", "POS2"]  # the old share, then two followed positions
    assert watched(["BBB", "DDD"], before, universe) == ["BBB", "DDD", "POS1", "POS2"]
    assert watched([], before, universe) == ["POS1", "POS2"]
    assert watched(["AAA"], ["AAA"], universe) == ["AAA"]

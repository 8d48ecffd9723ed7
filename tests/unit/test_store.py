"""The bar store's contract: load, last_time, upsert, retention, the size cap, threads, and its errors."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.config import load_config
from engine.store import FILENAME, READERS, BarStore, StoreError, open_store, store_root
from engine.ticks import BAR_DTYPE, make_bars

MIN = 60_000_000_000
DAY = 1440 * MIN
NOW = 1_800_000_000_000_000_000 - 1_800_000_000_000_000_000 % MIN


def bars(start: int, n: int, seed: int = 0, interval: int = MIN) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = make_bars(n)
    b["sym"] = 7  # a slot: the store keeps none
    b["t"] = start + np.arange(n, dtype=np.int64) * interval
    b["close"] = 100 + np.cumsum(rng.normal(0, 0.1, n))
    b["open"] = b["close"] + rng.normal(0, 0.05, n)
    b["high"] = np.maximum(b["open"], b["close"]) + 0.1
    b["low"] = np.minimum(b["open"], b["close"]) - 0.1
    b["volume"] = rng.gamma(2, 10, n)
    b["trades"] = rng.integers(1, 100, n)
    return b


def same(got: np.ndarray, want: np.ndarray) -> bool:
    return len(got) == len(want) and all(np.array_equal(got[f], want[f]) for f in BAR_DTYPE.names[1:])


@pytest.fixture
def store(tmp_path: Path) -> BarStore:
    s = BarStore(tmp_path / "store", 90 * DAY, clock=lambda: NOW)
    yield s
    s.close()


def test_an_empty_store_has_no_bars_and_no_last_time(store: BarStore) -> None:
    got = store.load("binance", "BTCUSDT", MIN, 0)
    assert got.dtype == BAR_DTYPE and len(got) == 0
    assert store.last_time("binance", "BTCUSDT", MIN) is None


def test_load_gives_back_what_was_appended_oldest_first_from_since(store: BarStore) -> None:
    b = bars(NOW - 100 * MIN, 100)
    store.append("binance", "BTCUSDT", MIN, b[50:])  # appended out of order, in two parts
    store.append("binance", "BTCUSDT", MIN, b[:50])
    got = store.load("binance", "BTCUSDT", MIN, 0)
    assert same(got, b) and (got["sym"] == -1).all()
    assert same(store.load("binance", "BTCUSDT", MIN, int(b["t"][30])), b[30:])
    assert same(store.load("binance", "BTCUSDT", MIN, int(b["t"][30]) + 1), b[31:])
    assert store.last_time("binance", "BTCUSDT", MIN) == int(b["t"][-1])


def test_feeds_symbols_and_intervals_are_separate_series(store: BarStore) -> None:
    a, b, d = bars(NOW - DAY, 10, 1), bars(NOW - DAY, 10, 2), bars(NOW - DAY, 10, 4)
    c = bars(NOW - DAY, 5, 3, 5 * MIN)
    store.append("binance", "BTCUSDT", MIN, a)
    store.append("binance", "ETHUSDT", MIN, b)
    store.append("binance", "BTCUSDT", 5 * MIN, c)
    store.append("coinbase", "BTCUSDT", MIN, d)
    assert same(store.load("binance", "BTCUSDT", MIN, 0), a)
    assert same(store.load("binance", "ETHUSDT", MIN, 0), b)
    assert same(store.load("binance", "BTCUSDT", 5 * MIN, 0), c)
    assert same(store.load("coinbase", "BTCUSDT", MIN, 0), d)
    listed = [(s.feed, s.symbol, s.interval_ns, s.bars) for s in store.series()]
    assert listed == [("binance", "BTCUSDT", MIN, 10), ("binance", "BTCUSDT", 5 * MIN, 5),
                      ("binance", "ETHUSDT", MIN, 10), ("coinbase", "BTCUSDT", MIN, 10)]


def test_a_bar_stored_again_replaces_the_old_one(store: BarStore) -> None:
    old = bars(NOW - 100 * MIN, 100, seed=1)
    store.append("binance", "BTCUSDT", MIN, old)
    refill = bars(NOW - 40 * MIN, 50, seed=2)  # overlaps the last 40, adds 10 newer
    store.append("binance", "BTCUSDT", MIN, refill)
    got = store.load("binance", "BTCUSDT", MIN, 0)
    assert len(got) == 110 and (np.diff(got["t"]) > 0).all()
    assert same(got[:60], old[:60]) and same(got[60:], refill)
    twice = np.concatenate([bars(NOW - 5 * MIN, 3, seed=3), bars(NOW - 5 * MIN, 3, seed=4)])
    store.append("binance", "BTCUSDT", MIN, twice)  # within one append the later copy wins
    assert same(store.load("binance", "BTCUSDT", MIN, NOW - 5 * MIN)[:3], twice[3:])


def test_opening_prunes_bars_older_than_the_retention(tmp_path: Path) -> None:
    with BarStore(tmp_path, 10 * DAY, clock=lambda: NOW) as s:
        s.append("binance", "BTCUSDT", MIN, bars(NOW - 20 * DAY, 20 * 1440))
        s.append("binance", "OLDUSDT", MIN, bars(NOW - 20 * DAY, 100))
    with BarStore(tmp_path, 10 * DAY, clock=lambda: NOW + DAY) as s:  # a day later
        got = s.load("binance", "BTCUSDT", MIN, 0)
        assert int(got["t"][0]) == NOW + DAY - 10 * DAY and int(got["t"][-1]) == NOW - MIN
        assert len(got) == 9 * 1440
        assert [x.symbol for x in s.series()] == ["BTCUSDT"]  # a series left with no bars is forgotten


def test_prune_applies_the_retention_as_time_passes(tmp_path: Path) -> None:
    now = [NOW]
    with BarStore(tmp_path, DAY, clock=lambda: now[0]) as s:
        s.append("binance", "BTCUSDT", MIN, bars(NOW - DAY, 1440))
        now[0] += 60 * MIN
        assert s.prune() == 60
        assert int(s.load("binance", "BTCUSDT", MIN, 0)["t"][0]) == NOW - DAY + 60 * MIN


def test_past_the_size_cap_the_oldest_bars_of_every_series_go(tmp_path: Path) -> None:
    with BarStore(tmp_path, 3650 * DAY, clock=lambda: NOW) as s:
        for k in range(4):
            s.append("binance", f"S{k}", MIN, bars(NOW - 20_000 * MIN, 20_000, seed=k))
        used = s.used_bytes()
        s.max_bytes = used // 2
        deleted = s.prune()
        assert deleted > 0 and s.used_bytes() <= s.max_bytes
        for k in range(4):
            got = s.load("binance", f"S{k}", MIN, 0)
            assert 0 < len(got) < 20_000
            assert same(got, bars(NOW - 20_000 * MIN, 20_000, seed=k)[-len(got):])  # the newest kept


def test_readers_in_threads_see_whole_appends_while_a_writer_writes(store: BarStore) -> None:
    chunks = [bars(NOW - 3000 * MIN + i * 100 * MIN, 100, seed=i) for i in range(30)]
    whole = np.concatenate(chunks)
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def write() -> None:
        try:
            for chunk in chunks:
                store.append("binance", "BTCUSDT", MIN, chunk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while True:
                finished = done.is_set()
                got = store.load("binance", "BTCUSDT", MIN, 0)
                last = store.last_time("binance", "BTCUSDT", MIN)
                # each append is one transaction: a reader sees a whole number of chunks, in order
                assert len(got) % 100 == 0 and same(got, whole[: len(got)])
                assert last is None or last >= (int(got["t"][-1]) if len(got) else last)
                seen.append(len(got))
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2 * READERS)]  # more than the pool holds
    writer = threading.Thread(target=write)
    for t in (*readers, writer):
        t.start()
    for t in (writer, *readers):
        t.join(60)
        assert not t.is_alive()
    assert not errors, errors
    assert max(seen) == len(whole)
    assert same(store.load("binance", "BTCUSDT", MIN, 0), whole)


def test_a_file_that_is_not_a_store_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=rf"{FILENAME}: the file is not a tickdeck bar store"):
        BarStore(tmp_path, DAY)


def test_a_root_that_is_a_file_or_a_newer_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="cannot create the bar store's directory"):
        BarStore(tmp_path / "afile", DAY)
    BarStore(tmp_path / "new", DAY).close()
    with sqlite3.connect(tmp_path / "new" / FILENAME) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="written by a newer tickdeck"):
        BarStore(tmp_path / "new", DAY)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    s = BarStore(tmp_path, DAY)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(StoreError, match="is closed"):
        s.load("binance", "X", MIN, 0)
    with pytest.raises(StoreError, match="is closed"):
        s.append("binance", "X", MIN, bars(NOW, 1))


def test_where_the_store_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store_root("") is None and store_root("  ") is None
    assert store_root("auto", {"TICKDECK_DATA_DIR": "/data/td"}) == Path("/data/td")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store_root("auto", {}) == tmp_path / "xdg" / "tickdeck"
    assert store_root("~/bars") == Path.home() / "bars"
    assert open_store(load_config(overrides={"history.store": ""}, env={})) is None
    monkeypatch.setenv("TICKDECK_DATA_DIR", str(tmp_path / "env"))
    s = open_store(load_config(overrides={"history.retention": "2d"}, env={}))
    assert s is not None and s.path == tmp_path / "env" / FILENAME and s.retention_ns == 2 * DAY
    assert s.max_bytes == 1024 * 2**20
    s.close()


def test_a_store_directory_in_a_config_file_is_relative_to_that_file(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "tickdeck.toml"
    cfg.parent.mkdir()
    cfg.write_text('[history]\nstore = "bars"\n')
    assert load_config(str(cfg), env={}).history.store == str(tmp_path / "conf" / "bars")
    cfg.write_text('[history]\nstore = "auto"\n')
    assert load_config(str(cfg), env={}).history.store == "auto"

"""``tickdeck backtest``: known answers on a hand-made series, the same signals as a replay through the
runtime, a deterministic baseline, the JSON and CSV outputs, and bad inputs as one line and status 2."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from console import backtest_cmd
from console.cli import main
from engine import backtest
from engine.backtest import (
    HORIZONS,
    BacktestError,
    Report,
    evaluate,
    load_series,
    replay,
    run,
    select_rules,
)
from engine.config import load_config
from engine.runtime import Runtime
from engine.signals.events import Signal
from engine.signals.rules import Rule
from tests.data import random_walk

ROOT = Path(__file__).resolve().parents[2]
SEC = 1_000_000_000
DAY = 86_400 * SEC
T0 = 1_700_000_000 * SEC - (1_700_000_000 * SEC) % DAY  # a UTC midnight (2023-11-14)

# The hand-made series: daily bars; each opens at the previous close, high = max(o, c) + 1, low = min - 1.
CLOSES = [100, 102, 104, 106, 108, 104, 103, 107, 110, 100,
          99, 101, 103, 105, 106, 104, 102, 100, 98, 97,
          99, 101, 103, 105, 107, 109, 111, 113, 115, 106,
          104, 102, 100, 98, 101, 103, 104, 102, 101, 100]
OPENS = [100, *CLOSES[:-1]]
HIGHS = [max(o, c) + 1 for o, c in zip(OPENS, CLOSES, strict=True)]
LOWS = [min(o, c) - 1 for o, c in zip(OPENS, CLOSES, strict=True)]
# close crosses above 105 (from <= 105 to > 105) at bars 3, 7, 14 (105 -> 106) and 24 (105 -> 107);
# below 100 (from >= 100 to < 100) at 10 (100 -> 99), 18 (100 -> 98) and 33 (100 -> 98), not at 9 (to 100)
UP_BARS = [3, 7, 14, 24]
DOWN_BARS = [10, 18, 33]
PRICE_RULES = """
[[rules]]
id = "above"
kind = "price"
above = 105
on = "close"

[[rules]]
id = "below"
kind = "price"
below = 100
on = "close"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No TICKDECK_* settings and no user config from the machine running the tests."""
    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path_factory.mktemp("user-config")))


def hand_frame(t0: int = T0) -> pd.DataFrame:
    return pd.DataFrame({"date": t0 + np.arange(len(CLOSES), dtype=np.int64) * DAY, "open": OPENS,
                         "high": HIGHS, "low": LOWS, "close": CLOSES, "volume": 1000})


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def rules_file(tmp_path: Path, text: str = PRICE_RULES) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def price_rules(above: str = "close", below: str = "close") -> tuple[Rule, ...]:
    return select_rules([({"id": "above", "kind": "price", "above": 105, "on": above}, "t"),
                         ({"id": "below", "kind": "price", "below": 100, "on": below}, "t")])


def ret(i: int, k: int, sign: int) -> float:
    """The signed k-bar return of a signal at bar i, nan past the end."""
    if i + k >= len(CLOSES):
        return math.nan
    return sign * (CLOSES[i + k] / CLOSES[i] - 1)


def mae(i: int, sign: int) -> float:
    if i + 20 >= len(CLOSES):
        return math.nan
    if sign > 0:
        return min(0.0, min(LOWS[i + 1 : i + 21]) / CLOSES[i] - 1)
    return min(0.0, 1 - max(HIGHS[i + 1 : i + 21]) / CLOSES[i])


def hand_report(tmp_path: Path, seed: int = 0) -> Report:
    return run([write_csv(hand_frame(), tmp_path / "XYZ.csv")], price_rules(), seed)


# --- known answers -----------------------------------------------------------------------------------

def test_price_rules_fire_at_the_known_bars_with_the_known_figures(tmp_path: Path) -> None:
    report = hand_report(tmp_path)
    up, down = report.groups
    assert (up.rule, up.direction, up.signals, down.rule, down.direction, down.signals) == (
        "above", "up", 4, "below", "down", 3)
    assert (report.symbols, report.bars, report.interval_ns) == (1, 40, DAY)
    assert up.per_1000_bars == 100.0 and down.per_1000_bars == 75.0
    table = report.signals
    assert table.symbol == ["XYZ"] * 7
    assert table.bar_time.tolist() == [T0 + i * DAY for i in sorted(UP_BARS + DOWN_BARS)]
    assert table.price.tolist() == [CLOSES[i] for i in sorted(UP_BARS + DOWN_BARS)]

    # by hand: up 1 bar 108/106, 110/107, 104/106, 109/107 -> 3 of 4 hits; 5 bars 110/106, 103/107,
    # 97/106, 106/107 -> 1 of 4; 20 bars 105/106, 113/107, 101/106, and bar 24 has no bar 44
    h1, h5, h20 = up.horizons
    assert (h1.signals.n, h1.excluded, h1.signals.hit_rate) == (4, 0, 0.75)
    assert (h5.signals.n, h5.excluded, h5.signals.hit_rate) == (4, 0, 0.25)
    assert (h20.signals.n, h20.excluded, h20.signals.hit_rate) == (3, 1, pytest.approx(1 / 3))
    assert h1.signals.mean == pytest.approx((108 / 106 + 110 / 107 + 104 / 106 + 109 / 107) / 4 - 1)
    assert h5.signals.median == pytest.approx(((103 / 107 - 1) + (106 / 107 - 1)) / 2)
    assert h20.signals.median == pytest.approx(105 / 106 - 1)
    # down: profits when price falls; 1 bar 101/99 (miss), 97/98 (hit), 101/98 (miss)
    d1, d5, d20 = down.horizons
    assert (d1.signals.n, d1.signals.hit_rate) == (3, pytest.approx(1 / 3))
    assert d1.signals.mean == pytest.approx(-((101 / 99 - 1) + (97 / 98 - 1) + (101 / 98 - 1)) / 3)
    assert (d5.signals.n, d5.signals.hit_rate) == (3, 0.0)
    assert (d20.signals.n, d20.excluded, d20.signals.hit_rate) == (2, 1, 0.0)

    # MAE: the lowest low of the 20 bars after each up signal (closes 106, 107, 106) is bar 19's 96; the
    # highest high after the down signals at 10 and 18 is bar 28's 116
    assert up.mae.n == 3 and up.mae_excluded == 1
    assert up.mae.worst == pytest.approx(96 / 107 - 1)
    assert up.mae.mean == pytest.approx((2 * (96 / 106 - 1) + (96 / 107 - 1)) / 3)
    assert down.mae.n == 2 and down.mae.worst == pytest.approx(1 - 116 / 98)
    assert down.mae.mean == pytest.approx(((1 - 116 / 99) + (1 - 116 / 98)) / 2)

    # every per-signal figure against the formulas, bar by bar
    for row, i in enumerate(sorted(UP_BARS + DOWN_BARS)):
        sign = 1 if i in UP_BARS else -1
        assert table.direction[row] == ("up" if sign > 0 else "down")
        expected = [ret(i, k, sign) for k in HORIZONS]
        np.testing.assert_allclose(table.returns[row], expected, rtol=1e-12)
        np.testing.assert_allclose(table.mae[row], mae(i, sign), rtol=1e-12)


def test_live_rules_fire_on_the_bar_whose_close_crosses(tmp_path: Path) -> None:
    """A live rule sees each bar once its ticks are in: the same signals as the rule on closed bars."""
    series = load_series([write_csv(hand_frame(), tmp_path / "XYZ.csv")])
    closed = replay(series, price_rules())
    live = replay(series, price_rules(above="live", below="live"))
    assert [(s.rule, s.direction, s.bar_time, s.price) for s in live] == [
        (s.rule, s.direction, s.bar_time, s.price) for s in closed]
    assert len(live) == len(UP_BARS) + len(DOWN_BARS)


def test_bars_off_the_interval_grid_give_the_same_signals_at_their_own_times(tmp_path: Path) -> None:
    """Daily bars stamped 21:00 UTC (a US close) rebuild exactly, and keep their times."""
    aligned = hand_report(tmp_path)
    off = run([write_csv(hand_frame(T0 + 21 * 3600 * SEC), tmp_path / "XYZ.csv")], price_rules())
    assert off.interval_ns == DAY
    assert (off.signals.bar_time - aligned.signals.bar_time == 21 * 3600 * SEC).all()
    np.testing.assert_array_equal(off.signals.returns, aligned.signals.returns)


def test_parquet_and_csv_give_the_same_report(tmp_path: Path) -> None:
    frame = hand_frame()
    frame.to_parquet(tmp_path / "XYZ.parquet", index=False)
    a = hand_report(tmp_path)
    b = run([str(tmp_path / "XYZ.parquet")], price_rules())
    assert a.groups == b.groups
    np.testing.assert_array_equal(a.signals.returns, b.signals.returns)


# --- the same path as live ----------------------------------------------------------------------------

RUNTIME_RULES = PRICE_RULES.replace('above = 105', 'above = 101').replace('below = 100', 'below = 99') + """
[[rules]]
id = "rsi_low"
kind = "cross"
a = "rsi_14"
b = 35
direction = "both"
cooldown = "10m"

[[rules]]
id = "macd"
kind = "cross"
a = "macd_12_26_9"
b = "macd_signal_12_26_9"
cooldown = "5m"

[[rules]]
id = "bb"
kind = "cross"
a = "close"
b = "bb_upper_20_2"
direction = "up"

[[rules]]
id = "spike"
kind = "volume_spike"
window = 20
zscore = 2.0

[[rules]]
id = "move"
kind = "move"
window = 5
pct = 1.0
cooldown = "15m"
"""


def key(s: Signal) -> tuple:
    return (s.symbol, s.rule, s.direction, s.bar_time, s.price, tuple(sorted(s.values.items())))


def test_signals_equal_a_replay_of_the_file_through_the_runtime(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Three symbols in one file (72,000 ticks: more than one feed batch), every kind of rule; the
    backtest ingests in its big chunks and in small ones."""
    minute = 60 * SEC
    frames = []
    for k, name in enumerate(("AAA", "BBB", "CCC")):
        b = random_walk(6000, seed=10 + k)
        frames.append(pd.DataFrame({"timestamp": T0 + np.arange(6000, dtype=np.int64) * minute,
                                    "symbol": name, "open": b.o, "high": b.h, "low": b.l, "close": b.c,
                                    "volume": b.v}))
    path = write_csv(pd.concat(frames).sort_values("timestamp", kind="stable"), tmp_path / "three.csv")
    config_path = rules_file(tmp_path, RUNTIME_RULES)
    overrides = {"feed.name": "replay", "feeds.replay.file": path, "feeds.replay.speed": "max",
                 "engine.interval": "1m"}
    config = load_config(config_path, overrides=overrides, env={})
    runtime = Runtime(config)
    live: list[Signal] = []
    asyncio.run(runtime.run(lambda u: live.extend(u.signals), lambda s: None))
    # the runtime closes each symbol's last bar when the file ends, as the backtest does
    assert runtime.engine.close_due(2**62) == []

    rules = select_rules(config.rules)
    series = load_series([path])
    tested = replay(series, rules)
    assert sorted(map(key, tested)) == sorted(map(key, live))
    monkeypatch.setattr(backtest, "CHUNK_BARS", 1000)
    assert sorted(map(key, replay(series, rules))) == sorted(map(key, tested))
    assert {s.rule for s in tested} == {r.id for r in rules}  # every rule fired: the test has teeth
    assert len(tested) > 500


# --- the baseline -------------------------------------------------------------------------------------

def test_the_baseline_is_deterministic_for_a_seed_and_has_as_many_entries(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        w = random_walk(800, seed=k)
        frame = pd.DataFrame({"date": T0 + np.arange(800, dtype=np.int64) * DAY, "open": w.o, "high": w.h,
                              "low": w.l, "close": w.c, "volume": w.v})
        paths.append(write_csv(frame, tmp_path / f"S{k}.csv"))
    rules = select_rules([({"id": "rsi", "kind": "cross", "a": "rsi_14", "b": 50}, "t"),
                          ({"id": "move", "kind": "move", "window": 3, "pct": 2.0}, "t")])
    series = load_series(paths)
    signals = replay(series, rules)
    a, _ = evaluate(series, rules, signals, seed=5)
    b, _ = evaluate(series, rules, signals, seed=5)
    c, _ = evaluate(series, rules, signals, seed=6)
    assert a == b
    assert a != c
    for g in a:
        assert g.signals > 10
        for h in g.horizons:
            assert h.baseline.n == h.signals.n == g.signals - h.excluded
            assert 0.2 < h.baseline.hit_rate < 0.8
        assert g.mae_baseline.n == g.mae.n == g.horizons[-1].signals.n
        assert g.mae_baseline.worst <= g.mae_baseline.mean <= 0
    # a rule's baseline does not depend on which other rules run with it
    alone, _ = evaluate(series, rules[1:], [s for s in signals if s.rule == "move"], seed=5)
    assert alone == [g for g in a if g.rule == "move"]


# --- the command --------------------------------------------------------------------------------------

def test_json_has_one_object_with_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    assert main(["backtest", path, "--config", rules_file(tmp_path), "--json", "--seed", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"files", "symbols", "bars", "interval", "interval_ns", "first_bar", "last_bar",
                         "seed", "horizons", "mae_bars", "signals", "rules", "timing"}
    summary = [data[k] for k in ("files", "symbols", "bars", "interval", "seed", "signals")]
    assert summary == [[path], 1, 40, "1d", 3, 7]
    assert data["first_bar"] == "2023-11-14T00:00:00Z"
    up, down = data["rules"]
    assert (down["rule"], down["direction"], down["signals"]) == ("below", "down", 3)
    assert set(up) == {"rule", "direction", "description", "signals", "bars", "signals_per_1000_bars",
                       "horizons", "mae"}
    assert [up[k] for k in ("rule", "direction", "signals", "signals_per_1000_bars")] == [
        "above", "up", 4, 100.0]
    assert list(up["horizons"]) == ["1", "5", "20"]
    h20 = up["horizons"]["20"]
    assert set(h20) == {"n", "excluded", "hit_rate", "mean", "median", "baseline"}
    assert set(h20["baseline"]) == {"n", "hit_rate", "mean", "median"}
    assert (h20["n"], h20["excluded"], h20["baseline"]["n"]) == (3, 1, 3)
    assert up["horizons"]["1"]["hit_rate"] == 0.75
    assert set(up["mae"]) == {"n", "excluded", "mean", "median", "worst", "baseline"}
    assert up["mae"]["worst"] == pytest.approx(96 / 107 - 1)
    assert set(data["timing"]) >= {"read_s", "replay_s", "total_s", "bars_per_second"}


def test_rules_picks_rules_by_id_disabled_ones_too(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    config = rules_file(tmp_path, PRICE_RULES.replace('below = 100', 'below = 100\nenabled = false'))
    assert main(["backtest", path, "--config", config, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["rule"], r["direction"], r["signals"]) for r in data["rules"]] == [("above", "up", 4)]
    assert main(["backtest", path, "--config", config, "--json", "--rules", "below"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["rule"], r["direction"], r["signals"]) for r in data["rules"]] == [("below", "down", 3)]


def test_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    assert main(["backtest", path, "--config", rules_file(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 symbol(s), 40 bars of 1d" in out
    assert "above" in out and "below" in out and "75.0" in out  # hit % of 'above' after 1 bar
    assert "bars/s" in out


def test_csv_lists_every_signal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    out = tmp_path / "signals.csv"
    assert main(["backtest", path, "--config", rules_file(tmp_path), "--json", "--csv", str(out)]) == 0
    capsys.readouterr()
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["symbol", "rule", "direction", "bar_time", "price", "ret_1", "ret_5", "ret_20",
                       "mae_20"]
    bars = sorted(UP_BARS + DOWN_BARS)
    assert len(rows) == 1 + len(bars)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    for row, i in zip(rows[1:], bars, strict=True):
        sign = 1 if i in UP_BARS else -1
        expected_time = pd.Timestamp(T0 + i * DAY, unit="ns").strftime("%Y-%m-%dT%H:%M:%SZ")
        assert row[:5] == ["XYZ", "above" if sign > 0 else "below", "up" if sign > 0 else "down",
                           expected_time, repr(float(CLOSES[i]))]
        for cell, want in zip(row[5:], [*(ret(i, k, sign) for k in HORIZONS), mae(i, sign)], strict=True):
            if math.isnan(want):
                assert cell == ""
            else:
                assert float(cell) == pytest.approx(want, rel=1e-12)


# --- mistakes -----------------------------------------------------------------------------------------

def bad_cell(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"close": object})
    frame.loc[2, "close"] = "12,5x"  # row 2 of the frame is line 4 of the file
    return frame


@pytest.mark.parametrize(("change", "expected"), [
    (bad_cell, ["XYZ.csv line 4, column 'close': not a number: '12,5x'"]),
    (lambda f: f.drop(columns="volume"), ["missing required column(s) 'volume'"]),
    (lambda f: f.assign(date=f["date"].iloc[::-1].to_numpy()), ["XYZ.csv line 3, column 'date'",
                                                                  "earlier than the row before it"]),
    (lambda f: f.assign(high=f["low"] - 1), ["XYZ.csv line 2, column 'high'", "below low"]),
])
def test_a_bad_file_is_one_line_status_2_and_no_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      change, expected: list[str]) -> None:
    path = write_csv(change(hand_frame()), tmp_path / "XYZ.csv")
    good = write_csv(hand_frame(), tmp_path / "GOOD.csv")
    out = tmp_path / "signals.csv"
    assert main(["backtest", good, path, "--config", rules_file(tmp_path), "--csv", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tickdeck: ") and captured.err.count("\n") == 1, captured.err
    for text in expected:
        assert text in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["GOOD.csv", "XYZ.csv", "rules.toml"]


def test_other_mistakes_are_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    config = rules_file(tmp_path)
    hourly = hand_frame().assign(date=T0 + np.arange(40, dtype=np.int64) * 3600 * SEC)
    other = write_csv(hourly, tmp_path / "ABC.csv")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[rules]]\nid = "x"\nkind = "cross"\na = "nosuch_14"\nb = 1\n', encoding="utf-8")
    empty = tmp_path / "empty.toml"
    empty.write_text("rules = []\n", encoding="utf-8")
    (tmp_path / "bars.txt").write_text("x\n", encoding="utf-8")
    cases = [
        (["backtest", path, "--config", config, "--rules", "above,nope"],
         ["unknown rule id 'nope'", "above, below"]),
        (["backtest", path, "--config", str(unknown)], ["rule 'x'", "key 'a'", "nosuch"]),
        (["backtest", path, "--config", str(empty)], ["no rules to backtest"]),
        (["backtest", path, other, "--config", config], ["intervals differ", "1d", "1h"]),
        (["backtest", str(tmp_path / "bars.txt"), "--config", config], ["use .csv or .parquet"]),
        (["backtest", str(tmp_path / "missing.csv"), "--config", config], ["missing.csv: no such file"]),
        (["backtest", path, "--config", config, "--csv", str(tmp_path / "no" / "s.csv")], ["does not exist"]),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("tickdeck: ") and err.count("\n") == 1, err
        for text in expected:
            assert text in err, (argv, err)


def test_the_same_symbol_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    one = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    two = write_csv(hand_frame(), tmp_path / "a" / "XYZ.csv")
    with pytest.raises(BacktestError, match="symbol 'XYZ' is also in"):
        load_series([one, two])


def test_backtest_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from console.cli import main\n"
        "try:\n"
        "    main(['backtest', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('HEAVY', sorted(m for m in ('numba', 'pandas', 'numpy', 'textual') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("HEAVY []"), out.stdout
    assert "--rules" in out.stdout and "--csv" in out.stdout


def test_backtest_signals_equal_the_headless_replays(tmp_path: Path) -> None:
    """The same file through `tickdeck --headless --file F --speed max` and `tickdeck backtest F --csv`:
    the same signals (symbol, rule, direction, bar time, price)."""
    b = random_walk(2000, seed=42)
    frame = pd.DataFrame({"timestamp": T0 + np.arange(2000, dtype=np.int64) * 60 * SEC, "open": b.o,
                          "high": b.h, "low": b.l, "close": b.c, "volume": b.v})
    path = write_csv(frame, tmp_path / "ACME.csv")
    config = rules_file(tmp_path, RUNTIME_RULES)
    env = {**os.environ, "TICKDECK_CONFIG_DIR": str(tmp_path / "none")}
    live = subprocess.run([sys.executable, "-m", "console", "--config", config, "--interval", "1m",
                           "--headless", "--file", path, "--speed", "max", "--status-every", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=True)
    from_headless = sorted((d["symbol"], d["rule"], d["direction"], d["bar_time"], d["price"])
                           for d in map(json.loads, live.stdout.splitlines()))
    out = tmp_path / "signals.csv"
    assert main(["backtest", path, "--config", config, "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    from_backtest = sorted((r["symbol"], r["rule"], r["direction"],
                            int(pd.Timestamp(r["bar_time"]).value), float(r["price"])) for r in rows)
    assert len(from_headless) > 20
    assert from_backtest == from_headless


def test_the_table_has_no_trailing_spaces_and_is_whole_when_piped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped (no terminal), even with COLUMNS=80: one table as wide as its content, no padding."""
    monkeypatch.setenv("COLUMNS", "80")
    path = write_csv(hand_frame(), tmp_path / "XYZ.csv")
    assert main(["backtest", path, "--config", rules_file(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line != line.rstrip()] == []
    header = next(line for line in lines if line.startswith("rule"))
    assert "hit %" in header and "MAE20" in header  # the whole table, not cut in two
    rows = lines[lines.index(header):]
    table = rows[:next(i for i, line in enumerate(rows) if line.startswith("returns in %"))]
    assert max(map(len, table)) == len(header)  # as wide as its widest content, no wider
    assert "…" not in "".join(lines)


def test_a_narrow_terminal_gets_two_tables_with_every_figure(tmp_path: Path) -> None:
    """At 80 columns the table is printed as two, never with figures cut to '+1…'."""
    from rich.console import Console

    report = hand_report(tmp_path)

    def printed(width: int) -> list[str]:
        out = io.StringIO()
        backtest_cmd._print(report, Console(file=out, width=width, force_terminal=True, color_system=None))
        return out.getvalue().splitlines()

    wide, narrow = printed(200), printed(80)
    assert sum(line.startswith("rule") for line in wide) == 1
    assert sum(line.startswith("rule") for line in narrow) == 2
    assert max(map(len, narrow)) <= 80 and "…" not in "\n".join(narrow)
    assert [line for line in narrow + wide if line != line.rstrip()] == []
    def words(lines: list[str]) -> set[str]:
        return {word for word in " ".join(lines).split() if not word.startswith("─")}

    assert words(wide) == words(narrow)  # nothing lost


def test_percent_figures_that_round_to_zero_carry_no_sign() -> None:
    from engine.backtest import pct

    assert [pct(x) for x in (-0.00001, 0.00001, -0.0, 0.0)] == ["0.00"] * 4
    assert pct(-0.0001, signed=False) == "0.0"
    assert (pct(0.0123), pct(-0.0123), pct(float("nan"))) == ("+1.23", "-1.23", "-")

"""The console's drawing, tested on its own: the pure functions behind each widget, the themes and the
messages, with no app running."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from console.messages import FeedStatusChanged, SignalsDetected, SnapshotReady
from engine.feeds.base import FeedStatus
from engine.runtime import PipelineHealth
from engine.signals.events import Signal
from engine.snapshot import MarketSnapshot, Quote
from themes import APP_CSS_PATH, THEME_NAMES, THEMES, next_theme
from widgets import formatting as fmt
from widgets.header import HeaderState, TickRate, render_header
from widgets.help_screen import binding_rows, render_help
from widgets.signal_log import matches, newest_first, signal_parts
from widgets.sparkline import BLOCKS, resample, spark
from widgets.watchlist import Watchlist
from widgets.watchlist_layout import SIGNAL_MAX, SPARK_MAX, SPARK_MIN, layout, ordered, row_cells

WIDGETS = Path(__file__).resolve().parents[2] / "widgets"


def quote(symbol: str = "AAPL", last: float = 101.0, first: float = 100.0, **values: float) -> Quote:
    closes = np.linspace(first, last, 30)
    closes.flags.writeable = False
    change = last - first
    return Quote(symbol, last, change, 100 * change / first, 12_345.0, closes,
                 values or {"rsi_14": 55.5, "macd_hist_12_26_9": float("nan")}, 0)


def signal(symbol: str, rule: str = "rsi_oversold", direction: str = "up", at: int = 0,
           bar: int | None = None) -> Signal:
    """A signal detected at ``at`` for the bar opened at ``bar`` (default: the same instant)."""
    t = 1_700_000_000_000_000_000 + at
    return Signal(symbol, rule, direction, t if bar is None else 1_700_000_000_000_000_000 + bar,  # type: ignore[arg-type]
                  101.25, {"rsi_14": 29.1, "level": 30.0}, t)


# --- sparkline ----------------------------------------------------------------------------------------

def test_spark_spans_the_eight_levels() -> None:
    assert spark(range(8), 8) == BLOCKS
    assert spark([3.0, 1.0, 2.0], 10) == "█▁▅"


def test_spark_edge_cases() -> None:
    assert spark([], 10) == ""
    assert spark([1.0, 2.0], 0) == ""
    assert spark([5.0, 5.0, 5.0], 3) == BLOCKS[3] * 3
    assert spark([1.0, math.nan, 3.0], 3) == "▁ █"
    assert spark([math.nan, math.inf], 2) == "  "


def test_spark_resamples_long_series_and_ends_on_the_last_value() -> None:
    values = np.arange(60.0)
    line = spark(values, 12)
    assert len(line) == 12 and line[-1] == "█" and line[0] == "▁"
    assert list(line) == sorted(line)
    assert resample(values, 6) == [9.0, 19.0, 29.0, 39.0, 49.0, 59.0]
    assert resample([1.0, 2.0], 6) == [1.0, 2.0]


# --- formatting ---------------------------------------------------------------------------------------

def test_number_formats() -> None:
    assert fmt.price(12345.678) == "12,345.68" and fmt.price(0.12345) == "0.1235"
    assert fmt.change(-0.4986, 127.5) == "-0.50" and fmt.change(0.0042, 0.5) == "+0.0042"
    assert fmt.percent(0.523) == "+0.52%"
    assert [fmt.volume(v) for v in (950, 12_345, 4_560_000, 1.2e9)] == ["950", "12.3K", "4.56M", "1.20B"]
    assert [fmt.indicator(v) for v in (1234.5, 123.45, 28.414, -0.01234, 0.0)] == [
        "1,234", "123.5", "28.41", "-0.0123", "0.000"]
    for f in (fmt.price, fmt.percent, fmt.volume, fmt.indicator):
        assert f(math.nan) == fmt.MISSING
    assert fmt.fit("rsi_overbought", 8) == "rsi_ove…" and fmt.fit("abc", 8) == "abc"
    assert fmt.column_label("rsi_14") == "RSI 14" and fmt.column_label("macd_hist_12_26_9") == "MACD HIST"


# --- watchlist ----------------------------------------------------------------------------------------

COLUMNS = ("rsi_14", "macd_hist_12_26_9")


@pytest.mark.parametrize("width", [80, 100, 160])
def test_layout_fills_the_width_without_overflowing(width: int) -> None:
    specs = layout(width, COLUMNS, 7)
    used = sum(s.width + 1 for s in specs) + 1  # a gap before each column, and the scrollbar
    by_key = {s.key: s for s in specs}
    assert used <= width
    assert SPARK_MIN <= by_key["spark"].width <= SPARK_MAX
    assert by_key["signal"].width >= 12  # "▲ rsi_overs…" and "▼ rsi_overb…" stay apart
    if width >= 100:
        assert by_key["signal"].width == SIGNAL_MAX
    assert [s.key for s in specs] == ["symbol", "last", "change", "change_pct", "volume", "spark", *COLUMNS,
                                      "signal"]


def test_row_cells_text_and_roles() -> None:
    specs = layout(100, COLUMNS, 7)
    cells = dict(zip((s.key for s in specs), row_cells("AAPL", quote(), signal("AAPL"), specs), strict=True))
    assert cells["symbol"] == ("AAPL", "symbol")
    assert cells["last"].text == "101.00"
    assert cells["change"] == ("+1.00", "up") and cells["change_pct"] == ("+1.00%", "up")
    assert cells["volume"].text == "12.3K"
    assert cells["spark"].role == "up" and cells["spark"].text.endswith("█")
    assert cells["rsi_14"] == ("55.50", "value")
    assert cells["macd_hist_12_26_9"] == (fmt.MISSING, "muted")
    assert cells["signal"] == ("▲ rsi_oversold", "up")

    falling = dict(zip((s.key for s in specs), row_cells("X", quote(last=90.0), None, specs), strict=True))
    assert falling["change"].role == "down" and falling["signal"].text == ""
    untraded = row_cells("Y", None, None, specs)
    assert untraded[0].text == "Y" and {c.text for c in untraded[1:]} <= {fmt.MISSING, ""}


def test_watchlist_reactives_are_documented() -> None:
    for name in ("symbols", "indicators", "snapshot", "signals", "message"):
        assert name in Watchlist._reactives


# --- signal log, header, help -------------------------------------------------------------------------

def test_signal_log_is_newest_first_and_bounded() -> None:
    log = newest_first((), [signal("A", at=1), signal("B", at=2)])
    log = newest_first(log, [signal("C", at=3)], limit=2)
    assert [s.symbol for s in log] == ["C", "B"]


def test_signal_log_orders_by_bar_time_when_a_quiet_bar_closes_late() -> None:
    log = newest_first((), [signal("A", at=1, bar=10), signal("B", at=2, bar=20), signal("C", at=3, bar=20)])
    log = newest_first(log, [signal("QUIET", at=9, bar=15), signal("D", at=9, bar=30)])
    assert [s.symbol for s in log] == ["D", "C", "B", "QUIET", "A"]


def test_signal_lines_are_coloured_by_direction() -> None:
    up = signal_parts(signal("UPP", "rsi_oversold", "up"))
    down = signal_parts(signal("DWN", "rsi_overbought", "down"))
    line = "".join(text for text, _ in up)
    assert "▲ UPP" in line and "rsi_oversold" in line and "101.25" in line
    assert "▼ DWN" in "".join(text for text, _ in down)
    assert [role for _, role in up[1:3]] == ["up", "up"]  # the symbol and the rule
    assert [role for _, role in down[1:3]] == ["down", "down"]
    assert up[0][1] == up[-1][1] == "muted"  # time and operands


def test_signal_filter_matches_symbol_or_rule_in_any_case() -> None:
    s = signal("BTCUSDT", "macd_cross")
    assert matches(s, "btc") and matches(s, "MACD") and matches(s, "") and not matches(s, "eth")


def test_watchlist_order_filters_and_sorts_with_missing_values_last() -> None:
    quotes = {"A": quote("A", last=10.0), "B": quote("B", last=30.0), "C": quote("C", last=20.0)}
    symbols = ("A", "B", "C", "D")  # D has not traded
    assert ordered(symbols, quotes, {}, None, False) == list(symbols)
    assert ordered(symbols, quotes, {}, "last", True) == ["B", "C", "A", "D"]
    assert ordered(symbols, quotes, {}, "last", False) == ["A", "C", "B", "D"]
    assert ordered(symbols, quotes, {}, "symbol", True) == ["D", "C", "B", "A"]
    assert ordered(("AAPL", "MSFT", "AMZN"), {}, {}, None, False, "a") == ["AAPL", "AMZN"]
    fired = {"C": signal("C", at=5), "A": signal("A", at=9)}
    assert ordered(symbols, quotes, fired, "signal", True) == ["A", "C", "B", "D"]


def test_header_line() -> None:
    text = render_header(HeaderState("sim", "live", clock_ns=1_700_000_000_000_000_000, interval="1m",
                                     tick_rate=2013.4)).plain
    assert "sim ● live" in text and "1m bars" in text and "2,013 ticks/s" in text and "PAUSED" not in text
    assert "starting engine…" in render_header(HeaderState("sim")).plain
    failed = render_header(HeaderState("sim", "failed", reason="boom", paused=True)).plain
    assert "failed boom" in failed and "PAUSED" in failed


def test_header_counts_down_to_the_next_reconnect() -> None:
    now, soon = 1_700_000_000_000_000_000, 1_700_000_004_200_000_000
    waiting = HeaderState("binance", "reconnecting", reason="connection refused", retry_at_ns=soon,
                          now_ns=now)
    assert "reconnecting connection refused (retry in 5s)" in render_header(waiting).plain
    later = HeaderState("binance", "reconnecting", retry_at_ns=soon, now_ns=now + 4_000_000_000)
    assert "(retry in 1s)" in render_header(later).plain
    due = HeaderState("binance", "reconnecting", retry_at_ns=now, now_ns=now + 9_000_000_000)
    assert "(retry in 0s)" in render_header(due).plain
    live = HeaderState("binance", "live", retry_at_ns=soon, now_ns=now)
    assert "retry" not in render_header(live).plain


def test_header_shows_lag_always_and_trouble_only_when_there_is_some() -> None:
    calm = render_header(HeaderState("binance", "live", health=PipelineHealth(lag_p99_ms=3.4))).plain
    assert "lag 3 ms" in calm and "bad" not in calm and "reconn" not in calm and "queued" not in calm
    rough = render_header(HeaderState("binance", "live", health=PipelineHealth(
        lag_p99_ms=1250.0, queue_depth=7, bad_messages=1234, reconnects=2, gaps=5))).plain
    assert "lag 1,250 ms" in rough and "7 queued" in rough and "1,234 bad" in rough
    assert "2 reconn" in rough and "5 gaps" in rough


def test_tick_rate() -> None:
    rate = TickRate(window_ns=2_000_000_000)
    assert math.isnan(rate.update(0, 0))
    assert rate.update(500_000_000, 100) == pytest.approx(200.0)
    for i in range(2, 12):
        last = rate.update(i * 500_000_000, i * 300)
    assert last == pytest.approx(600.0)


def test_help_lists_described_bindings() -> None:
    from textual.binding import Binding

    rows = binding_rows([Binding("q", "quit", "Quit"), Binding("question_mark", "help", "Help"),
                         Binding("x", "hidden", ""), ("space", "toggle_pause", "Pause")])
    assert rows == [("q", "Quit"), ("?", "Help"), ("space", "Pause")]
    assert "space   Pause" in render_help(rows).plain


# --- themes and messages ------------------------------------------------------------------------------

def test_the_four_themes_and_their_cycle() -> None:
    assert THEME_NAMES == ("dark", "light", "high-contrast", "ansi16")
    assert tuple(theme.name for theme in THEMES) == THEME_NAMES  # the config's names, each defined here
    assert [next_theme(n) for n in THEME_NAMES] == [*THEME_NAMES[1:], "dark"]
    assert next_theme("textual-dark") == "dark"


def test_ansi16_uses_only_the_16_ansi_colours() -> None:
    (theme,) = [t for t in THEMES if t.name == "ansi16"]
    colours = [getattr(theme, f) for f in ("primary", "secondary", "accent", "warning", "error", "success",
                                          "foreground", "background", "surface", "panel", "boost")]
    colours += list(theme.variables.values())
    names = {"black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"}
    allowed = {"ansi_default"} | {f"ansi_{n}" for n in names} | {f"ansi_bright_{n}" for n in names}
    assert theme.ansi and set(colours) <= allowed


LITERAL_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}\b|\brgba?\(|\bhsla?\(")


def test_stylesheets_use_theme_variables_not_colours() -> None:
    sheets = [APP_CSS_PATH.read_text(encoding="utf-8")]
    sheets += [p.read_text(encoding="utf-8") for p in WIDGETS.glob("*.py")]
    for text in sheets:
        assert not LITERAL_COLOUR.search(text)


def test_snapshots_replace_each_other_and_nothing_else() -> None:
    snap = MarketSnapshot(0, (), 0, 0)
    a, b = SnapshotReady(snap), SnapshotReady(snap)
    others = [SignalsDetected((signal("A"),)), FeedStatusChanged(FeedStatus("sim", "live"))]
    assert a.can_replace(b)
    assert not any(a.can_replace(m) for m in others)
    assert not any(m.can_replace(a) for m in others)

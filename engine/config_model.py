"""The configuration model: every section and key, its default, its type and its check.

Frozen dataclasses; a key's check (in the field metadata) returns the normalised value or raises
``ValueError("must ...")``, which the loader (``engine.config``) turns into a message that names the key
and the file. The loader derives the set of valid keys, their types and their environment variables
from these classes, so adding a setting is adding a field here (and its default to ``config.toml``).

No numpy, numba or pandas here: the console loads its config before drawing its first frame.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from engine.config_keys import key_names
from engine.feeds.registry import FEED_NAMES
from engine.indicators.catalogue import DEFAULT_OUTPUTS, resolve

BUILTIN = "the built-in defaults"
THEME_NAMES: tuple[str, ...] = ("dark", "light", "high-contrast", "ansi16")
"""The console's themes, in the order ``t`` cycles through them. Kept here, as plain names, so the
config is checked without importing Textual; ``themes`` defines a theme for each (a test checks both
agree)."""

_UNIT_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_MIN_INTERVAL_NS = _UNIT_NS["s"]
_MAX_INTERVAL_NS = _UNIT_NS["d"]


# --- value checks: each returns the (normalised) value or raises ValueError("must ...") ------------

Check = Callable[[Any], Any]


def parse_duration(text: str) -> int:
    """``"<n>s|m|h|d"`` (a positive whole number and a unit) in nanoseconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"must be a duration like '30s', '15m', '4h' or '1d' (a whole number and s, m, h or d), "
            f"got {text!r}"
        )
    return int(match.group(1)) * _UNIT_NS[match.group(2)]


def parse_interval(text: str) -> int:
    """A bar interval between 1 s and 1 d in nanoseconds, e.g. ``"1m"`` → 60_000_000_000."""
    ns = parse_duration(text)
    if not _MIN_INTERVAL_NS <= ns <= _MAX_INTERVAL_NS:
        raise ValueError(f"must be between '1s' and '1d', got {text!r}")
    return ns


def _interval(value: str) -> str:
    parse_interval(value)
    return value.strip()


def _between(low: float, high: float | None = None) -> Check:
    def check(value: float) -> float:
        if high is None and value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return check


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _one_of(*allowed: str) -> Check:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    return check


def _url(*schemes: str) -> Check:
    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL, got {value!r}")
        return value

    return check


def _url_or_off(*schemes: str) -> Check:
    """A URL, or an empty string that turns the service off."""
    url = _url(*schemes)

    def check(value: str) -> str:
        return value if value == "" else url(value)

    return check


def _urls_or_off(*schemes: str) -> Check:
    """A URL, several comma-separated (a cluster's servers), or an empty string that turns it off."""
    url = _url(*schemes)

    def check(value: str) -> str:
        if value:
            for part in value.split(","):
                url(part.strip())
        return value

    return check


def _indicators(value: tuple[str, ...]) -> tuple[str, ...]:
    """Canonical output names (``rsi`` → ``rsi_14``), duplicates dropped, order kept."""
    names: list[str] = []
    for name in value:
        canonical = resolve(name).name  # IndicatorError says what is wrong with the name
        if canonical not in names:
            names.append(canonical)
    return tuple(names)


def _history(value: int) -> int:
    """0 (sized to the needs) or a number of bars between 10 and 1,000,000."""
    if value != 0 and not 10 <= value <= 1_000_000:
        raise ValueError(f"must be 0 (sized to the chart and the indicators) or between 10 and 1000000, "
                         f"got {value}")
    return value


POSITION_COLUMNS = ("quantity", "avg_cost", "value", "pnl", "pnl_pct", "day_pnl", "weight")
"""The watchlist's position columns (``widgets.position_columns`` draws them; a test keeps the two equal)."""


def _position_columns(value: tuple[str, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for name in value:
        if name not in POSITION_COLUMNS:
            raise ValueError(f"must be one of {', '.join(POSITION_COLUMNS)}, got {name!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


def _setting(default: Any, check: Check | None = None) -> Any:
    return field(default=default, metadata={"check": check})


# --- the model -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineConfig:
    interval: str = _setting("1m", _interval)
    """Bar interval: ``<n>s|m|h|d`` between 1s and 1d."""
    history: int = _setting(0, _history)
    """Closed bars kept in memory per symbol: 0 sizes it to what the chart and the indicators need
    (``engine.backfill.sizing.ring_bars``: 559 with the default outputs); a larger number keeps more."""
    max_symbols: int = _setting(1024, _between(1, 100_000))
    """Symbol slots preallocated by the engine."""
    indicators: tuple[str, ...] = _setting(DEFAULT_OUTPUTS, _indicators)
    """Indicator outputs computed for every symbol (canonical catalogue names)."""

    @property
    def interval_ns(self) -> int:
        return parse_interval(self.interval)


@dataclass(frozen=True)
class FeedConfig:
    name: str = _setting("sim", _one_of(*FEED_NAMES))
    """Which feed to run."""
    record: str = _setting("")
    """Record every tick the feed delivers to this file (.parquet, .jsonl or .jsonl.gz); empty: off."""


@dataclass(frozen=True)
class SimFeedConfig:
    symbols: int = _setting(40, _between(1, 5000))
    seed: int = _setting(7, _between(0))
    rate: float = _setting(200.0, _positive)
    """Ticks per second across all symbols."""
    backfill: int = _setting(300, _between(0, 100_000))
    """Bars of history generated at start, so indicators and charts start warm."""


def _symbols(value: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    if not names:
        raise ValueError("must name at least one symbol")
    return names


# The kline intervals Binance serves (as engine.feeds.binance.KLINE_INTERVALS; a test keeps them equal).
BINANCE_KLINES = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w",
                  "1M")


def _binance_stream(value: str) -> str:
    if value != "trade" and not (value.startswith("kline_") and value[6:] in BINANCE_KLINES):
        raise ValueError(f"must be 'trade' or 'kline_<interval>' with interval one of "
                         f"{', '.join(BINANCE_KLINES)}, got {value!r}")
    return value


def _speed(value: str) -> str:
    text = value.strip().lower()
    if text == "max":
        return "max"
    text = text.removesuffix("x")
    try:
        factor = float(text)
    except ValueError:
        factor = 0.0
    if not factor > 0:
        raise ValueError(f"must be a positive factor (1, 10, 0.5) or 'max', got {value!r}")
    return text


STALE_AFTER_S = 15.0
"""Seconds without a message before a live connection is reported stale (twice that: it reconnects)."""


def _stale_after() -> Any:
    return _setting(STALE_AFTER_S, _between(1.0, 3600.0))


@dataclass(frozen=True)
class BinanceFeedConfig:
    url: str = _setting("wss://stream.binance.com:9443", _url("wss", "ws"))
    symbols: tuple[str, ...] = _setting(("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"), _symbols)
    stream: str = _setting("trade", _binance_stream)
    """``trade`` (every trade) or ``kline_<interval>`` (one update per kline change; less traffic)."""
    stale_after: float = _stale_after()
    """Seconds without a message before the feed is reported stale; twice that and it reconnects."""
    rest_url: str = _setting("https://api.binance.com", _url("https", "http"))
    """Binance's REST API: klines and aggregate trades for history at start and to refill gaps."""


@dataclass(frozen=True)
class CoinbaseFeedConfig:
    url: str = _setting("wss://advanced-trade-ws.coinbase.com", _url("wss", "ws"))
    products: tuple[str, ...] = _setting(("BTC-USD", "ETH-USD", "SOL-USD"), _symbols)
    stale_after: float = _stale_after()
    """Seconds without a message before the feed is reported stale; twice that and it reconnects."""
    rest_url: str = _setting("https://api.coinbase.com", _url("https", "http"))
    """Advanced Trade's public REST API: product candles and market trades for history."""


def _exchange_id(value: str) -> str:
    """A ccxt exchange id (``kraken``, ``okx``): lower-case letters and digits; whether ccxt knows it is
    checked when the feed is built, so the config never imports ccxt."""
    text = value.strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,39}", text):
        raise ValueError(f"must be a ccxt exchange id such as 'kraken' or 'okx', got {value!r}")
    return text


def _exchange_options(value: dict[str, Any]) -> dict[str, Any]:
    if not all(isinstance(k, str) for k in value):
        raise ValueError("must be a table of ccxt constructor options")
    return copy.deepcopy(value)


@dataclass(frozen=True)
class CcxtFeedConfig:
    """Any exchange ccxt knows (``pip install tickdeck[exchanges]``); ``--feed ccxt:kraken`` sets both."""

    exchange: str = _setting("kraken", _exchange_id)
    """The ccxt exchange id: kraken, okx, bybit, kucoin, bitstamp, ..."""
    symbols: tuple[str, ...] = _setting(("BTC/USD", "ETH/USD"), _symbols)
    """Markets in ccxt's unified form, BASE/QUOTE."""
    stale_after: float = _stale_after()
    """Seconds without a message before the feed is reported stale; twice that and it reconnects."""
    options: dict[str, Any] = field(default_factory=dict, metadata={"check": _exchange_options})
    """Given to the exchange's constructor (over ``enableRateLimit = true``); never logged."""


@dataclass(frozen=True)
class YahooFeedConfig:
    url: str = _setting("https://query1.finance.yahoo.com", _url("https", "http"))
    cookie_url: str = _setting("https://fc.yahoo.com", _url("https", "http"))
    """Where the session cookie comes from (the quote API needs a cookie and a crumb)."""
    symbols: tuple[str, ...] = _setting(("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "SPY", "QQQ"), _symbols)
    interval: float = _setting(5.0, _positive)
    """Seconds between polls of one symbol."""
    batch_size: int = _setting(50, _between(1, 1000))
    requests_per_minute: float = _setting(60.0, _positive)
    burst: int = _setting(5, _between(1, 1000))
    requests_per_hour: int = _setting(2000, _between(1, 1_000_000))
    timeout: float = _setting(10.0, _positive)
    chart_url: str = _setting("https://query2.finance.yahoo.com", _url("https", "http"))
    """Yahoo's chart API (``v8/finance/chart/{symbol}``): bars of history."""
    consent_url: str = _setting("https://guce.yahoo.com/consent", _url_or_off("https", "http"))
    """The consent form, accepted when the cookie request brings no cookie (the EU); "" never asks."""
    stream_url: str = _setting("wss://streamer.finance.yahoo.com/?version=2", _url_or_off("wss", "ws"))
    """Yahoo's streamer: prices pushed as they change, polling as the fallback; "" polls only."""


@dataclass(frozen=True)
class ReplayFeedConfig:
    file: str = _setting("")
    """OHLCV or tick file (CSV, Parquet, or a recording's .jsonl/.jsonl.gz)."""
    speed: str = _setting("1", _speed)
    """1 = real time, 10 = ten times faster, max = as fast as the engine takes it."""
    loop: bool = _setting(False)
    symbol: str = _setting("")
    """Symbol of an OHLCV file without a symbol column (empty: the file name)."""


@dataclass(frozen=True)
class AttachFeedConfig:
    """``tickdeck attach``: the console on a headless service's broadcast."""

    stale_after: float = _stale_after()
    """Seconds without a frame from the service before it is reported stale; twice that: reconnect."""


@dataclass(frozen=True)
class FeedsConfig:
    sim: SimFeedConfig = field(default_factory=SimFeedConfig)
    binance: BinanceFeedConfig = field(default_factory=BinanceFeedConfig)
    coinbase: CoinbaseFeedConfig = field(default_factory=CoinbaseFeedConfig)
    yahoo: YahooFeedConfig = field(default_factory=YahooFeedConfig)
    ccxt: CcxtFeedConfig = field(default_factory=CcxtFeedConfig)
    replay: ReplayFeedConfig = field(default_factory=ReplayFeedConfig)
    attach: AttachFeedConfig = field(default_factory=AttachFeedConfig)


def _store(value: str) -> str:
    """``auto`` (the user data directory), ``""`` (off) or a directory."""
    return value.strip()


def _retention(value: str) -> str:
    parse_duration(value)
    return value.strip()


@dataclass(frozen=True)
class HistoryConfig:
    """Bars from the past on live feeds: fetched from the service at start and after gaps, and kept on
    disk so a restart fetches only what is missing."""

    backfill: int = _setting(0, _between(0, 1_000_000))
    """Bars per symbol to start with; 0: as many as the configured outputs and rules need to warm up.
    Never more than the engine keeps in memory (``engine.history``)."""
    fetch: bool = _setting(True)
    """Fetch history from the feed's REST API at start and to refill gaps (false: stored bars only)."""
    store: str = _setting("auto", _store)
    """Where closed bars are kept: ``auto`` (the user data directory, or ``$TICKDECK_DATA_DIR``), a
    directory, or ``""`` to keep none."""
    retention: str = _setting("90d", _retention)
    """Stored bars older than this are pruned (a duration: ``30d``, ``12h``)."""
    store_max_mb: int = _setting(1024, _between(1, 1_000_000))
    """The most the bar store may take on disk, in MiB: past it, the oldest bars of every series are
    pruned until it takes 90 % of that."""


def _bus_name(value: str) -> str:
    """An engine's name on the bus: a subject token (letters, digits, '_' and '-'), or empty."""
    value = value.strip()
    if value and not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
        raise ValueError(f"must be letters, digits, '_' and '-' only (it names subjects), got {value!r}")
    return value


def _shard(value: str) -> str:
    """``K/N``, ``auto`` or empty (``engine.shard_spec.parse_shard``)."""
    from engine.shard_spec import parse_shard

    parse_shard(value)  # its ShardError is a ValueError: the config names the key and the file
    return value.strip()


def _env_name(value: str) -> str:
    value = value.strip()
    valid = (value[:1].isalpha() or value[:1] == "_") and all(c.isascii() and (c.isalnum() or c == "_")
                                                              for c in value)
    if value and not valid:
        raise ValueError(f"must be the name of an environment variable, got {value!r}")
    return value


@dataclass(frozen=True)
class BusConfig:
    """The fleet's message bus (NATS JetStream, ``engine.bus``): what the headless service publishes."""

    url: str = _setting("", _urls_or_off("nats", "tls"))
    """``nats://HOST:4222`` (or ``tls://``), a cluster's several comma-separated; empty: publish nothing.
    Credentials never go in it."""
    engine: str = _setting("", _bus_name)
    """This engine's name in status and snapshot subjects; empty: the host name and the process id."""
    creds_file: str = _setting("")
    """A NATS credentials file (``.creds``: a user JWT and its nkey seed); empty: none."""
    token_env: str = _setting("", _env_name)
    """The environment variable holding a NATS token; empty: none."""
    connect_timeout: float = _setting(5.0, _between(0.1, 300.0))
    """Seconds the first connection may take before the service gives up (exit status 2)."""
    max_backoff: float = _setting(30.0, _between(0.1, 600.0))
    """The longest wait between two reconnection attempts (the backoff doubles from 0.25 s to this)."""
    signals_max_age: str = _setting("30d", _retention)
    signals_max_bytes: int = _setting(1024 * 2**20, _between(2**20))
    bars_max_age: str = _setting("7d", _retention)
    bars_max_bytes: int = _setting(4096 * 2**20, _between(2**20))
    bars_max_per_subject: int = _setting(0, _between(0, 10_000_000))
    """Bars the bar stream keeps per symbol at most (0: no such limit, only age and bytes): what a
    takeover's warm-up reads, so a fleet bounds the stream by its symbols rather than by time."""
    duplicate_window: str = _setting("2m", _retention)
    """JetStream's de-duplication window: the same signal published again within it is stored once."""
    replicas: int = _setting(1, _between(1, 5))
    """Copies JetStream keeps of each stream: 1 on one server, 3 on a cluster of three (or more)."""
    snapshot_every: float = _setting(1.0, _between(0.0, 3600.0))
    """Seconds between two snapshots published for consoles (0: none)."""
    buffer: str = _setting("auto", _store)
    """The disk buffer of signals not yet published: ``auto`` (the user state directory) or a file."""
    buffer_max: int = _setting(100_000, _between(1, 10_000_000))
    """Signals the disk buffer holds at most; past it, newer signals are counted as overflow and dropped."""
    shard: str = _setting("", _shard)
    """This engine's share of the feed's symbols: ``K/N`` (fixed), ``auto`` (the bucket), empty: all."""
    shard_ttl: float = _setting(10.0, _between(0.5, 3600.0))
    """``auto``: seconds after its last renewal that an engine's presence expires (its symbols move)."""
    shard_renew: float = _setting(2.0, _between(0.1, 600.0))
    """``auto``: seconds between two renewals of this engine's presence (less than ``shard_ttl``)."""
    shard_check: float = _setting(1.0, _between(0.1, 600.0))
    """``auto``: seconds between two reads of the live engines (a takeover waits one at most)."""


@dataclass(frozen=True)
class UiConfig:
    fps: int = _setting(10, _between(1, 60))
    """Snapshots drawn per second."""
    theme: str = _setting("dark", _one_of(*THEME_NAMES))
    """The console's colour theme."""
    columns: tuple[str, ...] = _setting(("rsi_14", "macd_hist_12_26_9"), _indicators)
    """Indicator columns of the watchlist."""
    position_columns: tuple[str, ...] = _setting(POSITION_COLUMNS, _position_columns)
    """Position columns of the watchlist, in order (shown while the active list holds a position, or
    by the ``positions`` key): ``quantity avg_cost value pnl pnl_pct day_pnl weight``."""


def _key(default: str) -> Any:
    return _setting(default, key_names)


@dataclass(frozen=True)
class KeysConfig:
    """The console's keys, by action (Textual key names; several keys comma-separated)."""

    add: str = _key("a")
    delete: str = _key("d")
    undo: str = _key("u")
    move_up: str = _key("shift+up")
    move_down: str = _key("shift+down")
    sort: str = _key("s")
    filter: str = _key("slash")
    new_list: str = _key("n")
    rename_list: str = _key("r")
    delete_list: str = _key("D")
    move_list_left: str = _key("less_than_sign")
    move_list_right: str = _key("greater_than_sign")
    open: str = _key("enter")
    back: str = _key("escape")
    theme: str = _key("t")
    pause: str = _key("space")
    perf: str = _key("p")
    backtest: str = _key("b")
    position: str = _key("e")
    edit_position: str = _key("E")
    delete_position: str = _key("ctrl+x")
    positions: str = _key("c")
    portfolio: str = _key("w")
    help: str = _key("question_mark")
    quit: str = _key("q")
    list_1: str = _key("1")
    list_2: str = _key("2")
    list_3: str = _key("3")
    list_4: str = _key("4")
    list_5: str = _key("5")
    list_6: str = _key("6")
    list_7: str = _key("7")
    list_8: str = _key("8")
    list_9: str = _key("9")


class RuleTable(NamedTuple):
    """One ``[[rules]]`` table as written (a plain dict) and the file it came from.

    A 2-tuple, so ``engine.signals.rules.load_rules(config.rules)`` takes the config's rules as they are.
    """

    table: dict[str, Any]
    file: str = BUILTIN


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"id": "rsi_oversold", "kind": "cross", "a": "rsi_14", "b": 30, "direction": "up",
     "cooldown": "15m"},
    {"id": "rsi_overbought", "kind": "cross", "a": "rsi_14", "b": 70, "direction": "down",
     "cooldown": "15m"},
    {"id": "macd_cross", "kind": "cross", "a": "macd_12_26_9", "b": "macd_signal_12_26_9",
     "direction": "both", "cooldown": "30m"},
    {"id": "bb_breakout", "kind": "cross", "a": "close", "b": "bb_upper_20_2", "direction": "up",
     "cooldown": "15m"},
    {"id": "golden_cross", "kind": "cross", "a": "sma_50", "b": "sma_200", "direction": "both"},
    {"id": "volume_spike", "kind": "volume_spike", "window": 20, "zscore": 3.0, "cooldown": "15m"},
    {"id": "move_2pct", "kind": "move", "window": 5, "pct": 2.0, "cooldown": "15m"},
    {"id": "position_stop", "kind": "stop", "cooldown": "15m"},
    {"id": "position_target", "kind": "target", "cooldown": "15m"},
)


def _default_rules() -> tuple[RuleTable, ...]:
    return tuple(RuleTable(copy.deepcopy(rule)) for rule in DEFAULT_RULES)


@dataclass(frozen=True)
class Config:
    """The whole configuration. Build it with :func:`load_config`; ``Config()`` is the defaults."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    rules: tuple[RuleTable, ...] = field(default_factory=_default_rules)
    sinks: tuple[RuleTable, ...] = ()
    """``[[sinks]]``: where the headless service delivers signals (validated by ``engine.sinks``)."""
    files: tuple[str, ...] = field(default=(), compare=False)
    """The config files that were read, lowest precedence first."""

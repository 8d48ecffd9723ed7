"""The indicator catalogue: names, parameters, outputs, state sizes and warm-up lengths.

Pure Python on purpose (no numba, no numpy): config validation, ``--help`` and the console's first
frame need to know what ``rsi_14`` means long before any kernel is compiled.

An output name is ``<output>[_<param>...]``, e.g. ``sma_20``, ``macd_signal_12_26_9``,
``bb_upper_20_2``. Missing trailing parameters take their defaults. Outputs of one kind with equal
parameters share a single instance (``macd_12_26_9`` and ``macd_hist_12_26_9`` are one MACD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

RING_HEADER = 2  # mirrors kernels.common.RING_HEADER


class IndicatorError(ValueError):
    """An indicator name or parameter that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int or float
    default: float
    low: float
    high: float


@dataclass(frozen=True)
class Kind:
    """One indicator algorithm. ``rows`` and ``lookback`` take the parameter values in order;
    ``lookback`` returns one number for all outputs or a tuple with one per output."""

    code: int
    title: str
    outputs: tuple[str, ...]
    params: tuple[Param, ...]
    rows: Callable[..., int]
    lookback: Callable[..., int | tuple[int, ...]]
    bare: bool = False  # canonical name omits parameters when they are the defaults (sar, obv)
    talib: str = ""  # the TA-Lib function it must equal, if any


def _p(name: str, default: float, low: float, high: float, kind: type = int) -> Param:
    return Param(name, kind, default, low, high)


def _period(default: int, low: int = 2) -> Param:
    return _p("period", default, low, 100_000)


def _ring(p: int) -> int:
    return RING_HEADER + p


def _sma(p: int) -> int:
    return 2 + _ring(p)


EMA = 4
WEXT = lambda p: 2 + 2 * p  # noqa: E731 - window extreme deque

KINDS: tuple[Kind, ...] = (
    Kind(1, "Simple moving average", ("sma",), (_period(20),), lambda p: _sma(p), lambda p: p - 1,
         talib="SMA"),
    Kind(2, "Exponential moving average", ("ema",), (_period(20),), lambda p: EMA, lambda p: p - 1,
         talib="EMA"),
    Kind(3, "Weighted moving average", ("wma",), (_period(20),), lambda p: 4 + _ring(p),
         lambda p: p - 1, talib="WMA"),
    Kind(4, "Double EMA", ("dema",), (_period(20),), lambda p: 2 * EMA, lambda p: 2 * (p - 1),
         talib="DEMA"),
    Kind(5, "Triple EMA", ("tema",), (_period(20),), lambda p: 3 * EMA, lambda p: 3 * (p - 1),
         talib="TEMA"),
    Kind(6, "Kaufman adaptive MA", ("kama",), (_period(10),), lambda p: 4 + _ring(p + 1),
         lambda p: p, talib="KAMA"),
    Kind(7, "Triple-smoothed EMA rate of change", ("trix",), (_period(15),),
         lambda p: 3 * EMA, lambda p: 3 * (p - 1) + 1, talib="TRIX"),
    Kind(8, "MACD", ("macd", "macd_signal", "macd_hist"),
         (_p("fast", 12, 2, 100_000), _p("slow", 26, 2, 100_000), _p("signal", 9, 1, 100_000)),
         lambda f, sl, sg: 1 + 3 * EMA,
         lambda f, sl, sg: max(f, sl) - 1 + sg - 1, talib="MACD"),
    Kind(9, "Bollinger bands", ("bb_upper", "bb_middle", "bb_lower"),
         (_period(20), _p("k", 2.0, 0.0, 100.0, float)), lambda p, k: 12 + _ring(p),
         lambda p, k: p - 1, talib="BBANDS"),
    Kind(10, "Z-score of close", ("zscore",), (_period(20),), lambda p: 12 + _ring(p),
         lambda p: p - 1),
    Kind(11, "Z-score of volume", ("volume_zscore",), (_period(20),), lambda p: 12 + _ring(p),
         lambda p: p - 1),
    Kind(12, "Donchian channel", ("donchian_upper", "donchian_lower", "donchian_middle"),
         (_period(20, 1),), lambda p: 1 + 2 * WEXT(p), lambda p: p - 1, talib="MAX/MIN"),
    Kind(13, "Keltner channel", ("keltner_upper", "keltner_middle", "keltner_lower"),
         (_period(20), _p("k", 2.0, 0.0, 100.0, float)), lambda p, k: EMA + 5, lambda p, k: p),
    Kind(20, "Relative strength index", ("rsi",), (_period(14),), lambda p: 4, lambda p: p,
         talib="RSI"),
    Kind(21, "Stochastic", ("stoch_k", "stoch_d"),
         (_p("fastk", 14, 1, 100_000), _p("slowk", 3, 1, 100_000), _p("slowd", 3, 1, 100_000)),
         lambda fk, sk, sd: 1 + 2 * WEXT(fk) + _sma(sk) + _sma(sd),
         lambda fk, sk, sd: fk - 1 + sk - 1 + sd - 1, talib="STOCH"),
    Kind(22, "Commodity channel index", ("cci",), (_period(20),), lambda p: _ring(p),
         lambda p: p - 1, talib="CCI"),
    Kind(23, "Williams %R", ("willr",), (_period(14),), lambda p: 1 + 2 * WEXT(p),
         lambda p: p - 1, talib="WILLR"),
    Kind(24, "Money flow index", ("mfi",), (_period(14),), lambda p: 7 + 2 * _ring(p),
         lambda p: p, talib="MFI"),
    Kind(25, "Rate of change", ("roc",), (_period(10, 1),), lambda p: _ring(p), lambda p: p,
         talib="ROC"),
    Kind(26, "Momentum", ("mom",), (_period(10, 1),), lambda p: _ring(p), lambda p: p,
         talib="MOM"),
    Kind(27, "Ultimate oscillator", ("ultosc",),
         (_p("p1", 7, 1, 100_000), _p("p2", 14, 1, 100_000), _p("p3", 28, 1, 100_000)),
         lambda a, b, c: 15 + 2 * _ring(max(a, b, c)), lambda a, b, c: max(a, b, c),
         talib="ULTOSC"),
    Kind(28, "Aroon", ("aroon_up", "aroon_down"), (_period(14),),
         lambda p: 1 + 2 * WEXT(p + 1), lambda p: p, talib="AROON"),
    Kind(40, "Average true range", ("atr",), (_period(14, 1),), lambda p: 5, lambda p: p,
         talib="ATR"),
    Kind(41, "Normalised ATR", ("natr",), (_period(14, 1),), lambda p: 5, lambda p: p,
         talib="NATR"),
    Kind(42, "Directional movement", ("adx", "plus_di", "minus_di"), (_period(14),),
         lambda p: 10, lambda p: (2 * p - 1, p, p), talib="ADX/PLUS_DI/MINUS_DI"),
    Kind(43, "Parabolic SAR", ("sar",),
         (_p("acceleration", 0.02, 0.0, 1.0, float), _p("maximum", 0.2, 0.0, 1.0, float)),
         lambda a, m: 7, lambda a, m: 1, bare=True, talib="SAR"),
    Kind(44, "Supertrend", ("supertrend", "supertrend_dir"),
         (_period(10, 1), _p("k", 3.0, 0.0, 100.0, float)), lambda p, k: 8, lambda p, k: p),
    Kind(45, "On-balance volume", ("obv",), (), lambda: 4, lambda: 0, bare=True, talib="OBV"),
    Kind(46, "Session VWAP", ("vwap",), (), lambda: 6, lambda: 0, bare=True),
)

KIND_BY_CODE = {k.code: k for k in KINDS}
_OUTPUT_INDEX: dict[str, tuple[Kind, int]] = {
    name: (k, i) for k in KINDS for i, name in enumerate(k.outputs)
}



@dataclass(frozen=True)
class OutputRef:
    """A resolved output name: which kind, with which parameters, and which of its outputs."""

    name: str  # canonical
    kind: Kind
    params: tuple[float, ...]
    index: int

    def typed_params(self) -> list[int | float]:
        return [int(v) if p.kind is int else v for v, p in zip(self.params, self.kind.params, strict=True)]

    @property
    def lookback(self) -> int:
        """Bars that must close before this output has a value (TA-Lib's lookback)."""
        lb = self.kind.lookback(*self.typed_params())
        return lb[self.index] if isinstance(lb, tuple) else lb

    @property
    def instance_key(self) -> tuple[int, tuple[float, ...]]:
        return (self.kind.code, self.params)


def _fmt(value: float, kind: type) -> str:
    if kind is int:
        return str(int(value))
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def canonical(kind: Kind, index: int, params: Sequence[float]) -> str:
    base = kind.outputs[index]
    defaults = tuple(p.default for p in kind.params)
    if not kind.params or (kind.bare and tuple(params) == defaults):
        return base
    return base + "_" + "_".join(_fmt(v, p.kind) for v, p in zip(params, kind.params, strict=True))


# The order of the kinds in DEFAULT_OUTPUTS (by code): the familiar ones first, as the README's table.
_DEFAULT_ORDER = (1, 2, 3, 4, 5, 6, 20, 8, 9, 40, 41, 21, 22, 42, 23, 24, 45, 25, 26, 7, 28, 27, 43, 12, 46,
                  13, 44, 10, 11)


def _every_default_output() -> tuple[str, ...]:
    """Every output of every kind at its default parameters. Derived from ``KINDS``, not listed by hand,
    so a kind or an output added to the catalogue is never left out (a kind missing from
    ``_DEFAULT_ORDER`` comes last)."""
    def place(kind: Kind) -> int:
        return _DEFAULT_ORDER.index(kind.code) if kind.code in _DEFAULT_ORDER else len(_DEFAULT_ORDER)

    return tuple(canonical(kind, i, [p.default for p in kind.params])
                 for kind in sorted(KINDS, key=place) for i in range(len(kind.outputs)))


DEFAULT_OUTPUTS: tuple[str, ...] = _every_default_output()
"""The whole catalogue at default parameters: what ``tickdeck indicators`` writes, what the engine computes
by default (``engine.indicators``) and what the console's detail pane shows."""


def resolve(name: str) -> OutputRef:
    """Parse an output name; raises IndicatorError saying what is wrong with it."""
    text = name.strip().lower()
    parts = text.split("_")
    for cut in range(len(parts), 0, -1):
        base = "_".join(parts[:cut])
        if base in _OUTPUT_INDEX:
            kind, index = _OUTPUT_INDEX[base]
            values = _params(name, kind, parts[cut:])
            return OutputRef(canonical(kind, index, values), kind, values, index)
    known = ", ".join(sorted(_OUTPUT_INDEX))
    raise IndicatorError(f"unknown indicator {name!r}; known: {known}")


def _params(name: str, kind: Kind, raw: list[str]) -> tuple[float, ...]:
    if len(raw) > len(kind.params):
        raise IndicatorError(
            f"{name!r}: {kind.outputs[0]} takes at most {len(kind.params)} parameter(s) "
            f"({', '.join(p.name for p in kind.params) or 'none'})"
        )
    values: list[float] = []
    for i, spec in enumerate(kind.params):
        if i >= len(raw):
            values.append(spec.default)
            continue
        try:
            value = spec.kind(raw[i])
        except ValueError:
            what = "an integer" if spec.kind is int else "a number"
            raise IndicatorError(f"{name!r}: {spec.name} must be {what}, got {raw[i]!r}") from None
        if not spec.low <= value <= spec.high:
            raise IndicatorError(
                f"{name!r}: {spec.name} must be between {_fmt(spec.low, spec.kind)} and "
                f"{_fmt(spec.high, spec.kind)}, got {raw[i]}"
            )
        values.append(float(value))
    _check_relations(name, kind, values)
    return tuple(values)


def _check_relations(name: str, kind: Kind, values: list[float]) -> None:
    if kind.code == 8 and values[0] >= values[1]:
        raise IndicatorError(f"{name!r}: the fast period must be shorter than the slow period")
    if kind.code == 43 and values[0] > values[1]:
        raise IndicatorError(f"{name!r}: acceleration must not exceed the maximum")

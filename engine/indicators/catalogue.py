"""The indicator catalogue: names, parameters, outputs, state sizes and warm-up lengths.

Pure Python on purpose (no numba, no numpy): config validation, ``--help`` and the console's first
frame need to know what ``rsi_14`` means long before any kernel is compiled.

An output name is ``<output>[_<param>...]``, e.g. ``sma_20``, ``macd_signal_12_26_9``,
``bb_upper_20_2``. Missing trailing parameters take their defaults. Outputs of one kind with equal
parameters share a single instance (``macd_12_26_9`` and ``macd_hist_12_26_9`` are one MACD).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.indicators import layout
from engine.indicators.layout import ATR_ROWS, EMA_ROWS, ring, sma, wext

KERNELS = "engine.indicators.kernels"


class IndicatorError(ValueError):
    """An indicator name or parameter that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int or float
    default: float
    low: float
    high: float


def _no_relation(*params: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Kind:
    """One indicator algorithm, declared once: everything else (name parsing, plan layout, the compiled
    dispatch, the specialised kernels, the reachability test) is derived from this.

    ``rows`` and ``lookback`` take the parameter values in order (integers as ``int``); ``lookback``
    returns one number for all outputs or a tuple with one per output. ``check`` takes them too and
    returns what is wrong with their combination (MACD's fast < slow), or None. ``step`` names the
    kernel as ``module:function`` under ``engine.indicators.kernels``, resolved only when a kernel is
    built, so this module never imports numba. ``batch`` optionally names a function of the same module
    that commits a batch of bars exactly as ``step`` would bar by bar, faster (the specialised kernels
    call it for committed batches; ``tests/unit/test_batch_kernels.py`` holds the two equal). ``code`` is
    the kind's number in a plan, given by its place in :data:`KINDS`; nothing tests it by value."""

    title: str
    outputs: tuple[str, ...]
    params: tuple[Param, ...]
    rows: Callable[..., int]
    lookback: Callable[..., int | tuple[int, ...]]
    step: str
    talib: str = ""  # the TA-Lib function it must equal, if any
    bare: bool = False  # canonical name omits parameters when they are the defaults (sar, obv)
    check: Callable[..., str | None] = _no_relation
    code: int = 0
    batch: str = ""  # a function of the step's module: ``step`` over a batch (see above)

    @property
    def key(self) -> str:
        """The kind's stable name: its first output (``sma``, ``macd``, ``bb_upper``)."""
        return self.outputs[0]

    @property
    def step_module(self) -> str:
        return f"{KERNELS}.{self.step.partition(':')[0]}"

    @property
    def step_name(self) -> str:
        return self.step.partition(":")[2]

    def step_function(self) -> Any:
        """The compiled step function (imports numba and the kernel module)."""
        return getattr(importlib.import_module(self.step_module), self.step_name)

    def batch_function(self) -> Any:
        """The compiled batch function (``batch``), or None when the kind has none."""
        return getattr(importlib.import_module(self.step_module), self.batch) if self.batch else None


def _p(name: str, default: float, low: float, high: float, kind: type = int) -> Param:
    return Param(name, kind, default, low, high)


def _period(default: int, low: int = 2) -> Param:
    return _p("period", default, low, 100_000)


def _macd_relation(fast: int, slow: int, signal: int) -> str | None:
    return "the fast period must be shorter than the slow period" if fast >= slow else None


def _sar_relation(acceleration: float, maximum: float) -> str | None:
    return "acceleration must not exceed the maximum" if acceleration > maximum else None


_KINDS: tuple[Kind, ...] = (
    Kind("Simple moving average", ("sma",), (_period(20),), sma, lambda p: p - 1,
         "averages:sma_step", talib="SMA"),
    Kind("Exponential moving average", ("ema",), (_period(20),), lambda p: EMA_ROWS, lambda p: p - 1,
         "averages:ema_step", talib="EMA"),
    Kind("Weighted moving average", ("wma",), (_period(20),), lambda p: layout.WMA_FIELDS + ring(p),
         lambda p: p - 1, "averages:wma_step", talib="WMA"),
    Kind("Double EMA", ("dema",), (_period(20),), lambda p: 2 * EMA_ROWS, lambda p: 2 * (p - 1),
         "averages:dema_step", talib="DEMA"),
    Kind("Triple EMA", ("tema",), (_period(20),), lambda p: 3 * EMA_ROWS, lambda p: 3 * (p - 1),
         "averages:tema_step", talib="TEMA"),
    Kind("Kaufman adaptive MA", ("kama",), (_period(10),), lambda p: layout.KAMA_FIELDS + ring(p + 1),
         lambda p: p, "averages:kama_step", talib="KAMA"),
    Kind("Triple-smoothed EMA rate of change", ("trix",), (_period(15),),
         lambda p: 3 * EMA_ROWS, lambda p: 3 * (p - 1) + 1, "averages:trix_step", talib="TRIX"),
    Kind("MACD", ("macd", "macd_signal", "macd_hist"),
         (_p("fast", 12, 2, 100_000), _p("slow", 26, 2, 100_000), _p("signal", 9, 1, 100_000)),
         lambda f, sl, sg: layout.MACD_FIELDS + 3 * EMA_ROWS,
         lambda f, sl, sg: max(f, sl) - 1 + sg - 1, "averages:macd_step", talib="MACD",
         check=_macd_relation, batch="macd_batch"),
    Kind("Bollinger bands", ("bb_upper", "bb_middle", "bb_lower"),
         (_period(20), _p("k", 2.0, 0.0, 100.0, float)), lambda p, k: layout.moments(p),
         lambda p, k: p - 1, "bands:bb_step", talib="BBANDS", batch="bb_batch"),
    Kind("Standard deviation of close", ("stddev",), (_period(20),), layout.moments, lambda p: p - 1,
         "bands:stddev_step", talib="STDDEV"),
    Kind("Z-score of close", ("zscore",), (_period(20),), layout.moments, lambda p: p - 1,
         "bands:zscore_step"),
    Kind("Z-score of volume", ("volume_zscore",), (_period(20),), layout.moments, lambda p: p - 1,
         "bands:volume_zscore_step"),
    Kind("Donchian channel", ("donchian_upper", "donchian_lower", "donchian_middle"),
         (_period(20, 1),), lambda p: layout.COUNTER + 2 * wext(p), lambda p: p - 1,
         "bands:donchian_step", talib="MAX/MIN"),
    Kind("Keltner channel", ("keltner_upper", "keltner_middle", "keltner_lower"),
         (_period(20), _p("k", 2.0, 0.0, 100.0, float)), lambda p, k: layout.KELTNER_ROWS,
         lambda p, k: p, "trend:keltner_step"),
    Kind("Relative strength index", ("rsi",), (_period(14),), lambda p: layout.RSI_ROWS, lambda p: p,
         "oscillators:rsi_step", talib="RSI"),
    Kind("Stochastic", ("stoch_k", "stoch_d"),
         (_p("fastk", 14, 1, 100_000), _p("slowk", 3, 1, 100_000), _p("slowd", 3, 1, 100_000)),
         lambda fk, sk, sd: layout.COUNTER + 2 * wext(fk) + sma(sk) + sma(sd),
         lambda fk, sk, sd: fk - 1 + sk - 1 + sd - 1, "oscillators:stoch_step", talib="STOCH"),
    Kind("Commodity channel index", ("cci",), (_period(20),), ring, lambda p: p - 1,
         "oscillators:cci_step", talib="CCI"),
    Kind("Williams %R", ("willr",), (_period(14),), lambda p: layout.COUNTER + 2 * wext(p),
         lambda p: p - 1, "oscillators:willr_step", talib="WILLR"),
    Kind("Money flow index", ("mfi",), (_period(14),), lambda p: layout.MFI_HEAD + 2 * ring(p),
         lambda p: p, "oscillators:mfi_step", talib="MFI"),
    Kind("Rate of change", ("roc",), (_period(10, 1),), ring, lambda p: p, "oscillators:roc_step",
         talib="ROC"),
    Kind("Momentum", ("mom",), (_period(10, 1),), ring, lambda p: p, "oscillators:mom_step",
         talib="MOM"),
    Kind("Ultimate oscillator", ("ultosc",),
         (_p("p1", 7, 1, 100_000), _p("p2", 14, 1, 100_000), _p("p3", 28, 1, 100_000)),
         lambda a, b, c: layout.ULTOSC_HEAD + 2 * ring(max(a, b, c)), lambda a, b, c: max(a, b, c),
         "oscillators:ultosc_step", talib="ULTOSC"),
    Kind("Aroon", ("aroon_up", "aroon_down"), (_period(14),),
         lambda p: layout.COUNTER + 2 * wext(p + 1), lambda p: p, "oscillators:aroon_step",
         talib="AROON"),
    Kind("Average true range", ("atr",), (_period(14, 1),), lambda p: ATR_ROWS, lambda p: p,
         "trend:atr_step", talib="ATR"),
    Kind("Normalised ATR", ("natr",), (_period(14, 1),), lambda p: ATR_ROWS, lambda p: p,
         "trend:natr_step", talib="NATR"),
    Kind("Directional movement", ("adx", "plus_di", "minus_di"), (_period(14),),
         lambda p: layout.DMI_ROWS, lambda p: (2 * p - 1, p, p), "trend:dmi_step",
         talib="ADX/PLUS_DI/MINUS_DI"),
    Kind("Parabolic SAR", ("sar",),
         (_p("acceleration", 0.02, 0.0, 1.0, float), _p("maximum", 0.2, 0.0, 1.0, float)),
         lambda a, m: layout.SAR_ROWS, lambda a, m: 1, "trend:sar_step", talib="SAR", bare=True,
         check=_sar_relation),
    Kind("Supertrend", ("supertrend", "supertrend_dir"),
         (_period(10, 1), _p("k", 3.0, 0.0, 100.0, float)), lambda p, k: layout.SUPERTREND_ROWS,
         lambda p, k: p, "trend:supertrend_step"),
    Kind("On-balance volume", ("obv",), (), lambda: layout.OBV_ROWS, lambda: 0, "trend:obv_step",
         talib="OBV", bare=True),
    Kind("Session VWAP", ("vwap",), (), lambda: layout.VWAP_ROWS, lambda: 0, "trend:vwap_step",
         bare=True),
)

KINDS: tuple[Kind, ...] = tuple(replace(k, code=i + 1) for i, k in enumerate(_KINDS))
"""Every kind; a kind's ``code`` is its place here (plans are built per process, never stored)."""
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
        return typed(self.kind, self.params)

    @property
    def lookback(self) -> int:
        """Bars that must close before this output has a value (TA-Lib's lookback)."""
        lb = self.kind.lookback(*self.typed_params())
        return lb[self.index] if isinstance(lb, tuple) else lb

    @property
    def instance_key(self) -> tuple[str, tuple[float, ...]]:
        return (self.kind.key, self.params)


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


# The order of the kinds in DEFAULT_OUTPUTS (by key): the familiar ones first, as the README's table.
_DEFAULT_ORDER = ("sma", "ema", "wma", "dema", "tema", "kama", "rsi", "macd", "bb_upper", "atr", "natr",
                  "stddev", "stoch_k", "cci", "adx", "willr", "mfi", "obv", "roc", "mom", "trix", "aroon_up",
                  "ultosc", "sar", "donchian_upper", "vwap", "keltner_upper", "supertrend", "zscore",
                  "volume_zscore")


def _every_default_output() -> tuple[str, ...]:
    """Every output of every kind at its default parameters. Derived from ``KINDS``, not listed by hand,
    so a kind or an output added to the catalogue is never left out (a kind missing from
    ``_DEFAULT_ORDER`` comes last)."""
    def place(kind: Kind) -> int:
        return _DEFAULT_ORDER.index(kind.key) if kind.key in _DEFAULT_ORDER else len(_DEFAULT_ORDER)

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
    problem = kind.check(*typed(kind, values))
    if problem:
        raise IndicatorError(f"{name!r}: {problem}")
    return tuple(values)


def typed(kind: Kind, values: Sequence[float]) -> list[int | float]:
    """Parameter values as the declaration's types (integers as ``int``)."""
    return [int(v) if p.kind is int else v for v, p in zip(values, kind.params, strict=True)]

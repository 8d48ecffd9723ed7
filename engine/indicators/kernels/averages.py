"""Moving averages and the indicators built from them: SMA EMA WMA DEMA TEMA KAMA TRIX MACD."""

from __future__ import annotations

from engine.indicators.kernels.common import NAN, ema_update, sma_update
from engine.jit import njit


@njit
def sma_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = sma_update(st, b, s, c, ip[0], commit)


@njit
def ema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    p = ip[0]
    out[ob, s] = ema_update(st, b, s, c, p, 2.0 / (p + 1), commit)


@njit
def wma_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def dema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def tema_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def kama_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def trix_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def macd_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN
    out[ob + 2, s] = NAN

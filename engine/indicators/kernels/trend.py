"""Range, direction and volume: ATR NATR ADX/DI SAR Supertrend OBV VWAP."""

from __future__ import annotations

from engine.indicators.kernels.common import NAN
from engine.jit import njit


@njit
def atr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def natr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def dmi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN
    out[ob + 2, s] = NAN


@njit
def sar_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def supertrend_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN


@njit
def obv_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def vwap_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def keltner_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN
    out[ob + 2, s] = NAN

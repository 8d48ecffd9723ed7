"""Bounded oscillators and momentum: RSI STOCH CCI WILLR MFI ROC MOM ULTOSC AROON."""

from __future__ import annotations

from engine.indicators.kernels.common import NAN
from engine.jit import njit


@njit
def rsi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def stoch_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN


@njit
def cci_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def willr_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def mfi_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def roc_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def mom_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def ultosc_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def aroon_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN

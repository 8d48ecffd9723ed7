"""Price bands and normalisations: Bollinger, z-score, Donchian, Keltner."""

from __future__ import annotations

from engine.indicators.kernels.common import NAN
from engine.jit import njit


@njit
def bb_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN
    out[ob + 2, s] = NAN


@njit
def zscore_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def volume_zscore_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN


@njit
def donchian_step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob):
    out[ob, s] = NAN
    out[ob + 1, s] = NAN
    out[ob + 2, s] = NAN

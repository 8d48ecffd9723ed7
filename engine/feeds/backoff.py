"""Reconnect delays: exponential with full jitter, so a fleet of clients does not reconnect in step.

Every retry loop that uses it runs forever (a feed through an outage of days), so its exponent is
bounded: ``attempt`` stops growing at ``max_attempt``, the first attempt whose ceiling reaches ``cap``.
Without the bound, ``2.0 ** attempt`` overflowed at attempt 1,024 (4.4 hours of refused connections at
the feeds' 0.5 s to 30 s) and the OverflowError ended the feed.
"""

from __future__ import annotations

import math
import random


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        if not (0 < base <= cap and math.isfinite(cap)):
            raise ValueError(f"backoff needs 0 < base <= cap < inf, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self.attempt = 0
        #: the bound of ``attempt``: from here on every ceiling is ``cap`` (at most 2,098, for the widest
        #: range of floats; doubling a float never raises, as ``**`` does, it only reaches inf)
        self.max_attempt = 0
        ceiling = base
        while ceiling < cap:
            ceiling *= 2.0
            self.max_attempt += 1
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt: uniform in [base/2, min(cap, base * 2**attempt)]."""
        # below max_attempt, base * 2**attempt < cap: ldexp cannot overflow
        ceiling = self.cap if self.attempt >= self.max_attempt else math.ldexp(self.base, self.attempt)
        self.attempt = min(self.attempt + 1, self.max_attempt)
        return self._rng.uniform(min(self.base / 2, ceiling), ceiling)

    def reset(self) -> None:
        """After a connection that worked: start again from the base delay."""
        self.attempt = 0

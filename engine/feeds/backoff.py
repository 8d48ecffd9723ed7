"""Reconnect delays: exponential with full jitter, so a fleet of clients does not reconnect in step."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt: uniform in [base/2, min(cap, base * 2**attempt)]."""
        ceiling = min(self.cap, self.base * 2.0 ** self.attempt)
        self.attempt += 1
        return self._rng.uniform(min(self.base / 2, ceiling), ceiling)

    def reset(self) -> None:
        """After a connection that worked: start again from the base delay."""
        self.attempt = 0

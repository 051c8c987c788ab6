"""A token bucket: `capacity` tokens, refilled continuously at capacity/period per second.

Time comes from the caller (`now`) or the injected clock, never from the wall
directly, so tests can step it exactly. The level may go below zero: a charge
for real usage larger than what was reserved is a debt the bucket pays back
with its refill, which is what keeps a tokens-per-minute limit honest when an
estimate was too low.
"""

from __future__ import annotations

import time
from typing import Callable

# Float refill (100/60 per second, or elapsed time taken from a unix timestamp
# near 1.8e9 whose last bit is ~2e-7 s) can land a hair under a whole token;
# without this slack a request that is due by the arithmetic would be refused.
EPSILON = 1e-6


class TokenBucket:
    __slots__ = ("capacity", "rate", "level", "stamp", "period", "_clock")

    def __init__(
        self,
        capacity: float,
        *,
        period: float = 60.0,
        clock: Callable[[], float] = time.time,
        now: float | None = None,
    ) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity!r}")
        if period <= 0:
            raise ValueError(f"period must be > 0, got {period!r}")
        self.capacity = capacity
        self.period = period
        self.rate = capacity / period
        self.level = float(capacity)
        self._clock = clock
        self.stamp = clock() if now is None else now

    def __repr__(self) -> str:
        return f"TokenBucket(capacity={self.capacity!r}, level={self.level!r}, period={self.period!r})"

    def refill(self, now: float | None = None) -> float:
        """Bring the level up to `now` and return it. A clock that steps back
        refills nothing and keeps the later stamp, so it can never mint tokens."""
        if now is None:
            now = self._clock()
        if now > self.stamp:
            level = self.level + (now - self.stamp) * self.rate
            self.level = level if level < self.capacity else self.capacity
            self.stamp = now
        return self.level

    def try_take(self, amount: float, now: float | None = None) -> bool:
        """Take `amount` if it is there; otherwise change nothing."""
        if self.refill(now) + EPSILON < amount:
            return False
        self.level -= amount
        return True

    def adjust(self, delta: float, now: float | None = None) -> None:
        """Give back (delta > 0) or charge (delta < 0) after the fact. A refund
        never lifts the level above capacity; a charge may leave a debt."""
        level = self.refill(now) + delta
        self.level = level if level < self.capacity else self.capacity

    def wait(self, amount: float, now: float | None = None) -> float:
        """Seconds until `amount` tokens are available (0 if they are now)."""
        missing = amount - self.refill(now)
        if missing <= EPSILON:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return missing / self.rate

    def fit(self, amount: float) -> float:
        """What a reservation of `amount` may hold: at most a whole bucket, else it
        could never be admitted; a zero bucket still asks for 1, so it refuses."""
        capacity = self.capacity or 1
        return amount if amount < capacity else capacity

    def can_take(self, amount: float, now: float) -> bool:
        """Whether `try_take(amount, now)` would succeed; changes only the refill."""
        # `refill`, inlined: the limiter asks this of every bucket on every request.
        level = self.level
        if now > self.stamp:
            level += (now - self.stamp) * self.rate
            self.level = level = level if level < self.capacity else self.capacity
            self.stamp = now
        return level + EPSILON >= amount

    def take(self, amount: float) -> None:
        """Take unconditionally, right after `can_take` (or `refill`) brought the level to now."""
        self.level -= amount

    def header_numbers(self) -> tuple[int, int, float]:
        """(limit, whole tokens left, seconds until full) as of the last refill,
        for the x-ratelimit-* headers."""
        level = self.level
        missing = self.capacity - level
        return (
            int(self.capacity),
            int(level + EPSILON) if level > 0 else 0,
            missing / self.rate if missing > 0 < self.rate else 0.0,
        )

    def is_full(self, now: float | None = None) -> bool:
        return self.refill(now) >= self.capacity

    def resize(self, capacity: float, now: float | None = None) -> None:
        """Apply a new capacity from now on: time already elapsed refills at the
        old rate, and the level is clipped to the new capacity (never topped up)."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity!r}")
        self.refill(now)
        self.capacity = capacity
        self.rate = capacity / self.period
        if self.level > capacity:
            self.level = float(capacity)

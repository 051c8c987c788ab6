"""Sliding-window throttles per account, per client address and per key lookup id.

One class serves three jobs, each under its own app key: failed logins (one
minute), signups (one hour) and failed API key checks (one minute).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable, Iterable


from ..errors import RateLimited

WINDOW = 60.0


class LoginThrottle:
    """Counts what it is told to count. For logins that is failures only, so a
    user who types the right password is never slowed down by their own
    successful logins: an attempt is counted before its check is awaited (so
    parallel attempts cannot all slip under the limit) and refunded if it
    succeeds."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_tracked: int = 100_000,
        window: float = WINDOW,
        what: str = "failed logins",
    ) -> None:
        self._clock = clock
        self._max_tracked = max_tracked
        self._window = window
        self._what = what
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, keys: Iterable[str], limit: int) -> None:
        now = self._clock()
        for key in keys:
            window = self._recent(key, now)
            if window is not None and len(window) >= limit:
                wait = window[0] + self._window - now
                raise RateLimited(
                    f"Too many {self._what}; try again in {max(1, round(wait))} s.",
                    retry_after=wait,
                )

    def take(self, keys: Iterable[str], limit: int) -> float:
        """Check and count one attempt at once, with no await between; returns
        the attempt's stamp for `refund`."""
        keys = tuple(keys)
        self.check(keys, limit)
        return self.fail(keys, limit)

    def refund(self, keys: Iterable[str], stamp: float) -> None:
        """Take back an attempt counted by `take` (it succeeded)."""
        for key in keys:
            window = self._failures.get(key)
            if window is not None:
                try:
                    window.remove(stamp)
                except ValueError:
                    pass

    def fail(self, keys: Iterable[str], limit: int) -> float:
        now = self._clock()
        for key in keys:
            window = self._recent(key, now)
            if window is None:
                window = self._failures[key] = deque()
                if len(self._failures) > self._max_tracked:
                    self._failures.popitem(last=False)
            window.append(now)
            while len(window) > limit:
                window.popleft()
        return now

    def _recent(self, key: str, now: float) -> deque[float] | None:
        window = self._failures.get(key)
        if window is None:
            return None
        while window and window[0] <= now - self._window:
            window.popleft()
        return window



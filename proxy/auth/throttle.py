"""Failed-login throttle: a sliding one-minute window per account and per address."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable, Iterable

from aiohttp import web

from ..errors import RateLimited

WINDOW = 60.0


class LoginThrottle:
    """Counts failures only, so a user who types the right password is never
    slowed down by their own successful logins."""

    def __init__(self, clock: Callable[[], float], *, max_tracked: int = 100_000) -> None:
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, keys: Iterable[str], limit: int) -> None:
        now = self._clock()
        for key in keys:
            window = self._recent(key, now)
            if window is not None and len(window) >= limit:
                wait = window[0] + WINDOW - now
                raise RateLimited(
                    f"Too many failed logins; try again in {max(1, round(wait))} s.",
                    retry_after=wait,
                )

    def fail(self, keys: Iterable[str], limit: int) -> None:
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

    def _recent(self, key: str, now: float) -> deque[float] | None:
        window = self._failures.get(key)
        if window is None:
            return None
        while window and window[0] <= now - WINDOW:
            window.popleft()
        return window


from ..appkeys import LOGIN_THROTTLE  # noqa: E402  (every app key lives in appkeys)

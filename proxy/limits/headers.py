"""OpenAI's x-ratelimit-* response headers.

Reset times are Go-style durations ("840ms", "1.5s", "6m0s"), rounded up to
the millisecond so a client that waits exactly that long is not refused
again. Formatting a duration costs more than the limiter's arithmetic, and
at thousands of requests a second the same few thousand values recur, so the
strings are memoised (bounded) per formatter.
"""

from __future__ import annotations

import math

from ..config.units import format_duration

LIMIT_REQUESTS = "x-ratelimit-limit-requests"
REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
RESET_REQUESTS = "x-ratelimit-reset-requests"
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
RESET_TOKENS = "x-ratelimit-reset-tokens"


class DurationFormatter:
    """`format_duration` with the input rounded up to the millisecond (to the
    second from a minute on, where Go-style strings stop showing fractions)."""

    __slots__ = ("_cache", "_max")

    def __init__(self, max_entries: int = 8192) -> None:
        self._cache: dict[int, str] = {}
        self._max = max_entries

    def __call__(self, seconds: float) -> str:
        # The tiny offset keeps float noise (0.84 * 1000 = 840.0000000000001)
        # from rounding a whole millisecond up.
        ms = math.ceil(seconds * 1000 - 1e-6) if seconds > 0 else 0
        if ms >= 60_000:
            ms = -(-ms // 1000) * 1000
        text = self._cache.get(ms)
        if text is None:
            if len(self._cache) >= self._max:
                self._cache.clear()
            text = self._cache[ms] = format_duration(ms / 1000)
        return text


def rate_limit_headers(
    duration: DurationFormatter,
    limit_requests: int | None,
    remaining_requests: int,
    reset_requests: float,
    limit_tokens: int | None,
    remaining_tokens: int,
    reset_tokens: float,
) -> dict[str, str]:
    """A limit of None means nothing limits that dimension: its three headers
    are left out rather than invented."""
    headers: dict[str, str] = {}
    if limit_requests is not None:
        headers[LIMIT_REQUESTS] = str(limit_requests)
        headers[REMAINING_REQUESTS] = str(remaining_requests)
        headers[RESET_REQUESTS] = duration(reset_requests)
    if limit_tokens is not None:
        headers[LIMIT_TOKENS] = str(limit_tokens)
        headers[REMAINING_TOKENS] = str(remaining_tokens)
        headers[RESET_TOKENS] = duration(reset_tokens)
    return headers

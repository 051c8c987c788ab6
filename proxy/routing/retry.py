"""Envoy-style retry budget: retries in flight may not exceed a share of active requests.

Without it, every client request to a dead upstream turns into `attempts`
upstream requests and retries multiply an outage. `min_retries` keeps retries
possible at low traffic, where a ratio of a handful of requests rounds to zero.
"""

from __future__ import annotations

import random

from ..config.snapshot import RetrySettings


class RetryBudget:
    def __init__(self) -> None:
        self.active_requests = 0
        self.active_retries = 0
        self.denied = 0
        self.granted = 0

    def allows(self, settings: RetrySettings) -> bool:
        limit = max(settings.min_retries, int(self.active_requests * settings.budget_ratio))
        if self.active_retries >= limit:
            self.denied += 1
            return False
        self.granted += 1
        return True


def backoff_delay(settings: RetrySettings, retry_number: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter (AWS's recipe): uniform in [0, base·2^n], capped."""
    ceiling = min(settings.max_backoff, settings.backoff * (2 ** retry_number))
    return (rng or random).uniform(0, ceiling)

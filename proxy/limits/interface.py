"""The limiter seam: what the request path asks of any limiter backend.

Like envoyproxy/ratelimit's `RateLimitCache`: one call admits a request
against every limit that applies to it (all or nothing), and the hold it
returns is settled with the real usage or released. `Limiter` (in-process,
exact under one event loop) is the first implementation; `RedisLimiter`
(redis_backend.py) implements the same five methods with one atomic script
per admission, shared by every worker.
"""

from __future__ import annotations

from typing import Awaitable, Iterable, Protocol, Union, runtime_checkable

from ..auth.principal import Principal
from ..config.snapshot import PlanConfig
from .quotas import WindowTotals


class Hold(Protocol):
    """What an admitted request holds until it is settled or released."""

    @property
    def estimated_tokens(self) -> int: ...

    @property
    def estimated_cost(self) -> float: ...


@runtime_checkable
class RateLimiter(Protocol):
    def admit(self, principal: Principal, plan: PlanConfig, *, estimated_tokens: int,
              estimated_cost: float) -> Union[Hold, Awaitable[Hold]]:
        """Reserve one request and the estimates against every limit, or raise
        RateLimited / QuotaExceeded (with their headers) and reserve nothing.
        The in-process limiter returns the hold itself (no await on the hot
        path); a networked one returns an awaitable, which raises instead."""

    def settle(self, reservation: Hold, *, tokens: int, cost: float) -> None:
        """Swap the estimate for the real usage. Idempotent. Never waits: a
        networked backend starts the work and returns."""

    def release(self, reservation: Hold) -> None:
        """Give back everything but the request itself. Idempotent; never waits."""

    def headers(self, reservation: Hold) -> dict[str, str]:
        """The x-ratelimit-* headers as of the admission."""

    def seed(self, totals: Iterable[WindowTotals]) -> Union[None, Awaitable]:
        """Load the persisted usage of the current windows, before any admission."""

"""Plans and limits: rpm/tpm token buckets, concurrency, calendar quotas, budgets.

    bucket.py    TokenBucket: continuous refill, injected clock
    windows.py   UTC day/month windows and the cached Calendar
    quotas.py    day/month counters, the monthly budget, WindowTotals
    headers.py   x-ratelimit-* headers with Go-style reset durations
    interface.py RateLimiter: the seam (admit / settle / release / headers / seed)
    limiter.py   Limiter: the in-process RateLimiter, synchronous and exact

`setup(app)` puts one `Limiter` under `appkeys.LIMITER`, seeds it with the
usage already persisted for the current day and month, and drops idle state
in the background while the app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import AsyncIterator, Awaitable, Callable, Iterable, Union

from aiohttp import web

from ..appkeys import CLOCK, CONFIG, LIMITER, STORE
from .bucket import TokenBucket
from .headers import DurationFormatter, rate_limit_headers
from .interface import Hold, RateLimiter
from .limiter import Limiter, Reservation
from .quotas import QuotaLimits, WindowTotals
from .windows import Calendar, Window, day_window, month_window

__all__ = [
    "LIMITER", "Calendar", "DurationFormatter", "Hold", "Limiter", "QuotaLimits", "RateLimiter",
    "Reservation",
    "TokenBucket", "Window", "WindowTotals", "day_window", "month_window",
    "rate_limit_headers", "setup",
]

# Idle users and keys are dropped this often; it bounds memory, not correctness.
PRUNE_INTERVAL = 60.0

TotalsLoader = Callable[
    [object, float], Union[Iterable[WindowTotals], Awaitable[Iterable[WindowTotals]]]]


def setup(app: web.Application, *, load_totals: TotalsLoader | None = None) -> None:
    """`load_totals(db, now)` (sync or async) returns the persisted usage of
    the current windows, e.g. `proxy.usage.quota_totals.load_window_totals`;
    without it the limiter starts from zero. Needs `app[STORE]` opened by an
    earlier cleanup context when a loader is given."""
    limiter = Limiter(clock=app.get(CLOCK, time.time))
    app[LIMITER] = limiter
    # Buckets of plans that a reload removed or changed start afresh; the others carry over.
    app[CONFIG].subscribe(lambda old, new: limiter.forget_plans(new.plans))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if load_totals is not None:
            totals = load_totals(app[STORE], limiter.clock())
            if inspect.isawaitable(totals):
                totals = await totals
            limiter.seed(totals)
        pruner = asyncio.create_task(_prune_forever(limiter), name="limiter-prune")
        yield
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner

    app.cleanup_ctx.append(lifecycle)


async def _prune_forever(limiter: Limiter) -> None:
    while True:
        await asyncio.sleep(PRUNE_INTERVAL)
        limiter.prune()

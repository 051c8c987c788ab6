"""Plans and limits: rpm/tpm token buckets, concurrency, calendar quotas, budgets.

    bucket.py    TokenBucket: continuous refill, injected clock
    windows.py   UTC day/month windows and the cached Calendar
    quotas.py    day/month counters, the monthly budget, WindowTotals
    headers.py   x-ratelimit-* headers with Go-style reset durations
    interface.py RateLimiter: the seam (admit / settle / release / headers / seed)
    limiter.py   Limiter: the in-process RateLimiter, synchronous and exact
    redis_backend.py  RedisLimiter: the same seam shared by every worker, one
                 Lua script (redis_scripts.py) per admission

`setup(app)` puts the limiter `limits.backend` names under `appkeys.LIMITER`:
a `Limiter` seeded with the usage already persisted for the current day and
month, which drops idle state in the background while the app runs; or a
`RedisLimiter`, which seeds Redis from the same totals when Redis does not
hold them yet. The backend is chosen at start; a reload that changes it is
logged and applies at the next restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from typing import AsyncIterator, Awaitable, Callable, Iterable, Union

from aiohttp import web

from ..appkeys import CLOCK, CONFIG, LIMITER, METRICS, STORE
from ..config.snapshot import LimitsSettings
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

log = logging.getLogger("bluesminds.limits")

# Set by `serve --workers N` in each worker: the share of rpm/tpm a worker
# keeps while the shared limiter is out.
WORKERS_ENV = "BLUESMINDS_WORKERS"

# Idle users and keys are dropped this often; it bounds memory, not correctness.
PRUNE_INTERVAL = 60.0

TotalsLoader = Callable[
    [object, float], Union[Iterable[WindowTotals], Awaitable[Iterable[WindowTotals]]]]


def setup(app: web.Application, *, load_totals: TotalsLoader | None = None) -> None:
    """`load_totals(db, now)` (sync or async) returns the persisted usage of
    the current windows, e.g. `proxy.usage.quota_totals.load_window_totals`;
    without it the limiter starts from zero. Needs `app[STORE]` opened by an
    earlier cleanup context when a loader is given."""
    snapshot = app[CONFIG].current
    settings = snapshot.limits if snapshot is not None else LimitsSettings()

    def backend_changed(old, new) -> None:
        if new.limits.backend != old.limits.backend:
            log.warning("limits.backend changed to %s; it applies when the gateway restarts",
                        new.limits.backend)

    app[CONFIG].subscribe(backend_changed)
    if settings.shared:
        _setup_redis(app, settings, load_totals)
        return
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


def _setup_redis(app: web.Application, settings, load_totals: TotalsLoader | None) -> None:
    from .redis_backend import RedisLimiter

    async def totals(now: float):
        if load_totals is None:
            return []
        loaded = load_totals(app[STORE], now)
        return await loaded if inspect.isawaitable(loaded) else loaded

    flush = app[CONFIG].current.database.flush_interval
    limiter = RedisLimiter(
        settings.backend, hold_ttl=settings.hold_ttl, workers=int(os.environ.get(WORKERS_ENV, "1")),
        load_totals=totals, grace=min(settings.hold_ttl / 3, 1.0) + 2 * flush + 0.25,
        clock=_redis_clock(app.get(CLOCK, time.time)))
    app[LIMITER] = limiter
    app[CONFIG].subscribe(lambda old, new: limiter.forget_plans(new.plans))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if METRICS in app:
            app[METRICS].watch_limiter(limiter)
        await limiter.start()
        yield
        await limiter.close()

    app.cleanup_ctx.append(lifecycle)


def _redis_clock(app_clock):
    """The wall clock leaves "now" to Redis's `TIME`, shared by every worker. A clock
    injected into the app (tests) drives the scripts too, so windows, refills and the
    usage rows it stamps agree as with the in-process limiter. Test hook only:
    BLUESMINDS_TEST_REDIS_CLOCK=1 makes the scripts read "now" from a Redis key,
    which moves the clock of several processes at once."""
    if os.environ.get("BLUESMINDS_TEST_REDIS_CLOCK") == "1":
        return "redis-key"
    return None if app_clock is time.time else app_clock

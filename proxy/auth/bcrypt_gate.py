"""A bound on the API key checks that may run or wait for the bcrypt pool.

Anyone can send a real lookup id with a random secret, and each such request
costs a full bcrypt check. Unbounded, a flood queues minutes of work in front
of every login. The gate lets `concurrency` checks run at once (less than the
pool, so logins and signups always find a free thread) and `queue` more wait;
the next one is refused at once with a 429 that the SDKs retry after
`Retry-After`. 429 rather than 503: the cause is a client sending unverifiable
keys, not a fault of the gateway, and a 5xx would read as an outage in the
operator's dashboards.

A slot is held until the thread has really finished, even when the waiting
request was cancelled, so the bound is on CPU work, not on awaiting tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from typing import Callable, TypeVar

from ..errors import RateLimited

T = TypeVar("T")
BUSY_RETRY_AFTER = 1.0


class BcryptGate:
    def __init__(self, *, concurrency: int) -> None:
        self._free = max(1, concurrency)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def free(self) -> int:
        return self._free

    async def run(self, start: Callable[[], "concurrent.futures.Future[T]"], *, queue: int) -> T:
        """Wait for a slot (refused when `queue` callers already wait), call
        `start` (which submits the work to a pool), and await it. The queue
        bound is per call so that a reload changes it at once."""
        await self._acquire(queue)
        try:
            work = start()
        except BaseException:
            self._release()
            raise
        loop = asyncio.get_running_loop()
        work.add_done_callback(lambda _: _call_soon(loop, self._release))
        return await asyncio.wrap_future(work)

    async def _acquire(self, queue: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        if len(self._waiters) >= queue:
            self.refused += 1
            raise RateLimited(
                "The server is busy checking API keys it has not seen yet; "
                f"try again in {int(BUSY_RETRY_AFTER)} s.",
                retry_after=BUSY_RETRY_AFTER,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as the caller left
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # already skipped by a release
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass  # the loop is closed: nothing waits for the slot any more

"""Stopping a background task for good.

`task.cancel()` then `await task` is not enough on Python 3.11: there
`asyncio.wait_for` swallows a cancellation that arrives in the same loop
iteration as the awaited operation completes (CPython gh-86296, fixed in 3.12
where wait_for is built on asyncio.timeout). redis-py bounds every command it
sends with wait_for, so a loop cancelled mid-command may carry on: a renewal
loop would renew forever, a pub/sub listener would go back to reading, and the
app's cleanup would wait for it without end.
"""

from __future__ import annotations

import asyncio

# How long one cancellation is given to end the task before it is sent again.
RECANCEL_AFTER = 0.5


async def cancel_and_wait(task: asyncio.Task, *, recancel_after: float = RECANCEL_AFTER) -> None:
    """Cancel `task` until it has ended; re-raise what it raised other than its
    cancellation. A task already done is only collected."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_after)
    if not task.cancelled():
        task.result()

"""cancel_and_wait ends a task even when a wait_for inside it swallowed the
cancellation, as Python 3.11's does when the awaited operation completes in the
same loop iteration (CPython gh-86296); redis-py bounds every send with it."""

from __future__ import annotations

import asyncio

import pytest

from proxy.cancel import cancel_and_wait


async def started_loop(done: asyncio.Future):
    """A background loop parked in wait_for on `done`, as one mid-command is."""
    entered = asyncio.Event()
    rounds = []

    async def loop_forever():
        while True:
            entered.set()
            await asyncio.wait_for(done, 10)
            rounds.append(1)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop_forever())
    await entered.wait()
    return task, rounds


async def test_a_cancellation_a_wait_for_swallowed_is_sent_again():
    done = asyncio.get_running_loop().create_future()
    task, _ = await started_loop(done)
    done.set_result(None)  # completes in the same iteration as the cancel below
    await asyncio.wait_for(cancel_and_wait(task, recancel_after=0.05), 10)
    assert task.cancelled()


async def test_what_the_task_raised_other_than_its_cancellation_is_raised():
    async def fails():
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task)

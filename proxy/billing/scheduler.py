"""The in-process invoice job: an app-lifecycle task that, every
`billing.invoice_every`, drafts last month's invoices, or finalizes them once
the grace period is over. It reads the time from `app[CLOCK]`; running it
twice, or beside the CLI or the admin route, changes nothing the first run did."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from aiohttp import web

from ..appkeys import CLOCK, CONFIG, STORE
from ..config.snapshot import Snapshot
from ..store.interface import Store
from .invoices import Generated, generate
from .plans import Month

log = logging.getLogger("bluesminds.billing")


async def generate_month(store: Store, snapshot: Snapshot, month: Month, now: float) -> Generated:
    return await store.write(lambda conn: generate(conn, snapshot, month, now=now))


async def run_due(app: web.Application) -> Generated:
    now = app[CLOCK]()
    result = await generate_month(app[STORE], app[CONFIG].current, Month.of(now).previous(), now)
    if result.finalized or result.drafted:
        log.info("invoices of %s: %d finalized, %d drafted", result.month, result.finalized, result.drafted)
    return result


async def _loop(app: web.Application) -> None:
    while True:
        try:
            await run_due(app)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next round retries; a failure here must not end the job
            log.exception("invoice generation failed; retrying in %ss", app[CONFIG].current.billing.invoice_every)
        await asyncio.sleep(app[CONFIG].current.billing.invoice_every)


async def invoice_job_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_loop(app))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass

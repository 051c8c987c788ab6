"""Captures in the app's life: the recorder's batch hook, and the retention sweep,
started after the usage recorder and stopped before it."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..appkeys import CLOCK, CONFIG, STORE, USAGE
from .writer import batch_hook, sweep

log = logging.getLogger("bluesminds.capture")


async def sweep_loop(app: web.Application, stop: asyncio.Event) -> None:
    holder = app[CONFIG]
    while not stop.is_set():
        settings = holder.current.capture
        try:
            deleted = await sweep(app[STORE], app[CLOCK](), settings.retention_days)
            if deleted:
                log.info("deleted %d captures older than %g days", deleted, settings.retention_days)
        except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
            log.exception("capture retention sweep failed; retrying in %gs", settings.sweep_interval)
        try:
            await asyncio.wait_for(stop.wait(), settings.sweep_interval)
        except TimeoutError:
            pass


def setup(app: web.Application) -> None:
    async def lifecycle(app: web.Application):
        holder = app[CONFIG]
        app[USAGE].batch_hooks.append(batch_hook(lambda: holder.current.capture))
        stop = asyncio.Event()
        task = asyncio.create_task(sweep_loop(app, stop), name="capture-sweep")
        yield
        stop.set()
        await task

    app.cleanup_ctx.append(lifecycle)

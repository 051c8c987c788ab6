"""The webhooks part of the app: what starts, what listens, what stops.

Setup (after the store, limiter and usage recorder are up): the YAML
endpoints are written to the endpoints table (and again on each reload that
changes them), the event sources are hooked in (health changes, rejected
reloads, quota refusals, the usage batch), and two tasks start: the system
event writer and the delivery loop. Teardown stops the loop (attempts in
flight are simply retried after the next start: their rows are still
pending), writes queued system events and closes the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from ..appkeys import CLOCK, CONFIG, HEALTH, LIMITER, STORE, USAGE, WEBHOOKS
from ..auth.principal import Principal
from .delivery import Deliverer, WebhookClient
from .endpoints import sync_config_endpoints
from .ssrf import NetworkPolicy, resolve_with_loop, vet_url
from .system_events import SystemEvents
from .usage_events import BudgetRefused, UsageEvents


class Webhooks:
    """What the routes use: the delivery loop (to kick) and the URL check."""

    def __init__(self, deliverer: Deliverer, client: WebhookClient, system: SystemEvents,
                 resolver: aiohttp.abc.AbstractResolver | None) -> None:
        self.deliverer = deliverer
        self.client = client
        self.system = system
        self._resolver = resolver

    async def vet_url(self, url: str, policy: NetworkPolicy) -> str:
        return await vet_url(url, policy, self._resolve)

    async def _resolve(self, host: str, port: int) -> list[str]:
        if self._resolver is None:
            return await resolve_with_loop(host, port)
        return [answer["host"] for answer in await self._resolver.resolve(host, port)]


def setup(app: web.Application, *, resolver: aiohttp.abc.AbstractResolver | None = None) -> None:
    """`resolver` replaces DNS for deliveries and URL checks alike (tests)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        holder = app[CONFIG]
        store = app[STORE]
        clock = app.get(CLOCK, time.time)
        settings = lambda: holder.current.webhooks  # noqa: E731 - read on every use: reloads apply
        client = WebhookClient(settings, resolver=resolver)
        deliverer = Deliverer(store, client, settings, clock=clock)
        system = SystemEvents(store, clock=clock, written=deliverer.kick)
        app[WEBHOOKS] = Webhooks(deliverer, client, system, resolver)

        await store.write(lambda conn: sync_config_endpoints(conn, holder.current.webhooks.endpoints, clock()))
        background: set[asyncio.Task] = set()

        def on_reload(old, new) -> None:
            if old.webhooks.endpoints != new.webhooks.endpoints:
                endpoints, now = new.webhooks.endpoints, clock()
                task = asyncio.get_running_loop().create_task(
                    store.write(lambda conn: sync_config_endpoints(conn, endpoints, now)))
                background.add(task)
                task.add_done_callback(background.discard)

        def on_reject(digest: str, version: int, problems: int) -> None:
            system.reload_failed(digest, version, problems)

        recorder = app[USAGE]

        def on_quota_refused(principal: Principal, which: str, scope: str, now: float) -> None:
            if which == "budget":
                recorder.note(BudgetRefused(principal.user_id, principal.key_id if scope == "key" else None, now))

        usage_hook = UsageEvents(lambda: holder.current)
        holder.subscribe(on_reload)
        holder.on_reject.append(on_reject)
        app[HEALTH].on_change.append(system.upstream_changed)
        app[LIMITER].on_quota_refused.append(on_quota_refused)
        recorder.batch_hooks.append(usage_hook)
        tasks = [asyncio.create_task(deliverer.run(), name="webhook-delivery"),
                 asyncio.create_task(system.run(), name="webhook-system-events")]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await deliverer.stop()
        holder.on_reject.remove(on_reject)
        app[HEALTH].on_change.remove(system.upstream_changed)
        app[LIMITER].on_quota_refused.remove(on_quota_refused)
        with contextlib.suppress(Exception):
            await system.flush()
        await asyncio.gather(*background, return_exceptions=True)
        await client.aclose()

    app.cleanup_ctx.append(lifecycle)

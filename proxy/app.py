"""create_app(): the routes, the middleware, and the order things start and stop in.

Lifecycle (aiohttp cleanup_ctx; teardown runs in reverse, and only for the
parts whose setup finished):
  store → limiter (seeded from stored usage) → upstream client, health,
  balancer → usage recorder → authenticator → webhooks → health probes → config watcher
so on shutdown the watcher and probes stop first, webhook delivery stops (what
was in flight stays due in the outbox), in-flight usage is flushed
while the database is still open, and the database closes last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Callable

from aiohttp import web

from . import access_log, dashboard, limits, metrics, openapi
from .cache import setup as cache_setup
from .appkeys import BALANCER, CLOCK, CONFIG, HEALTH, RETRY_BUDGET, STORE, TRANSPORT
from .auth.management import guard_admin_path, require_admin
from .auth import setup as auth_setup
from .billing import routes as billing_routes
from .config import plan_guard, watcher
from .config.build import load_config
from .config.holder import ConfigHolder
from .config.snapshot import MAX_BODY_CEILING
from .gateway import cors, response_ids
from .errors import BodyTooLarge, GatewayError, MethodNotAllowed, NotFound, error_response
from .routes import admin_routes, admin_users, auth_routes, keys_routes, openai_api, usage_routes
from .routing.balancer import Balancer
from .routing.health import HealthMonitor
from .routing.regions import RegionMoves
from .routing.retry import RetryBudget
from .store import open_store
from .upstream.forward import Forwarder
from .appkeys import FORWARDER, TRACER
from .observability import logs, probes, tracing
from .upstream.http1 import ConnectionPool
from .usage import quota_totals
from .usage import recorder as usage_recorder
from .capture import lifecycle as capture_lifecycle
from .webhooks import lifecycle as webhooks_lifecycle
from .webhooks import routes as webhooks_routes

log = logging.getLogger("bluesminds")


@web.middleware
async def gateway_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The one place a failure becomes an HTTP answer in OpenAI's error shape,
    the one admin gate, and the access line. (One middleware, not three: each
    layer costs every /v1 request.)"""
    started = time.perf_counter()
    status = 499  # until an answer exists: the client left first
    response = None
    try:
        response = await _answer(request, handler)
        status = response.status
        if not request.content.is_eof():
            # The rest of the body is unread (an early 413, 415, 408…): the
            # connection cannot carry another request without reading it first.
            response.force_close()
        return response
    except web.HTTPException as exc:  # a redirect, say: aiohttp answers it
        status = exc.status
        raise
    finally:
        if request.app[CONFIG].current.server.access_log:
            request_id = response.headers.get("x-request-id") if response is not None else None
            access_log.write(request, status, time.perf_counter() - started, request_id)


async def _answer(request: web.Request, handler) -> web.StreamResponse:
    try:
        if request.method == "OPTIONS" and (answer := cors.preflight(request)) is not None:
            return answer
        path = request.path
        if path == "/metrics" or path.startswith("/api/admin"):  # no gate coroutines for /v1
            await _admin_gate(request)
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(NotFound(f"Unknown route: {request.method} {request.path}. "
                                           "See /v1/models for what this gateway serves."))
        if exc.status == 405:
            return error_response(MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}."),
                                  {"Allow": exc.headers.get("Allow", "")})
        if exc.status == 413:
            return error_response(BodyTooLarge("The request body is too large."))
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = GatewayError("The gateway hit an internal error; the request was not completed. "
                           "Retry, and report it if it persists.", code="internal_error")
        return error_response(err)


async def _admin_gate(request: web.Request) -> None:
    """The one admin check: every /api/admin route, whoever registered it, and
    /metrics when `server.metrics.access` is admin."""
    if request.path == "/metrics":
        if request.app[CONFIG].current.server.metrics.access == "admin":
            await require_admin(request)
        return
    await guard_admin_path(request)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    db = open_store(app[CONFIG].current.database)
    await db.open()
    app[STORE] = db
    yield
    await db.close()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    holder = app[CONFIG]
    health = app[HEALTH]
    health.reconcile(holder.current)
    balancer = app[BALANCER]
    gauges = app[metrics.METRICS]
    for upstream in holder.current.upstreams:
        gauges.set_upstream_health(upstream.name, "healthy")  # optimistic start, as the monitor's

    def on_reload(old, new) -> None:
        pool.max_body = new.server.max_upstream_body_bytes
        health.reconcile(new)
        balancer.reset()
        for name in old.upstream_by_name.keys() - new.upstream_by_name.keys():
            gauges.forget_upstream(name)
        for name in new.upstream_by_name.keys() - old.upstream_by_name.keys():
            gauges.set_upstream_health(name, "healthy")

    # One pooled client for /v1 traffic and the health probes alike, so a probe
    # exercises the code that serves requests.
    pool = ConnectionPool(max_body=holder.current.server.max_upstream_body_bytes)
    holder.subscribe(on_reload)
    app[TRANSPORT] = pool
    app[FORWARDER] = Forwarder(pool, balancer, health, app[RETRY_BUDGET], tracer=app[TRACER])
    gauges.registry.register(RegionMoves(balancer))
    yield
    await pool.aclose()


async def _probes_ctx(app: web.Application) -> AsyncIterator[None]:
    holder = app[CONFIG]
    task = asyncio.create_task(app[HEALTH].run(lambda: holder.current, app[TRANSPORT]))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def create_app(config_path: str, *, clock: Callable[[], float] = time.time,
               watch: bool = True) -> web.Application:
    snapshot = load_config(config_path)
    # The live server.max_body is enforced by proxy/bodies.py; this only backs it up.
    app = web.Application(middlewares=[gateway_middleware], client_max_size=MAX_BODY_CEILING + 1)
    app[CLOCK] = clock
    app[CONFIG] = ConfigHolder(config_path, snapshot, clock=clock)
    health = HealthMonitor()
    app[HEALTH] = health
    app[BALANCER] = Balancer(health)
    app[RETRY_BUDGET] = RetryBudget()

    app.cleanup_ctx.append(_store_ctx)
    plan_guard.setup(app)
    limits.setup(app, load_totals=quota_totals.load_window_totals)
    app.cleanup_ctx.append(_upstream_ctx)
    metrics.setup(app)
    cache_setup.setup(app)
    usage_recorder.setup(app)
    capture_lifecycle.setup(app)  # its batch hook joins the recorder; its sweep stops before it
    response_ids.setup(app)
    auth_setup(app)
    webhooks_lifecycle.setup(app)
    billing_routes.setup(app)  # the Creem client and the invoice job, after the store
    app.cleanup_ctx.append(_probes_ctx)
    if watch:
        watcher.setup(app)
    logs.setup(app)
    tracing.setup(app)

    cors.setup(app)
    openai_api.setup(app)
    auth_routes.setup(app)
    keys_routes.setup(app)
    admin_users.setup(app)
    admin_routes.setup(app)
    usage_routes.setup(app)
    webhooks_routes.setup(app)
    openapi.setup(app)  # before the dashboard's catch-all
    dashboard.setup(app)
    probes.setup(app)
    return app

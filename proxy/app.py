"""create_app(): the routes, the middleware, and the order things start and stop in.

Lifecycle (aiohttp cleanup_ctx; teardown runs in reverse, and only for the
parts whose setup finished):
  store → limiter (seeded from stored usage) → upstream client, health,
  balancer → usage recorder → authenticator → health probes → config watcher
so on shutdown the watcher and probes stop first, in-flight usage is flushed
while the database is still open, and the database closes last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Callable

from aiohttp import web

from . import limits, metrics
from . import dashboard
from .appkeys import BALANCER, CLOCK, CONFIG, HEALTH, RETRY_BUDGET, STORE, TRANSPORT
from .auth.management import guard_admin_path
from .auth import setup as auth_setup
from .config import watcher
from .config.build import load_config
from .config.holder import ConfigHolder
from .errors import GatewayError, InvalidRequest, NotFound, error_response
from .limits import LIMITER
from .routes import admin_routes, admin_users, auth_routes, keys_routes, openai_api, usage_routes
from .routing.balancer import Balancer
from .routing.health import HealthMonitor
from .routing.retry import RetryBudget
from .store import Database
from .upstream.forward import FORWARDER, Forwarder
from .upstream.http1 import ConnectionPool
from .usage import quota_totals
from .usage import recorder as usage_recorder

log = logging.getLogger("bluesminds")


@web.middleware
async def gateway_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The one place a failure becomes an HTTP answer in OpenAI's error shape,
    and the one gate in front of every /api/admin route, whoever registered it.
    (One middleware, not two: each layer costs every /v1 request.)"""
    try:
        await guard_admin_path(request)
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(NotFound(f"Unknown route: {request.method} {request.path}. "
                                           "See /v1/models for what this gateway serves."))
        if exc.status == 405:
            err = InvalidRequest(f"Method {request.method} is not allowed on {request.path}.",
                                 code="method_not_allowed")
            err.status = 405
            return error_response(err, {"Allow": exc.headers.get("Allow", "")})
        if exc.status == 413:
            err = InvalidRequest("The request body is too large.", code="request_too_large")
            err.status = 413
            return error_response(err)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = GatewayError("The gateway hit an internal error; the request was not completed. "
                           "Retry, and report it if it persists.", code="internal_error")
        return error_response(err)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    db = Database(app[CONFIG].current.database.path)
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
        health.reconcile(new)
        balancer.reset()
        app[LIMITER].forget_plans(new.plans)
        for name in old.upstream_by_name.keys() - new.upstream_by_name.keys():
            gauges.forget_upstream(name)
        for name in new.upstream_by_name.keys() - old.upstream_by_name.keys():
            gauges.set_upstream_health(name, "healthy")

    holder.subscribe(on_reload)
    # One pooled client for /v1 traffic and the health probes alike, so a probe
    # exercises the code that serves requests.
    pool = ConnectionPool()
    app[TRANSPORT] = pool
    app[FORWARDER] = Forwarder(pool, balancer, health, app[RETRY_BUDGET])
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
    app = web.Application(middlewares=[gateway_middleware],
                          client_max_size=snapshot.server.max_body_bytes + 1)
    app[CLOCK] = clock
    app[CONFIG] = ConfigHolder(config_path, snapshot, clock=clock)
    health = HealthMonitor()
    app[HEALTH] = health
    app[BALANCER] = Balancer(health)
    app[RETRY_BUDGET] = RetryBudget()

    app.cleanup_ctx.append(_store_ctx)
    limits.setup(app, load_totals=quota_totals.load_window_totals)
    app.cleanup_ctx.append(_upstream_ctx)
    metrics.setup(app)
    usage_recorder.setup(app)
    auth_setup(app)
    app.cleanup_ctx.append(_probes_ctx)
    if watch:
        watcher.setup(app)

    openai_api.setup(app)
    auth_routes.setup(app)
    keys_routes.setup(app)
    admin_users.setup(app)
    admin_routes.setup(app)
    usage_routes.setup(app)
    dashboard.setup(app)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    holder = request.app[CONFIG]
    return web.json_response({"status": "ok", "config_version": holder.version})

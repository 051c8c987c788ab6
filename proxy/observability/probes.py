"""GET /healthz and GET /readyz: what a load balancer or Kubernetes asks.

/healthz is liveness: the process answers. It says 503 `degraded` only when
the database file was deleted or replaced under the running gateway, the one
state that a restart (what a failed liveness probe does) is the cure for.

/readyz is readiness: 200 while this process can serve, else 503 with every
reason, so a balancer sends traffic elsewhere without killing the process:
  - the database refuses writes (its `problem`), or the usage queue is over
    its bound because writes keep failing;
  - a shared limiter (Redis) is configured and not up (quota requests get 503);
  - no enabled upstream is healthy (every /v1 request would get 503).
No auth, no database read or write: a probe every second costs next to nothing.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CONFIG, HEALTH, LIMITER, STORE, USAGE


async def healthz(request: web.Request) -> web.Response:
    holder = request.app[CONFIG]
    problem = request.app[STORE].problem if STORE in request.app else None
    if problem is not None:
        # Serving, but losing data at exit unless an operator acts: not healthy.
        return web.json_response({"status": "degraded", "config_version": holder.version,
                                  "store": problem}, status=503)
    return web.json_response({"status": "ok", "config_version": holder.version})


def not_ready(app: web.Application) -> list[str]:
    """Why this process should get no traffic now; empty when it should."""
    reasons = []
    store = app.get(STORE)
    if store is not None and store.problem is not None:
        reasons.append(f"database: {store.problem}")
    recorder = app.get(USAGE)
    if recorder is not None and recorder.saturated:
        reasons.append("database: the usage queue is over its bound (writes are failing)")
    limiter = app.get(LIMITER)
    state = getattr(limiter, "state", None)  # only a shared limiter has one
    if state is not None and state != "up":
        reasons.append(f"limiter: the shared limiter is {state}")
    snapshot = app[CONFIG].current
    health = app[HEALTH]
    now = health.now()
    serving = [u for u in snapshot.upstreams if u.admits_new_requests]
    if not any(health.alive(u.name, now) for u in serving):
        reasons.append("upstreams: no enabled upstream is healthy" if serving else
                       "upstreams: none is enabled")
    return reasons


async def readyz(request: web.Request) -> web.Response:
    reasons = not_ready(request.app)
    if reasons:
        return web.json_response({"status": "not_ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

"""Every typed key the application holds, in one place; no module-level state.

The components themselves live in their own modules and are stored by their
`setup` functions; only the keys are here, so a reader sees at a glance what
an app carries and no module has to import another's internals to find one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from aiohttp import web

if TYPE_CHECKING:
    import aiohttp

    from .auth.authenticator import Authenticator
    from .auth.passwords import Hasher
    from .auth.throttle import LoginThrottle
    from .config.holder import ConfigHolder
    from .config.watcher import ConfigWatcher
    import jinja2

    from .dashboard.render import StaticFiles
    from .gateway.request_ids import RequestIds
    from .gateway.response_ids import ResponseIds
    from .limits.limiter import Limiter
    from .metrics import Metrics, MetricsListener
    from .routes.admin_routes import FleetEvents
    from .routing.balancer import Balancer
    from .routing.health import HealthMonitor
    from .routing.retry import RetryBudget
    from .store import Database
    from .upstream.forward import Forwarder
    from .upstream.transport import Transport
    from .usage.recorder import UsageRecorder
    from .webhooks.lifecycle import Webhooks
    from .cache.flight import SingleFlight
    from .cache.interface import CacheStore

# -- core: config, clock, storage --------------------------------------------
CONFIG: web.AppKey["ConfigHolder"] = web.AppKey("config", object)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock", object)
STORE: web.AppKey["Database"] = web.AppKey("store", object)
WATCHER: web.AppKey["ConfigWatcher"] = web.AppKey("config_watcher", object)

# -- the request pipeline ----------------------------------------------------
REQUEST_IDS: web.AppKey["RequestIds"] = web.AppKey("request_ids", object)
AUTHENTICATOR: web.AppKey["Authenticator"] = web.AppKey("authenticator", object)
HASHER: web.AppKey["Hasher"] = web.AppKey("hasher", object)
LOGIN_THROTTLE: web.AppKey["LoginThrottle"] = web.AppKey("login_throttle", object)
SIGNUP_THROTTLE: web.AppKey["LoginThrottle"] = web.AppKey("signup_throttle", object)
LIMITER: web.AppKey["Limiter"] = web.AppKey("limiter", object)
FORWARDER: web.AppKey["Forwarder"] = web.AppKey("forwarder", object)
USAGE: web.AppKey["UsageRecorder"] = web.AppKey("usage_recorder", object)
METRICS: web.AppKey["Metrics"] = web.AppKey("metrics", object)
METRICS_LISTENER: web.AppKey["MetricsListener"] = web.AppKey("metrics_listener", object)
# Which account and upstream each relayed Responses API response id belongs to.
RESPONSE_IDS: web.AppKey["ResponseIds"] = web.AppKey("response_ids", object)
# The response cache (proxy/cache/): its store and the upstream calls identical misses share.
CACHE: web.AppKey["CacheStore"] = web.AppKey("cache", object)
CACHE_FLIGHTS: web.AppKey["SingleFlight"] = web.AppKey("cache_flights", object)

# -- upstreams ----------------------------------------------------------------
# The one client to upstreams: /v1 traffic and health probes both go through it.
TRANSPORT: web.AppKey["Transport"] = web.AppKey("transport", object)
BALANCER: web.AppKey["Balancer"] = web.AppKey("balancer", object)
HEALTH: web.AppKey["HealthMonitor"] = web.AppKey("health", object)
RETRY_BUDGET: web.AppKey["RetryBudget"] = web.AppKey("retry_budget", object)

# -- billing -------------------------------------------------------------------
# The client for Creem's API (checkouts); never used on the /v1 path.
CREEM_HTTP: web.AppKey["aiohttp.ClientSession"] = web.AppKey("creem_http", object)

# -- dashboard -----------------------------------------------------------------
JINJA: web.AppKey["jinja2.Environment"] = web.AppKey("dashboard_jinja", object)
STATIC_FILES: web.AppKey["StaticFiles"] = web.AppKey("dashboard_static", object)

# -- admin ---------------------------------------------------------------------
EVENTS: web.AppKey["FleetEvents"] = web.AppKey("fleet_events", object)
SERVERS_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("admin_servers_lock", asyncio.Lock)
# Admin actions sent to and heard from other gateways (proxy/scaleout/broadcast.py);
# absent unless Redis or PostgreSQL is shared.
BROADCAST: web.AppKey["Broadcast"] = web.AppKey("admin_broadcast", object)

# -- outbound webhooks -------------------------------------------------------------
WEBHOOKS: web.AppKey["Webhooks"] = web.AppKey("webhooks", object)

# -- observability -------------------------------------------------------------
# The request tracer (proxy/observability/tracing.py); None while traces are off.
TRACER: web.AppKey[object] = web.AppKey("tracer", object)

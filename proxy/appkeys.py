"""Typed keys for everything the application holds; no module-level state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from .config.holder import ConfigHolder
    from .limits.limiter import Limiter
    from .routing.balancer import Balancer
    from .routing.health import HealthMonitor
    from .routing.retry import RetryBudget
    from .store import Database
    from .upstream.transport import Transport

CONFIG: web.AppKey["ConfigHolder"] = web.AppKey("config", object)
HTTP: web.AppKey[ClientSession] = web.AppKey("http", ClientSession)
# The one client to upstreams: /v1 traffic and health probes both go through it.
TRANSPORT: web.AppKey["Transport"] = web.AppKey("transport", object)
STORE: web.AppKey["Database"] = web.AppKey("store", object)
BALANCER: web.AppKey["Balancer"] = web.AppKey("balancer", object)
HEALTH: web.AppKey["HealthMonitor"] = web.AppKey("health", object)
RETRY_BUDGET: web.AppKey["RetryBudget"] = web.AppKey("retry_budget", object)
LIMITER: web.AppKey["Limiter"] = web.AppKey("limiter", object)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock", object)
# Feature components (authenticator, limiter, usage recorder, metrics) are
# registered under their own keys by their modules' setup functions.
EXTRA: web.AppKey[dict[str, Any]] = web.AppKey("extra", dict)

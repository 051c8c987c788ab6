"""Tenants: accounts, sessions and API keys, and who is calling.

`setup(app)` installs the shared services (bcrypt pool, key authenticator,
login and signup throttles) and their lifecycle; the HTTP routes are added by
`proxy.routes.auth_routes`, `keys_routes` and `admin_users`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator

from aiohttp import web

from ..appkeys import AUTHENTICATOR, CLOCK, HASHER, LOGIN_THROTTLE, SIGNUP_THROTTLE, STORE
from .authenticator import Authenticator
from .client_address import client_address
from .management import Caller, identify, require_account, require_admin, require_user
from .passwords import Hasher
from .principal import SCOPES, KeyLimits, Principal
from .sessions import prune_sessions
from .throttle import LoginThrottle

log = logging.getLogger("bluesminds.auth")

__all__ = [
    "AUTHENTICATOR", "HASHER", "LOGIN_THROTTLE", "SCOPES", "SIGNUP_THROTTLE", "Authenticator",
    "Caller", "Hasher", "KeyLimits", "LoginThrottle", "Principal", "client_address",
    "identify", "require_account", "require_admin", "require_user", "setup",
]


def setup(app: web.Application) -> None:
    """Call after app[CLOCK] is set; app[STORE] is needed only once the app
    starts, and its context must come before this one."""
    clock = app.get(CLOCK, time.time)
    hasher = Hasher()
    app[HASHER] = hasher
    app[AUTHENTICATOR] = Authenticator(hasher, clock=clock)
    app[LOGIN_THROTTLE] = LoginThrottle(clock)
    app[SIGNUP_THROTTLE] = LoginThrottle(clock, window=3600.0, what="signups from this address")
    app.cleanup_ctx.append(_lifecycle)


# Dead sessions (expired, revoked) are deleted this often; it bounds the table, not security.
SESSION_PRUNE_INTERVAL = 3600.0


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    authenticator = app[AUTHENTICATOR]
    await authenticator.start(app[STORE])
    pruner = asyncio.create_task(_prune_sessions_forever(app), name="session-prune")
    yield
    pruner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pruner
    await authenticator.stop()
    app[HASHER].close()


async def _prune_sessions_forever(app: web.Application) -> None:
    clock = app.get(CLOCK, time.time)
    while True:
        try:
            removed = await app[STORE].write(lambda conn: prune_sessions(conn, clock()))
            if removed:
                log.info("removed %d expired or revoked sessions", removed)
        except Exception:
            log.exception("pruning sessions failed; retrying in %ss", SESSION_PRUNE_INTERVAL)
        await asyncio.sleep(SESSION_PRUNE_INTERVAL)

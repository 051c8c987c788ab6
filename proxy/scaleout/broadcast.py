"""Admin actions that must reach every gateway: a reload and a server's drain/enable.

On one machine the workers share the config files each of them watches; across
machines nothing is shared but the backends, so the gateway that took the
admin's request also publishes it on them:
  - Redis pub/sub on channel `bluesminds:admin` when limits.backend is redis://…;
  - otherwise PostgreSQL NOTIFY on channel `bluesminds_admin` when database.url
    is postgresql://….
With neither (SQLite and memory limits, one process) nothing runs at all.

Every gateway listens and applies what others publish to its own files: a
reload reloads its config, a server change is written to its own managed file
(as the admin API does) and reloaded. Each message names its origin, so a
gateway skips its own. Applying is idempotent: the workers of the origin's own
machine, which also hear it, find their files already say so.

Delivery is at most once, as pub/sub is: a gateway that is cut off from the
backend at that moment misses the message (it logs the outage, reconnects by
itself, and its next reload or restart reads its own files as usual).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from ..appkeys import BROADCAST, CONFIG
from ..store.factory import is_postgres

log = logging.getLogger("bluesminds.broadcast")

REDIS_CHANNEL = "bluesminds:admin"
PG_CHANNEL = "bluesminds_admin"
SERVER_FIELDS = ("drain", "enabled")  # what a server change carries to other gateways
PUBLISH_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 2.0
FIRST_BACKOFF, MAX_BACKOFF = 0.1, 5.0

Apply = Callable[[dict[str, Any]], Awaitable[None]]


def _stop_if_cancelled() -> None:
    """Raise the cancellation a library lost on the way. Python 3.11's asyncio.wait_for,
    which redis-py awaits each write with (its socket_timeout), returns the write's
    result instead of raising when the cancel lands as the write completes: the
    listener would go on subscribing and listening, and the app's shutdown, which
    awaits it, would never end. The task's cancelling() count still says it was asked."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisChannel:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis  # only a gateway with a Redis backend needs it

        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=PUBLISH_TIMEOUT_S)
        self.name = f"Redis pub/sub ({REDIS_CHANNEL})"
        self._pubsub = None

    async def publish(self, payload: bytes) -> None:
        await self._client.publish(REDIS_CHANNEL, payload)

    async def listen(self, subscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        pubsub = self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(REDIS_CHANNEL)
            subscribed()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"]
        finally:
            self._pubsub = None
            await pubsub.aclose()

    async def close(self) -> None:
        # redis-py's blocking pub/sub read can swallow a cancellation; closing its
        # connection is what ends a listener for sure.
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self._client.aclose()


class PostgresChannel:
    def __init__(self, url: str) -> None:
        self._url = url
        self.name = f"PostgreSQL NOTIFY ({PG_CHANNEL})"

    async def _connect(self):
        import psycopg  # only a gateway on PostgreSQL needs it

        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=int(PUBLISH_TIMEOUT_S))

    async def publish(self, payload: bytes) -> None:
        # Admin actions are rare: a connection each costs less than keeping one open.
        conn = await self._connect()
        async with conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (PG_CHANNEL, payload.decode()))

    async def listen(self, subscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        conn = await self._connect()
        async with conn:
            await conn.execute(f"LISTEN {PG_CHANNEL}")
            subscribed()
            async for notify in conn.notifies():
                yield notify.payload.encode()

    async def close(self) -> None:
        return None


class Broadcast:
    """Publishes this gateway's admin actions and applies the other gateways' ones."""

    def __init__(self, channel, apply: Apply, *, sleep=asyncio.sleep) -> None:
        self._channel = channel
        self._apply = apply
        self._sleep = sleep
        self.origin = uuid.uuid4().hex
        self.subscribed = asyncio.Event()  # set while the listener is subscribed
        self.applied = 0  # messages from other gateways applied
        self.published = 0
        self.stopping = False

    async def publish(self, message: dict[str, Any]) -> bool:
        """Send `message` to the other gateways; False (logged) if the backend is out of reach."""
        payload = orjson.dumps({**message, "origin": self.origin})
        try:
            await asyncio.wait_for(self._channel.publish(payload), PUBLISH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the local action stands; only the others miss it
            log.warning("could not broadcast %s through %s (%s): other gateways do not get it",
                        message.get("action"), self._channel.name, exc)
            return False
        self.published += 1
        return True

    async def run(self) -> None:
        backoff = FIRST_BACKOFF
        down = False
        while not self.stopping:
            _stop_if_cancelled()
            try:
                async for payload in self._channel.listen(self._on_subscribed):
                    _stop_if_cancelled()
                    backoff = FIRST_BACKOFF
                    if down:
                        log.warning("admin broadcast through %s is back", self._channel.name)
                        down = False
                    await self._deliver(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any loss of the backend: reconnect
                if self.stopping:
                    return
                if not down:
                    log.error("admin broadcast through %s lost (%s); reconnecting", self._channel.name, exc)
                    down = True
            self.subscribed.clear()
            await self._sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _on_subscribed(self) -> None:
        _stop_if_cancelled()  # a cancel that reached the subscribe is not lost in it
        self.subscribed.set()

    async def _deliver(self, payload: bytes) -> None:
        try:
            message = parse(payload)
        except ValueError as exc:
            log.warning("ignored an admin broadcast: %s", exc)
            return
        if message["origin"] == self.origin:
            return
        try:
            await self._apply(message)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the listener
            log.warning("admin broadcast %s from another gateway not applied here: %s",
                        message["action"], exc)
            return
        self.applied += 1
        log.info("applied admin broadcast %s from another gateway", message["action"])


def parse(payload: bytes) -> dict[str, Any]:
    """The checked message in `payload`; ValueError says what is wrong with it."""
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("origin"), str):
        raise ValueError("no origin")
    action = message.get("action")
    if action == "reload":
        return message
    if action == "server":
        change = message.get("change")
        if not isinstance(message.get("name"), str) or not isinstance(change, dict) or not change:
            raise ValueError("a server change needs a name and a change")
        for key, value in change.items():
            if key not in SERVER_FIELDS or not (value is None or isinstance(value, bool)):
                raise ValueError(f"a server change carries only {', '.join(SERVER_FIELDS)}")
        return message
    raise ValueError(f"unknown action {action!r}")


def server_change(body: Any) -> dict[str, Any]:
    """The part of a PATCH /api/admin/servers body that other gateways apply too."""
    if not isinstance(body, dict):
        return {}
    return {key: body[key] for key in SERVER_FIELDS if key in body}


def channel_for(snapshot) -> Any:
    """The backend this gateway shares with the others, or None."""
    backend = snapshot.limits.backend
    if backend.startswith(("redis://", "rediss://", "unix://")):
        return RedisChannel(backend)
    if is_postgres(snapshot.database.url):
        return PostgresChannel(snapshot.database.url)
    return None


async def publish(app: web.Application, message: dict[str, Any]) -> None:
    broadcast = app.get(BROADCAST)
    if broadcast is not None:
        await broadcast.publish(message)


def setup(app: web.Application, apply: Callable[[web.Application, dict[str, Any]], Awaitable[None]]) -> None:
    """Listen while the app runs, if the config names a shared backend. `apply(app, message)`
    carries out another gateway's action here."""

    async def lifecycle(app: web.Application):
        channel = channel_for(app[CONFIG].current)
        if channel is None:
            yield
            return
        broadcast = Broadcast(channel, lambda message: apply(app, message))
        app[BROADCAST] = broadcast
        task = asyncio.create_task(broadcast.run(), name="admin-broadcast")
        yield
        # Cancelling is not enough: redis-py's blocking read can swallow the
        # cancellation, so the channel is closed under the listener too. Both steps
        # are bounded: a stuck listener must not hold the gateway's shutdown.
        broadcast.stopping = True
        task.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the listener first, if it takes it
        try:
            await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            log.warning("admin broadcast channel did not close cleanly (%s)", exc or "timed out")
        await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
        if not task.done():
            log.warning("admin broadcast listener did not stop within %.0fs; shutting down without it",
                        CLOSE_TIMEOUT_S)

    app.cleanup_ctx.append(lifecycle)

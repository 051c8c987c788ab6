"""Admin actions reach a gateway on another machine: two gateways with config
directories of their own (and no watcher, so no file is shared or polled) hear
each other's reload and server drain/enable through the Redis or PostgreSQL
they share."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from proxy import server
from proxy.app import create_app
from proxy.appkeys import BROADCAST, CONFIG
from proxy.config.build import DATABASE_URL_ENV, LIMITS_BACKEND_ENV
from proxy.fake_upstream import start_fake_upstream
from proxy.scaleout.broadcast import Broadcast, RedisChannel, parse, server_change

from .gateway_harness import GatewayHarness, upstream_entry
from .postgres_server import needs_postgres, postgres_server, postgres_url  # noqa: F401
from .redis_server import RedisServer, needs_redis, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)

ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-broadcast-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Gateway:
    """A gateway in this process without the config watcher: only a broadcast moves it."""

    def __init__(self, harness: GatewayHarness) -> None:
        self.harness = harness
        self.app = create_app(harness.config_dir, watch=False)
        self.runner = None
        self.url = ""

    async def start(self) -> "Gateway":
        self.runner, port = await server.start(self.app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"
        await asyncio.wait_for(self.app[BROADCAST].subscribed.wait(), 10)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def call(self, method: str, path: str, json=None) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.url + path, json=json, headers=ADMIN) as resp:
                return resp.status, await resp.json()


async def eventually(probe, expected, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        got = await probe()
        if got == expected:
            return
        assert time.monotonic() < deadline, f"still {got!r}, not {expected!r}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def upstreams():
    fakes = [await start_fake_upstream(name=name) for name in ("a", "b")]
    yield fakes
    for fake in fakes:
        await fake.stop()


def two_configs(tmp_path, upstreams, **sections) -> list[GatewayHarness]:
    entries = [upstream_entry(name, fake.url) for name, fake in zip("ab", upstreams)]
    return [GatewayHarness.write(str(tmp_path / name), entries, admin={"key_env": ADMIN_ENV}, **sections)
            for name in ("east", "west")]


async def check_drain_enable_and_reload(east: Gateway, west: Gateway) -> None:
    async def west_state():
        return (await west.call("GET", "/api/admin/servers/a"))[1]["state"]

    assert await west_state() == "healthy"
    status, body = await east.call("PATCH", "/api/admin/servers/a", {"drain": True})
    assert (status, body["state"]) == (200, "draining")
    await eventually(west_state, "draining")
    assert east.app[BROADCAST].published == 1 and west.app[BROADCAST].applied == 1
    assert east.app[BROADCAST].applied == 0  # a gateway skips its own message

    status, body = await west.call("PATCH", "/api/admin/servers/a", {"drain": False, "enabled": False})
    assert (status, body["state"]) == (200, "disabled")
    await eventually(lambda: _state(east, "a"), "disabled")

    assert west.app[BROADCAST].published == 1 and east.app[BROADCAST].applied == 1

    # An edit of west's own file, applied only when east's admin asks for a reload.
    west.harness.sections["upstreams"][1]["weight"] = 3
    west.harness.save()
    version = west.app[CONFIG].version
    status, body = await east.call("POST", "/api/admin/reload")
    assert status == 200
    await eventually(lambda: _weight(west, "b"), 3)
    assert west.app[CONFIG].version == version + 1
    assert west.app[BROADCAST].applied == 2


async def _state(gateway: Gateway, name: str) -> str:
    return (await gateway.call("GET", f"/api/admin/servers/{name}"))[1]["state"]


async def _weight(gateway: Gateway, name: str) -> int:
    return gateway.app[CONFIG].current.upstream_by_name[name].weight


@needs_redis
async def test_two_gateways_sharing_redis_hear_each_others_admin_actions(
        tmp_path, monkeypatch, upstreams, redis_server):  # noqa: F811
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    redis_server.flush()
    east_cfg, west_cfg = two_configs(tmp_path, upstreams, limits={"backend": redis_server.url})
    east, west = Gateway(east_cfg), Gateway(west_cfg)
    try:
        await east.start()
        await west.start()
        await check_drain_enable_and_reload(east, west)
    finally:
        await east.stop()
        await west.stop()


@needs_redis
async def test_the_listener_resubscribes_by_itself_after_redis_restarts(tmp_path, monkeypatch, upstreams):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    redis = RedisServer()
    redis.start()
    east_cfg, west_cfg = two_configs(tmp_path, upstreams, limits={"backend": redis.url})
    east, west = Gateway(east_cfg), Gateway(west_cfg)
    try:
        await east.start()
        await west.start()
        redis.stop()
        await eventually(lambda: _cleared(west), True)
        # Sent while Redis is down: this gateway drains, the other cannot hear it.
        status, body = await east.call("PATCH", "/api/admin/servers/a", {"drain": True})
        assert (status, body["state"]) == (200, "draining")
        assert east.app[BROADCAST].published == 0
        redis.start()
        await asyncio.wait_for(west.app[BROADCAST].subscribed.wait(), 15)
        await asyncio.wait_for(east.app[BROADCAST].subscribed.wait(), 15)
        assert await _state(west, "b") == "healthy"
        status, _ = await east.call("PATCH", "/api/admin/servers/b", {"drain": True})
        assert status == 200
        await eventually(lambda: _state(west, "b"), "draining")
        assert await _state(west, "a") == "healthy"  # at most once: the missed one stays missed
    finally:
        await east.stop()
        await west.stop()
        redis.close()


@needs_redis
async def test_the_listener_stops_when_cancelled_at_any_point_of_its_subscribe(redis_server):  # noqa: F811
    # Cancelled after each number of loop turns into its start (connect, handshake,
    # SUBSCRIBE, listening), the listener ends: a cancel that lands as one of
    # redis-py's writes completes is not lost, so an app's shutdown never hangs on it.
    async def ignore(message):
        raise AssertionError(f"nothing is published here: {message!r}")

    for turns in range(60):
        channel = RedisChannel(redis_server.url)
        task = asyncio.create_task(Broadcast(channel, ignore).run())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, f"still running 10 s after a cancel {turns} loop turns into its start"
        assert task.cancelled()
        await channel.close()


async def _cleared(gateway: Gateway) -> bool:
    return not gateway.app[BROADCAST].subscribed.is_set()


@needs_postgres
async def test_two_gateways_sharing_postgres_hear_each_others_admin_actions(
        tmp_path, monkeypatch, upstreams, postgres_url):  # noqa: F811
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    east_cfg, west_cfg = two_configs(tmp_path, upstreams, limits={"backend": "memory"},
                                     database={"url": postgres_url, "path": "gateway.db"})
    east, west = Gateway(east_cfg), Gateway(west_cfg)
    try:
        await east.start()
        await west.start()
        await check_drain_enable_and_reload(east, west)
    finally:
        await east.stop()
        await west.stop()


async def test_one_gateway_on_sqlite_and_memory_runs_no_broadcast(tmp_path, monkeypatch, upstreams):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    # The defaults, whatever the suite's pass names: no shared database, no shared limiter.
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    monkeypatch.delenv(LIMITS_BACKEND_ENV, raising=False)
    harness = two_configs(tmp_path, upstreams)[0]
    gateway = Gateway(harness)
    gateway.runner, port = await server.start(gateway.app, "127.0.0.1", 0)
    gateway.url = f"http://127.0.0.1:{port}"
    try:
        assert BROADCAST not in gateway.app
        status, body = await gateway.call("PATCH", "/api/admin/servers/a", {"drain": True})
        assert (status, body["state"]) == (200, "draining")
    finally:
        await gateway.stop()


def test_a_message_carries_only_what_another_gateway_may_apply():
    assert server_change({"drain": True, "weight": 5, "url": "http://x"}) == {"drain": True}
    assert server_change(["drain"]) == {}
    assert parse(b'{"origin": "o", "action": "reload"}') == {"origin": "o", "action": "reload"}
    with pytest.raises(ValueError, match="a server change carries only drain, enabled"):
        parse(b'{"origin": "o", "action": "server", "name": "a", "change": {"url": "http://x"}}')
    with pytest.raises(ValueError, match="unknown action 'drop'"):
        parse(b'{"origin": "o", "action": "drop"}')
    with pytest.raises(ValueError, match="not JSON"):
        parse(b"{")
    with pytest.raises(ValueError, match="no origin"):
        parse(b'{"action": "reload"}')


class _DeafChannel:
    """A channel whose blocking read swallows cancellation, as redis-py's pub/sub read
    can: only closing the channel ends its listener."""

    name = "a deaf channel"

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.cancels_swallowed = 0

    async def listen(self, subscribed):
        subscribed()
        while not self.closed.is_set():
            try:
                await self.closed.wait()
            except asyncio.CancelledError:
                self.cancels_swallowed += 1
        raise ConnectionError("connection closed")
        yield b""  # an async generator, as the real channels are

    async def close(self) -> None:
        self.closed.set()


async def test_shutdown_ends_a_listener_that_swallows_its_cancellation(monkeypatch):
    from aiohttp import web

    from proxy.scaleout import broadcast as module

    channel = _DeafChannel()
    monkeypatch.setattr(module, "channel_for", lambda snapshot: channel)
    app = web.Application()
    app[CONFIG] = type("Holder", (), {"current": None})()

    async def apply(app, message):
        raise AssertionError("nothing is broadcast here")

    module.setup(app, apply)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = app[BROADCAST]
    await asyncio.wait_for(listener.subscribed.wait(), 5)
    await asyncio.wait_for(runner.cleanup(), module.CLOSE_TIMEOUT_S + 1)
    assert channel.cancels_swallowed == 1
    assert channel.closed.is_set()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "admin-broadcast"] == []

"""GET /healthz (liveness) and GET /readyz (readiness) through a real gateway on 127.0.0.1:
ready while it can serve; 503 with every reason while the database refuses writes,
the configured Redis limiter is down, or no upstream is healthy. No auth needed."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import orjson
import pytest

from proxy.appkeys import STORE
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import RedisServer, needs_redis

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, await resp.json()


async def until_status(url: str, status: int) -> tuple[int, dict]:
    """Poll a probe (bounded) until it answers `status`: what a load balancer sees."""
    for _ in range(200):
        got = await get(url)
        if got[0] == status:
            return got
        await asyncio.sleep(0.025)
    return got


async def chat(harness: GatewayHarness) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/chat/completions", data=CHAT, headers=harness.headers()) as resp:
            await resp.read()
            return resp.status


async def test_a_serving_gateway_is_live_and_ready_without_credentials(tmp_path, fake):
    harness = await GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)]).start()
    try:
        assert await get(harness.url + "/readyz") == (200, {"status": "ready"})
        status, body = await get(harness.url + "/healthz")
        assert (status, body["status"]) == (200, "ok")
    finally:
        await harness.stop()


@pytest.mark.sqlite_only("deletes the SQLite file under a running gateway")
async def test_not_ready_while_the_database_refuses_writes(tmp_path, fake):
    harness = await GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)]).start()
    keep = harness.db_path + ".keep"
    try:
        assert await chat(harness) == 200  # the key is checked and cached while the file is there
        os.link(harness.db_path, keep)  # the same inode, to put back below
        os.remove(harness.db_path)
        assert await chat(harness) == 200  # its usage row is the write that finds the file gone
        status, body = await until_status(harness.url + "/readyz", 503)
        assert status == 503
        assert body == {"status": "not_ready",
                        "reasons": ["database: the database file was deleted while the gateway was running"]}
        assert harness.app[STORE].problem is not None
        os.link(keep, harness.db_path)  # the operator restores the file: the next write succeeds
        assert await chat(harness) == 200
        assert await until_status(harness.url + "/readyz", 200) == (200, {"status": "ready"})
    finally:
        if not os.path.exists(harness.db_path):
            os.link(keep, harness.db_path)
        await harness.stop()


async def test_not_ready_while_no_upstream_is_healthy_and_ready_again_when_one_is(tmp_path, fake):
    down = await start_fake_upstream(name="b")
    await down.stop()  # a port nothing listens on any more
    harness = await GatewayHarness.write(
        str(tmp_path / "c"), [upstream_entry("b", down.url)],
        health={"interval": "1h", "timeout": "1s", "eject_after": 1, "cooldown": "1h", "max_cooldown": "1h"}).start()
    try:
        assert (await get(harness.url + "/readyz"))[0] == 200  # optimistic until something fails
        assert await chat(harness) in (502, 503)
        status, body = await until_status(harness.url + "/readyz", 503)
        assert (status, body) == (503, {"status": "not_ready",
                                        "reasons": ["upstreams: no enabled upstream is healthy"]})
        # Liveness is unaffected: restarting the process would not bring an upstream back.
        assert (await get(harness.url + "/healthz"))[0] == 200
    finally:
        await harness.stop()
    ready = await GatewayHarness.write(str(tmp_path / "d"), [upstream_entry("a", fake.url)]).start()
    try:
        assert await get(ready.url + "/readyz") == (200, {"status": "ready"})
    finally:
        await ready.stop()


async def test_no_enabled_upstream_is_not_ready(tmp_path, fake):
    harness = await GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url, enabled=False)]).start()
    try:
        assert await get(harness.url + "/readyz") == (503, {"status": "not_ready",
                                                           "reasons": ["upstreams: none is enabled"]})
    finally:
        await harness.stop()


@needs_redis
async def test_not_ready_while_the_redis_limiter_is_down_and_ready_once_it_is_back(tmp_path, fake):
    redis = RedisServer()
    redis.start()
    try:
        harness = await GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)],
                                             limits={"backend": redis.url}).start()
        try:
            assert await get(harness.url + "/readyz") == (200, {"status": "ready"})
            redis.stop()
            await chat(harness)  # the admission that finds Redis gone
            status, body = await until_status(harness.url + "/readyz", 503)
            assert (status, body) == (503, {"status": "not_ready",
                                            "reasons": ["limiter: the shared limiter is down"]})
            redis.start()  # the limiter reconnects by itself
            assert await until_status(harness.url + "/readyz", 200) == (200, {"status": "ready"})
        finally:
            await harness.stop()
    finally:
        redis.close()


@pytest.mark.sqlite_only("deletes the SQLite file under a running gateway")
async def test_a_key_first_seen_after_the_database_file_is_deleted_gets_503_and_no_empty_file_appears(tmp_path, fake):
    harness = await GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)]).start()
    keep = harness.db_path + ".keep"
    try:
        os.link(harness.db_path, keep)
        os.remove(harness.db_path)  # before any request: the key is in no cache yet
        statuses = {await chat(harness) for _ in range(3)}
        # Read by a reader that opened before the deletion, the key still checks out (200);
        # a reader opened after it refuses (503). Never a 500, never an empty new file.
        assert statuses <= {200, 503}
        assert not os.path.exists(harness.db_path)
    finally:
        if not os.path.exists(harness.db_path):
            os.link(keep, harness.db_path)
        await harness.stop()

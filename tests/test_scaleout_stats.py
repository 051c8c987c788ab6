"""`serve --workers 2` on PostgreSQL and Redis: the usage stats read through either
worker equal what the upstreams answered, whichever worker recorded the rows."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from proxy.cli.accounts import create_user_and_key
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry
from .postgres_server import needs_postgres, postgres_server, postgres_url  # noqa: F401
from .redis_server import free_port, needs_redis, redis_server  # noqa: F401
from .test_workers import ADMIN_ENV, ADMIN_KEY, Fleet, owner_of

pytestmark = [needs_postgres, needs_redis, pytest.mark.timeout(180)]

CLIENTS = 8
REQUESTS = 240
BODIES = [  # different prompts, so a lost or doubled row shows in the token sums
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}]},
    {"model": "gpt-4o-mini", "max_tokens": 3, "messages": [{"role": "user", "content": "a b"}]},
]


async def pinned_sessions(fleet: Fleet, workers: int, tries: int = 64) -> list[aiohttp.ClientSession]:
    """One kept-alive connection to each worker: SO_REUSEPORT picks the worker of a new
    connection, so open connections until every worker owns one."""
    pids = fleet.worker_pids()
    found: dict[int, aiohttp.ClientSession] = {}
    for _ in range(tries):
        # The client's own port, chosen here, names its connection in /proc/net/tcp.
        port = free_port()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=1, local_addr=("127.0.0.1", port)))
        async with session.get(fleet.url + "/healthz") as resp:
            assert resp.status == 200
            await resp.read()
        owner = owner_of(port, pids)
        if owner is None or owner in found:
            await session.close()
        else:
            found[owner] = session
        if len(found) == workers:
            return list(found.values())
    for session in found.values():
        await session.close()
    raise AssertionError(f"{tries} connections reached only {len(found)} of {workers} workers")


async def stats_through(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/api/usage/stats",
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["total"]


async def test_usage_stats_through_every_worker_equal_the_upstreams_totals(
        tmp_path, monkeypatch, postgres_url, redis_server):  # noqa: F811
    redis_server.flush()
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)  # the config is loaded here too, for the account
    a = await start_fake_upstream(name="a")
    b = await start_fake_upstream(name="b")
    harness = GatewayHarness.write(
        str(tmp_path / "config"), [upstream_entry("a", a.url), upstream_entry("b", b.url)],
        server={"log_level": "info", "access_log": False},
        database={"url": postgres_url, "path": "gateway.db", "flush_interval": "50ms"},
        limits={"backend": redis_server.url}, admin={"key_env": ADMIN_ENV})
    _, key = create_user_and_key(harness.db_settings, "tenant@example.com",
                                 "correct horse battery", "test", "e2e", bcrypt_rounds=4)
    fleet = Fleet(harness, 2, {ADMIN_ENV: ADMIN_KEY})
    await fleet.start()
    answered = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    sessions: list[aiohttp.ClientSession] = []
    try:
        async def client(n: int) -> None:
            # A new connection per request: the kernel spreads them over both workers.
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)) as session:
                for i in range(REQUESTS // CLIENTS):
                    body = BODIES[(n + i) % len(BODIES)]
                    async with session.post(fleet.url + "/v1/chat/completions", json=body,
                                            headers={"Authorization": f"Bearer {key}"}) as resp:
                        assert resp.status == 200, await resp.text()
                        usage = (await resp.json())["usage"]
                    answered["requests"] += 1
                    answered["prompt_tokens"] += usage["prompt_tokens"]
                    answered["completion_tokens"] += usage["completion_tokens"]

        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        upstream_requests = sum(f.stats()["by_path"].get("/v1/chat/completions", 0) for f in (a, b))
        assert upstream_requests == answered["requests"] == REQUESTS
        assert a.stats()["requests"] > 0 and b.stats()["requests"] > 0

        sessions = await pinned_sessions(fleet, 2)
        expected = (REQUESTS, answered["prompt_tokens"], answered["completion_tokens"])
        deadline = time.monotonic() + 20
        while True:  # each worker's recorder writes its rows within a flush interval or so
            totals = [await stats_through(s, fleet.url) for s in sessions]
            seen = [(t["requests"], t["prompt_tokens"], t["completion_tokens"]) for t in totals]
            if seen == [expected, expected]:
                break
            assert time.monotonic() < deadline, f"stats {seen} never reached {expected}"
            await asyncio.sleep(0.05)
        assert [t["errors"] for t in totals] == [0, 0]
        assert totals[0] == totals[1]
        assert totals[0]["total_tokens"] == expected[1] + expected[2]
    finally:
        for session in sessions:
            await session.close()
        fleet.stop()
        await a.stop()
        await b.stop()
    assert fleet.proc.returncode == 0

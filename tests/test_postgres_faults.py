"""PostgreSQL stopped for about 5 s under load: /v1 keeps serving on cached keys,
/readyz says why it is not ready while the database is gone and ready once it is
back, and every answered request has its usage row afterwards, with the token
counts the upstream reported."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psycopg
import pytest

from proxy.appkeys import USAGE
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry
from .postgres_server import needs_postgres, start_postgres

pytestmark = [needs_postgres, pytest.mark.timeout(180)]

CLIENTS = 5
PER_PHASE = 100  # three phases: before, during and after the outage, 300 requests in all
OUTAGE_S = 5.0
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "how are you today"}]}


@pytest.fixture
def own_postgres():
    """A server of this test's own: stopping it must not disturb the session's."""
    server = start_postgres()
    yield server
    server.close()


class Load:
    """Bounded traffic from several kept-alive clients; what every 200 said it used."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.statuses: dict[int, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.ok = 0

    async def one(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self.url + "/v1/chat/completions", json=CHAT,
                                headers=self.headers) as resp:
            body = await resp.json()
        self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
        if resp.status == 200:
            self.ok += 1
            self.prompt_tokens += body["usage"]["prompt_tokens"]
            self.completion_tokens += body["usage"]["completion_tokens"]

    async def run(self, sessions: list[aiohttp.ClientSession], count: int,
                  spread_over: float = 0.0) -> None:
        """`count` requests over the clients; with `spread_over`, paced to last that long."""
        per_client = count // len(sessions)
        pause = spread_over / per_client if spread_over else 0.0

        async def client(session):
            for _ in range(per_client):
                await self.one(session)
                if pause:
                    await asyncio.sleep(pause)  # pacing the load, not waiting for a state

        await asyncio.gather(*(client(s) for s in sessions))


async def readyz(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/readyz") as resp:
            return resp.status, await resp.json()


async def poll_readyz(url: str, status: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        got, body = await readyz(url)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/readyz stayed {got} {body}"
        await asyncio.sleep(0.05)


async def test_postgres_stopped_mid_load_loses_no_usage_row(tmp_path, own_postgres):
    fake = await start_fake_upstream(name="a")
    url = own_postgres.new_database()
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", fake.url)],
                                   database={"url": url, "path": "gateway.db",
                                             "flush_interval": "50ms"})
    await harness.start()
    load = Load(harness.url, harness.key)
    sessions = [aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
                for _ in range(CLIENTS)]
    try:
        before = PER_PHASE // CLIENTS * CLIENTS
        await load.run(sessions, PER_PHASE)
        assert load.statuses == {200: before}
        assert (await readyz(harness.url))[0] == 200

        own_postgres.stop("fast")
        down_at = time.monotonic()
        during = asyncio.create_task(load.run(sessions, PER_PHASE, spread_over=OUTAGE_S))
        # The first usage batch that fails tells readiness; traffic goes on meanwhile.
        body = await poll_readyz(harness.url, 503, OUTAGE_S)
        assert body == {"status": "not_ready",
                        "reasons": ["database: the PostgreSQL database cannot be reached"]}
        await during
        assert time.monotonic() - down_at >= OUTAGE_S * 0.9
        # Every request in the outage was served on the cached key.
        assert load.statuses == {200: 2 * before}
        own_postgres.start()

        await load.run(sessions, PER_PHASE)
        assert load.statuses == {200: 3 * before}
        assert await poll_readyz(harness.url, 200, 30) == {"status": "ready"}
        await asyncio.wait_for(harness.app[USAGE].flush(), 30)
    finally:
        for session in sessions:
            await session.close()
        await harness.stop()
        await fake.stop()

    assert fake.stats()["by_path"].get("/v1/chat/completions") == load.ok
    with psycopg.connect(url) as conn:
        rows, prompt, completion = conn.execute(
            "SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
            "WHERE status = 200").fetchone()
        rollup = conn.execute("SELECT SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) "
                              "FROM usage_daily").fetchone()
    assert (rows, prompt, completion) == (load.ok, load.prompt_tokens, load.completion_tokens)
    assert tuple(int(v) for v in rollup) == (load.ok, load.prompt_tokens, load.completion_tokens)
    assert load.prompt_tokens == 5 * load.ok  # four words, plus one for the message

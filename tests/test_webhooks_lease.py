"""Two delivery loops on one database (two workers) never send a delivery twice."""

from __future__ import annotations

import asyncio
import base64
import ipaddress

import pytest

from proxy.config.snapshot import (
    WebhookEndpointConfig,
    WebhookSettings,
)
from proxy.store import open_store
from proxy.webhooks.delivery import Deliverer, WebhookClient, claim, release_claims
from proxy.webhooks.endpoints import sync_config_endpoints
from proxy.webhooks.outbox import emit

from .db_access import settings_at
from .test_webhooks_support import Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
EVENTS = 40


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


def _settings(url: str) -> WebhookSettings:
    endpoint = WebhookEndpointConfig(name="ops", url=url, events=("upstream.down",),
                                     secret_env="OPS_SECRET", secret=SECRET)
    return WebhookSettings(endpoints=(endpoint,), allow_http=True,
                           allow_networks=(ipaddress.ip_network("127.0.0.0/8"),), timeout=5.0)


async def test_two_delivery_loops_on_one_database_send_each_event_once(tmp_path, receiver):
    settings = _settings(receiver.url)
    database = settings_at(str(tmp_path / "gw.db"))
    # Two stores on one database: what two worker processes hold.
    first, second = open_store(database), open_store(database)
    await first.open()
    await second.open()
    clients = [WebhookClient(lambda: settings), WebhookClient(lambda: settings)]
    loops = [Deliverer(first, clients[0], lambda: settings, owner="host:0"),
             Deliverer(second, clients[1], lambda: settings, owner="host:1")]
    try:
        def seed(conn) -> None:
            sync_config_endpoints(conn, settings.endpoints, 1.0)
            for i in range(EVENTS):
                emit(conn, "upstream.down", {"upstream": f"u{i}"}, now=1.0)
        await first.write(seed)
        # Both loops read the same due rows and race to claim them, round after round.
        for _ in range(5):
            await asyncio.gather(*(loop.run_once() for loop in loops))
        await asyncio.gather(*(loop.drain() for loop in loops))
        ids = [r.headers["webhook-id"] for r in await receiver.wait_for(EVENTS)]
        assert len(ids) == EVENTS and len(set(ids)) == EVENTS
        assert loops[0].sent + loops[1].sent == EVENTS
        rows = await first.read(lambda conn: conn.execute(
            "SELECT state, attempts, claimed_by FROM webhook_deliveries").fetchall())
        assert sorted(set(tuple(r) for r in rows)) == [("succeeded", 1, None)]
    finally:
        for loop in loops:
            await loop.stop()
        for client in clients:
            await client.aclose()
        await first.close()
        await second.close()


async def test_a_claim_left_by_a_killed_worker_is_taken_back_by_its_slots_next_worker(tmp_path):
    database = settings_at(str(tmp_path / "gw.db"))
    store = open_store(database)
    await store.open()
    try:
        def seed(conn) -> None:
            sync_config_endpoints(conn, _settings("http://127.0.0.1:9/hook").endpoints, 1.0)
            emit(conn, "upstream.down", {"upstream": "u"}, now=1.0)
            conn.execute("UPDATE webhook_deliveries SET claimed_until = 1e12, claimed_by = 'host:3'")
        await store.write(seed)
        # A live claim cannot be taken by another worker that read the same due row.
        [(delivery_id,)] = await store.read(lambda conn: conn.execute(
            "SELECT id FROM webhook_deliveries").fetchall())
        assert await store.write(lambda conn: claim(conn, [delivery_id], 5.0, 50.0, "host:2")) == set()
        assert await store.write(lambda conn: release_claims(conn, "host:2")) == 0
        assert await store.write(lambda conn: release_claims(conn, "host:3")) == 1
        [(until, by)] = await store.read(lambda conn: conn.execute(
            "SELECT claimed_until, claimed_by FROM webhook_deliveries").fetchall())
        assert (until, by) == (None, None)
        assert await store.write(lambda conn: claim(conn, [delivery_id], 5.0, 50.0, "host:2")) == {delivery_id}
        assert await store.write(lambda conn: claim(conn, [delivery_id], 6.0, 60.0, "host:3")) == set()
    finally:
        await store.close()

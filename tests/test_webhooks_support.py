"""Shared parts of the webhook tests: a real receiver on 127.0.0.1 and a real
gateway configured for webhooks, with an injected clock. (No tests here.)"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from proxy.appkeys import STORE, WEBHOOKS
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry
from .test_auth_support import FakeClock

ADMIN_KEY = "adm-webhooks-test-admin-key-0123456789"
ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()
YAML_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server that answers webhook POSTs with the statuses it is given, in order."""

    statuses: list[int] = field(default_factory=list)
    default: int = 200
    extra_headers: dict[str, str] = field(default_factory=dict)
    got: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""
    hold: asyncio.Event | None = None  # when set up, answers wait for it
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self, host: str = "127.0.0.1") -> "Receiver":
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        self.url = f"http://{host}:{port}/hook"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._arrived:
            self.got.append(Received(dict(request.headers), body))
            self._arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else self.default
        return web.Response(status=status, headers=self.extra_headers)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.got) >= count), timeout)
        return self.got

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def webhooks_section(**extra: Any) -> dict[str, Any]:
    return {"encryption_key_env": "BM_TEST_WEBHOOK_KEY", "allow_http": True,
            "allow_networks": ["127.0.0.1/32"], "poll_interval": "20ms", "timeout": "2s", **extra}


def set_env(monkeypatch) -> None:
    monkeypatch.setenv("BM_TEST_WEBHOOK_KEY", ENCRYPTION_KEY)
    monkeypatch.setenv("BM_TEST_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("BM_TEST_YAML_SECRET", YAML_SECRET)


@dataclass
class WebhookGateway:
    harness: GatewayHarness
    clock: FakeClock
    fake: Any
    client: aiohttp.ClientSession
    token: str = ""

    @property
    def app(self):
        return self.harness.app

    @property
    def url(self) -> str:
        return self.harness.url

    def tenant(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   **kwargs) -> tuple[int, Any]:
        async with self.client.request(method, self.url + path, headers=headers or self.tenant(),
                                       **kwargs) as resp:
            return resp.status, await resp.json()

    async def create_endpoint(self, url: str, events: list[str] | None = None, **body) -> dict:
        status, created = await self.call("POST", "/api/webhooks",
                                          json={"url": url, "events": events or ["*"], **body})
        assert status == 201, created
        return created

    async def deliver_due(self) -> None:
        """One delivery round now, and wait for its attempts to be recorded."""
        deliverer = self.app[WEBHOOKS].deliverer
        await deliverer.run_once()
        await deliverer.drain()

    async def rows(self, sql: str, *params) -> list[tuple]:
        return await self.app[STORE].read(lambda conn: [tuple(r) for r in conn.execute(sql, params)])

    async def stop(self) -> None:
        await self.client.close()
        await self.harness.stop()
        await self.fake.stop()


async def start_gateway(tmp_path, monkeypatch, *, webhooks: dict | None = None,
                        plans: dict | None = None, clock: FakeClock | None = None) -> WebhookGateway:
    set_env(monkeypatch)
    fake = await start_fake_upstream(name="u")
    overrides: dict[str, Any] = {"webhooks": webhooks if webhooks is not None else webhooks_section(),
                                 "admin": {"key_env": "BM_TEST_ADMIN_KEY"},
                                 "auth": {"signup": "open", "signups_per_hour": 1000}}
    if plans is not None:
        overrides["plans"] = plans
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("u", fake.url)], **overrides)
    clock = clock or FakeClock()
    await harness.start(clock=clock)
    gw = WebhookGateway(harness, clock, fake, aiohttp.ClientSession())
    status, session = await gw.call("POST", "/api/auth/login", headers={},
                                    json={"email": "tenant@example.com", "password": "correct horse battery"})
    assert status == 200, session
    gw.token = session["token"]
    return gw


def db_bytes(db_path: str) -> bytes:
    """Every byte SQLite keeps for this database: the file, its WAL and journal."""
    out = b""
    for suffix in ("", "-wal", "-journal", "-shm"):
        if os.path.exists(db_path + suffix):
            with open(db_path + suffix, "rb") as fh:
                out += fh.read()
    return out


def verify(secret: str, got: Received) -> dict:
    """Check a delivery with the reference implementation's signing (its
    `verify` compares with today's clock; the signature itself does not
    depend on it), then return the parsed payload."""
    from datetime import datetime, timezone

    from standardwebhooks.webhooks import Webhook

    stamp = datetime.fromtimestamp(int(got.headers["webhook-timestamp"]), tz=timezone.utc)
    expected = Webhook(secret).sign(got.headers["webhook-id"], stamp, got.body.decode())
    assert expected in got.headers["webhook-signature"].split(" "), (expected, got.headers)
    import orjson

    return orjson.loads(got.body)

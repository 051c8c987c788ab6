"""The limiter behind a real aiohttp server: what a client sees on the wire."""

from datetime import datetime, timezone

import pytest
from aiohttp import web

from proxy.appkeys import CLOCK, CONFIG, LIMITER, STORE
from proxy.auth.principal import Principal
from proxy.config.snapshot import (
    AdminSettings,
    AuthSettings,
    HealthSettings,
    PlanConfig,
    RetrySettings,
    ServerSettings,
    Snapshot,
)
from proxy.errors import GatewayError, error_response
from proxy.limits import WindowTotals, setup

from .db_access import settings_at, store_at

T0 = datetime(2026, 11, 26, 12, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Holder:
    """The live config as the limiter sees it: the current snapshot and reload listeners."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.listeners = []

    def subscribe(self, listener) -> None:
        self.listeners.append(listener)


@web.middleware
async def errors(request, handler):
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)


async def completion(request: web.Request) -> web.Response:
    snapshot = request.app[CONFIG].current
    principal = Principal(user_id=int(request.headers["x-user"]),
                          key_id=int(request.headers["x-key"]), plan="p")
    plan = snapshot.plans[principal.plan]
    limiter = request.app[LIMITER]
    reservation = limiter.admit(principal, plan, estimated_tokens=1500, estimated_cost=0.0)
    limiter.settle(reservation, tokens=1500, cost=0.0)
    return web.json_response({"ok": True}, headers=limiter.headers(reservation))


def make_app(tmp_path, plan: PlanConfig, loaded: list, totals=()) -> web.Application:
    snapshot = Snapshot(
        server=ServerSettings(), database=settings_at(str(tmp_path / "bm.db")),
        admin=AdminSettings(), auth=AuthSettings(), health=HealthSettings(),
        retry=RetrySettings(), upstreams=(), models={}, plans={"p": plan})
    app = web.Application(middlewares=[errors])
    app[CLOCK] = Clock()
    app[CONFIG] = Holder(snapshot)

    async def store(app):
        db = store_at(snapshot.database.path)
        await db.open()
        app[STORE] = db
        yield
        await db.close()

    async def load_totals(db, now):
        loaded.append((db, now))
        return list(totals)

    app.cleanup_ctx.append(store)
    setup(app, load_totals=load_totals)
    app.router.add_post("/v1/chat/completions", completion)
    return app


async def test_headers_then_a_429_the_sdk_understands(aiohttp_client, tmp_path):
    loaded: list = []
    app = make_app(tmp_path, PlanConfig(name="p", rpm=2, tpm=150_000), loaded)
    client = await aiohttp_client(app)
    assert loaded == [(app[STORE], T0)]
    who = {"x-user": "1", "x-key": "7"}

    first = await client.post("/v1/chat/completions", headers=who)
    assert first.status == 200
    assert {k: v for k, v in first.headers.items() if k.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "148500",
        "x-ratelimit-reset-tokens": "600ms",
    }
    assert (await client.post("/v1/chat/completions", headers=who)).status == 200

    refused = await client.post("/v1/chat/completions", headers=who)
    assert refused.status == 429
    assert await refused.json() == {"error": {
        "message": "Rate limit reached for requests per minute (rpm) on this key: limit 2, "
                   "used 2. Please try again in 30s.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["retry-after-ms"] == "30000"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"

    app[CLOCK].now += 30
    assert (await client.post("/v1/chat/completions", headers=who)).status == 200


async def test_persisted_usage_survives_a_restart(aiohttp_client, tmp_path):
    day_totals = [WindowTotals(scope="user", id=1, day="2026-11-26", requests_day=9,
                               tokens_day=0, month="2026-11", requests_month=9, tokens_month=0,
                               cost_month=0.0)]
    app = make_app(tmp_path, PlanConfig(name="p", requests_per_day=10), [], day_totals)
    client = await aiohttp_client(app)
    who = {"x-user": "1", "x-key": "7"}
    assert (await client.post("/v1/chat/completions", headers=who)).status == 200
    refused = await client.post("/v1/chat/completions", headers=who)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["type"] == "insufficient_quota"
    assert body["error"]["code"] == "insufficient_quota"
    assert body["error"]["message"].startswith(
        "Daily request quota reached for this account: limit 10, used 10.")
    assert refused.headers["x-should-retry"] == "false"
    assert refused.headers["Retry-After"] == "43200"
    other_user = {"x-user": "2", "x-key": "8"}
    assert (await client.post("/v1/chat/completions", headers=other_user)).status == 200


@pytest.mark.parametrize("sync", [True, False])
async def test_loader_may_be_sync_or_async(aiohttp_client, tmp_path, sync):
    seen = []
    app = web.Application()
    app[CLOCK] = Clock()
    app[CONFIG] = Holder(None)
    app[STORE] = object()  # the loader only hands it on

    def sync_loader(db, now):
        seen.append(now)
        return []

    async def async_loader(db, now):
        return sync_loader(db, now)

    setup(app, load_totals=sync_loader if sync else async_loader)
    await aiohttp_client(app)
    assert seen == [T0]

"""GET /api/usage/stats and /api/usage/logs over a real server, real sessions and a real database."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from aiohttp import web

import proxy.auth.tables  # noqa: F401  (registers the users/sessions tables)
from proxy.appkeys import CLOCK, CONFIG, STORE
from proxy.auth.sessions import insert_session, new_token
from proxy.auth.users import insert_user
from proxy.config.snapshot import (
    AdminSettings,
    AuthSettings,
    HealthSettings,
    RetrySettings,
    ServerSettings,
    Snapshot,
)
from proxy.errors import GatewayError, error_response
from proxy.routes import usage_routes
from proxy.usage import UsageRecord, write_batch

from .db_access import settings_at, store_at

NOW = datetime(2025, 11, 26, 12, 0, tzinfo=timezone.utc).timestamp()
DAY = 86400.0
ADMIN_KEY = "admin-key-for-tests-0123456789"


@web.middleware
async def errors(request, handler):
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)


def usage_rows() -> list[UsageRecord]:
    rows = []
    # Alice (user 1): 30 requests over 3 days, keys 11 and 12, two models, some errors.
    for i in range(30):
        status = 429 if i % 10 == 9 else 200
        rows.append(UsageRecord(
            ts=NOW - (i % 3) * DAY - i, request_id=f"a{i}", user_id=1, key_id=11 + i % 2,
            route="chat", requested_model="fast", served_model="gpt-4o-mini" if i % 3 else "gpt-4o",
            upstream=None if status == 429 else "up-a", status=status,
            error_type="rate_limit_exceeded" if status == 429 else None,
            prompt_tokens=100, completion_tokens=20 if status == 200 else 0,
            total_tokens=120 if status == 200 else 100, cost_nano=round(0.01 * 1e9), latency_ms=200.0 + i))
    # Bob (user 2): 20 requests today on key 21.
    for i in range(20):
        rows.append(UsageRecord(
            ts=NOW - 100 - i, request_id=f"b{i}", user_id=2, key_id=21, route="embeddings",
            requested_model="embed", served_model="embed-3", upstream="up-b", status=200,
            error_type=None, prompt_tokens=50, completion_tokens=0, total_tokens=50,
            cost_nano=round(0.001 * 1e9), latency_ms=50.0))
    return rows


@pytest.fixture
async def client(tmp_path, aiohttp_client):
    path = str(tmp_path / "routes.db")
    snapshot = Snapshot(
        server=ServerSettings(), database=settings_at(path),
        admin=AdminSettings(key=ADMIN_KEY), auth=AuthSettings(), health=HealthSettings(),
        retry=RetrySettings(), upstreams=(), models={}, plans={})
    db = store_at(path)
    await db.open()
    tokens = {}

    def seed(conn):
        for email, role in (("alice@example.com", "user"), ("bob@example.com", "user"),
                            ("carol@example.com", "admin")):
            user = insert_user(conn, email=email, password_hash="unused", plan="free", now=NOW, role=role)
            token = new_token()
            insert_session(conn, user.id, token, now=NOW, ttl=DAY)
            tokens[email.split("@")[0]] = token
        write_batch(conn, usage_rows())

    await db.write(seed)
    app = web.Application(middlewares=[errors])
    app[CONFIG] = SimpleNamespace(current=snapshot)
    app[CLOCK] = lambda: NOW
    app[STORE] = db
    usage_routes.setup(app)
    test_client = await aiohttp_client(app)
    test_client.tokens = {**tokens, "admin_key": ADMIN_KEY}
    yield test_client
    await test_client.close()
    await db.close()


async def get(client, path: str, who: str | None, **params):
    headers = {"Authorization": f"Bearer {client.tokens[who]}"} if who else {}
    response = await client.get(path, params={k: str(v) for k, v in params.items()}, headers=headers)
    return response.status, await response.json()


async def test_anonymous_callers_are_refused(client):
    for path in ("/api/usage/stats", "/api/usage/logs"):
        status, body = await get(client, path, None)
        assert status == 401 and body["error"]["code"] == "not_authenticated"


async def test_a_user_sees_only_their_own_stats(client):
    status, body = await get(client, "/api/usage/stats", "alice")
    assert status == 200
    assert body["user_id"] == 1 and (body["from"], body["to"]) == ("2025-10-28", "2025-11-26")
    total = body["total"]
    assert (total["requests"], total["errors"]) == (30, 3)
    assert total["total_tokens"] == 27 * 120 + 3 * 100
    assert total["cost_usd"] == pytest.approx(0.30)
    assert [row["day"] for row in body["data"]] == ["2025-11-24", "2025-11-25", "2025-11-26"]
    assert all(row["requests"] == 10 for row in body["data"])

    status, body = await get(client, "/api/usage/stats", "alice", group_by="key")
    assert [(row["key_id"], row["requests"]) for row in body["data"]] == [(11, 15), (12, 15)]
    status, body = await get(client, "/api/usage/stats", "alice", user_id=1, group_by="model")
    assert status == 200
    assert [(row["model"], row["requests"]) for row in body["data"]] == [("gpt-4o", 10), ("gpt-4o-mini", 20)]


async def test_a_user_cannot_ask_for_another_users_usage(client):
    for path in ("/api/usage/stats", "/api/usage/logs"):
        status, body = await get(client, path, "alice", user_id=2)
        assert status == 403 and body["error"]["param"] == "user_id"


@pytest.mark.parametrize("who", ["carol", "admin_key"])
async def test_an_admin_sees_everyone_or_one_user(client, who):
    status, body = await get(client, "/api/usage/stats", who, group_by="user")
    assert status == 200 and body["user_id"] is None
    assert [(row["user_id"], row["requests"]) for row in body["data"]] == [(1, 30), (2, 20)]
    status, body = await get(client, "/api/usage/stats", who, user_id=2)
    assert body["total"]["requests"] == 20 and 25.0 < body["total"]["latency_ms_p95"] <= 50.0

    status, body = await get(client, "/api/usage/logs", who, limit=200)
    assert status == 200 and len(body["data"]) == 50
    assert {row["upstream"] for row in body["data"]} == {"up-a", "up-b", None}
    status, body = await get(client, "/api/usage/logs", who, user_id=2, limit=200)
    assert {row["user_id"] for row in body["data"]} == {2} and len(body["data"]) == 20


async def test_logs_of_a_user_hide_the_upstream_and_other_users(client):
    status, body = await get(client, "/api/usage/logs", "bob")
    assert status == 200 and len(body["data"]) == 20 and not body["has_more"]
    row = body["data"][0]
    assert "upstream" not in row
    assert row == {
        "id": row["id"], "ts": NOW - 100, "time": "2025-11-26T11:58:20.000+00:00", "request_id": "b0",
        "user_id": 2, "key_id": 21, "route": "embeddings", "model": "embed-3",
        "requested_model": "embed", "status": 200, "error_type": None, "prompt_tokens": 50,
        "completion_tokens": 0, "total_tokens": 50, "cached_tokens": None, "estimated": False,
        "partial": False, "stream": False, "cost_usd": 0.001, "latency_ms": 50.0, "ttfb_ms": None,
    }


async def test_cursor_pages_cover_every_row_once_newest_first(client):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        status, body = await get(client, "/api/usage/logs", "alice", **params)
        assert status == 200
        pages += 1
        seen += body["data"]
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if not cursor:
            break
    assert pages == 5 and [len(seen)] == [30]
    assert len({row["id"] for row in seen}) == 30
    order = [(row["ts"], row["id"]) for row in seen]
    assert order == sorted(order, reverse=True)


async def test_log_filters(client):
    async def ids(**params):
        status, body = await get(client, "/api/usage/logs", "alice", limit=200, **params)
        assert status == 200, body
        return {row["request_id"] for row in body["data"]}

    assert await ids(key_id=12) == {f"a{i}" for i in range(1, 30, 2)}
    assert await ids(status=429) == {"a9", "a19", "a29"}
    assert await ids(status="4xx") == {"a9", "a19", "a29"}
    assert len(await ids(status="2xx")) == 27
    assert await ids(model="gpt-4o") == {f"a{i}" for i in range(0, 30, 3)}
    assert await ids(model="fast") == {f"a{i}" for i in range(30)}  # the requested name matches too
    assert await ids(**{"from": "2025-11-26"}) == {f"a{i}" for i in range(0, 30, 3)}
    assert await ids(**{"to": "2025-11-24"}) == {f"a{i}" for i in range(2, 30, 3)}
    assert await ids(**{"from": str(NOW - 5), "to": str(NOW)}) == {"a0", "a3"}
    assert await ids(**{"from": "2025-11-26T11:59:55Z", "to": "2025-11-26T12:00:00+00:00"}) == {"a0", "a3"}
    assert await ids(key_id=21) == set()  # bob's key: filtered to alice's own rows


@pytest.mark.parametrize("path, params, param", [
    ("/api/usage/stats", {"group_by": "hour"}, "group_by"),
    ("/api/usage/stats", {"from": "yesterday"}, "from"),
    ("/api/usage/stats", {"to": "2025-13-01"}, "to"),
    ("/api/usage/stats", {"from": "2025-11-20", "to": "2025-11-10"}, "from"),
    ("/api/usage/stats", {"from": "-5"}, "from"),
    ("/api/usage/stats", {"from": "nan"}, "from"),
    ("/api/usage/stats", {"user_id": "abc"}, "user_id"),
    ("/api/usage/stats", {"limit": "5"}, "limit"),
    ("/api/usage/logs", {"limit": "0"}, "limit"),
    ("/api/usage/logs", {"limit": "201"}, "limit"),
    ("/api/usage/logs", {"limit": "ten"}, "limit"),
    ("/api/usage/logs", {"cursor": "not-a-cursor"}, "cursor"),
    ("/api/usage/logs", {"cursor": "bmFuOjE"}, "cursor"),  # "nan:1"
    ("/api/usage/logs", {"status": "abc"}, "status"),
    ("/api/usage/logs", {"status": "600"}, "status"),
    ("/api/usage/logs", {"key_id": "-1"}, "key_id"),
    ("/api/usage/logs", {"model": ""}, "model"),
    ("/api/usage/logs", {"to": "2025-11-26T25:00"}, "to"),
    ("/api/usage/logs", {"from": "2025-11-26", "to": "2025-11-25"}, "from"),
    ("/api/usage/logs", {"group_by": "day"}, "group_by"),
])
async def test_bad_query_parameters_are_400_naming_the_parameter(client, path, params, param):
    status, body = await get(client, path, "alice", **params)
    assert status == 400, body
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"


async def test_unknown_and_repeated_parameters(client):
    status, body = await get(client, "/api/usage/logs", "alice", colour="red")
    assert status == 400 and body["error"]["code"] == "unknown_parameter"
    assert body["error"]["param"] == "colour"
    response = await client.get("/api/usage/logs?limit=1&limit=2",
                                headers={"Authorization": f"Bearer {client.tokens['alice']}"})
    body = await response.json()
    assert response.status == 400 and body["error"]["param"] == "limit"

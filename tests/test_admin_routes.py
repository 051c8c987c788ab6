"""/api/admin/config, /reload, /health and /servers on a real HTTP server.

The app here holds only what these routes use (config holder, health monitor,
store, client session), so the tests pin the routes' own behaviour; the full
gateway is exercised in test_admin_servers_e2e.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from aiohttp import web

from proxy.app import gateway_middleware
from proxy.appkeys import CLOCK, CONFIG, HEALTH, STORE, TRANSPORT
from proxy.auth.sessions import insert_session, new_token
from proxy.auth.users import insert_user
from proxy.config import load_config
from proxy.config.holder import ConfigHolder
from proxy.fake_upstream import FakeUpstream, start_fake_upstream
from proxy.routes import admin_routes
from proxy.routing.health import HealthMonitor
from proxy.upstream.http1 import ConnectionPool

from .db_access import store_at

ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    ups = {name: await start_fake_upstream(name=name) for name in ("a", "b", "c")}
    yield ups
    for up in ups.values():
        await up.stop()


@pytest.fixture
def config_dir(tmp_path, fakes: dict[str, FakeUpstream], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(yaml.safe_dump({
        "admin": {"key_env": ADMIN_ENV},
        "database": {"path": "gateway.db"},
        "health": {"rise": 1, "fall": 1},
        "models": {"m1": None, "m2": None},
    }))
    (folder / "upstreams.yaml").write_text(yaml.safe_dump({"upstreams": [
        {"name": "a", "url": fakes["a"].url, "models": "*"},
        {"name": "b", "url": fakes["b"].url, "models": ["m1"], "priority": 2},
    ]}, sort_keys=False))
    return str(folder)


def build_app(config_dir: str) -> web.Application:
    snapshot = load_config(config_dir)
    # The app's own middleware: its error mapping and its one admin gate.
    app = web.Application(middlewares=[gateway_middleware])
    app[CLOCK] = time.time
    holder = ConfigHolder(config_dir, snapshot)
    app[CONFIG] = holder
    health = HealthMonitor()
    health.reconcile(snapshot)
    holder.subscribe(lambda old, new: health.reconcile(new))
    app[HEALTH] = health

    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = store_at(snapshot.database.path)
        await db.open()
        app[STORE] = db
        pool = ConnectionPool()
        app[TRANSPORT] = pool
        yield
        await pool.aclose()
        await db.close()

    app.cleanup_ctx.append(resources)
    admin_routes.setup(app)
    return app


@pytest.fixture
async def client(aiohttp_client, config_dir: str):
    return await aiohttp_client(build_app(config_dir))


async def call(client, method: str, path: str, *, status: int, json: Any = None,
               headers: dict[str, str] | None = None) -> Any:
    resp = await client.request(method, path, json=json, headers=ADMIN if headers is None else headers)
    body = await resp.json()
    assert resp.status == status, body
    return body


def managed_path(config_dir: str) -> str:
    return os.path.join(config_dir, "servers.managed.yaml")


# -- auth ---------------------------------------------------------------------------


async def session_for(client, role: str) -> dict[str, str]:
    app = client.server.app
    token = new_token()

    def create(conn):
        user = insert_user(conn, email=f"{role}@example.com", password_hash="x", plan="free", now=time.time(),
                           role=role)
        insert_session(conn, user.id, token, now=time.time(), ttl=3600)

    await app[STORE].write(create)
    return {"Authorization": f"Bearer {token}"}


ROUTES = [("GET", "/api/admin/config"), ("POST", "/api/admin/reload"), ("GET", "/api/admin/health"),
          ("POST", "/api/admin/health"), ("GET", "/api/admin/servers"), ("POST", "/api/admin/servers"),
          ("PATCH", "/api/admin/servers/a"), ("DELETE", "/api/admin/servers/a")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_routes_need_an_admin(client, method: str, path: str) -> None:
    anonymous = await call(client, method, path, status=401, headers={})
    assert anonymous["error"]["type"] == "invalid_request_error"
    wrong = await call(client, method, path, status=401, headers={"Authorization": "Bearer not-the-key"})
    assert "not-the-key" not in wrong["error"]["message"]
    user = await session_for(client, "user")
    denied = await call(client, method, path, status=403, headers=user)
    assert denied["error"]["code"] == "admin_required"
    assert os.path.exists(managed_path(client.server.app[CONFIG].path)) is False


async def test_an_admin_users_session_is_an_admin(client) -> None:
    admin = await session_for(client, "admin")
    await call(client, "GET", "/api/admin/config", status=200, headers=admin)


# -- config and reload ---------------------------------------------------------------


async def test_config_status_with_etag(client, config_dir: str) -> None:
    resp = await client.get("/api/admin/config", headers=ADMIN)
    body = await resp.json()
    holder = client.server.app[CONFIG]
    assert resp.headers["ETag"] == f'"{holder.current.digest}"'
    assert {k: body[k] for k in ("version", "digest", "loaded_at", "last_error", "managed_file")} == {
        "version": 1, "digest": holder.current.digest, "loaded_at": holder.loaded_at, "last_error": None,
        "managed_file": managed_path(config_dir)}
    assert body["upstreams"] == [{"name": "a", "source": f"{config_dir}/upstreams.yaml"},
                                 {"name": "b", "source": f"{config_dir}/upstreams.yaml"}]
    assert ADMIN_KEY not in await resp.text()


async def test_reload_route(client, config_dir: str) -> None:
    assert await call(client, "POST", "/api/admin/reload", status=200) == {
        "changed": False, "version": 1, "digest": client.server.app[CONFIG].current.digest}

    path = os.path.join(config_dir, "upstreams.yaml")
    with open(path, "a") as fh:
        fh.write("- name: broken\n")
    line = len(open(path).read().splitlines())
    error = await call(client, "POST", "/api/admin/reload", status=400)
    problem = f"{path}:{line}: upstreams[2]: 'url' is a required property"
    assert error["error"] == {
        "message": f"The reload was not applied; version 1 keeps serving. Problems: {problem}; "
                   f"{path}:{line}: upstreams[2]: 'models' is a required property",
        "type": "invalid_request_error", "param": None, "code": "config_invalid"}
    status = await call(client, "GET", "/api/admin/config", status=200)
    assert status["version"] == 1
    assert status["last_error"].splitlines()[0] == problem

    with open(path, "a") as fh:
        fh.write("  url: http://127.0.0.1:9\n  models: '*'\n")
    body = await call(client, "POST", "/api/admin/reload", status=200)
    assert (body["changed"], body["version"]) == (True, 2)
    assert (await call(client, "GET", "/api/admin/config", status=200))["last_error"] is None


# -- health -------------------------------------------------------------------------


async def test_health_summary_and_check_now(client, fakes: dict[str, FakeUpstream]) -> None:
    before = await call(client, "GET", "/api/admin/health", status=200)
    assert [(r["name"], r["state"], r["last_check"]) for r in before["data"]] == [
        ("a", "healthy", None), ("b", "healthy", None)]
    assert before["events"] == []

    await fakes["b"].stop()
    after = await call(client, "POST", "/api/admin/health", status=200)
    rows = {r["name"]: r for r in after["data"]}
    assert (rows["a"]["state"], rows["a"]["last_check_ok"], rows["a"]["saturated"]) == ("healthy", True, False)
    assert (rows["b"]["state"], rows["b"]["last_check_ok"]) == ("down", False)
    assert rows["b"]["last_error"] == "probe failed: connection refused"
    assert {"in_flight", "errors", "ejections", "latency_ewma_ms", "last_check"} <= rows["a"].keys()
    assert rows["a"]["latency_ewma_ms"] is not None
    assert fakes["a"].stats()["health_checks"] == 1
    assert [(e["event"], e["upstream"]) for e in after["events"]] == [("down", "b")]


# -- servers ------------------------------------------------------------------------


async def test_add_server_persists_as_managed_config(client, config_dir: str, fakes) -> None:
    resp = await client.post("/api/admin/servers", headers=ADMIN,
                             json={"name": "c", "url": fakes["c"].url, "models": ["m2"], "weight": 3})
    body = await resp.json()
    assert resp.status == 201, body
    holder = client.server.app[CONFIG]
    assert resp.headers["ETag"] == f'"{holder.current.digest}"'
    assert {k: body[k] for k in ("name", "url", "weight", "models", "managed", "source", "state")} == {
        "name": "c", "url": fakes["c"].url, "weight": 3, "models": ["m2"], "managed": True,
        "source": managed_path(config_dir), "state": "healthy"}
    assert holder.version == 2
    # A restart reads the same folder and finds it.
    assert "c" in load_config(config_dir).upstream_by_name
    listing = await call(client, "GET", "/api/admin/servers", status=200)
    assert sorted(s["name"] for s in listing["data"]) == ["a", "b", "c"]
    health = await call(client, "GET", "/api/admin/health", status=200)
    assert [(e["event"], e["upstream"], e["config_version"]) for e in health["events"]] == [("joined", "c", 2)]


async def test_patch_managed_server(client, fakes) -> None:
    await call(client, "POST", "/api/admin/servers", status=201,
               json={"name": "c", "url": fakes["c"].url, "models": "*"})
    body = await call(client, "PATCH", "/api/admin/servers/c", status=200,
                      json={"weight": 7, "priority": 0, "models": ["m1"]})
    assert (body["weight"], body["priority"], body["models"]) == (7, 0, ["m1"])
    body = await call(client, "PATCH", "/api/admin/servers/c", status=200, json={"enabled": False})
    assert (body["enabled"], body["state"]) == (False, "disabled")
    assert client.server.app[CONFIG].version == 4
    health = await call(client, "GET", "/api/admin/health", status=200)
    assert [(e["event"], e["upstream"]) for e in health["events"]] == [("joined", "c"), ("disabled", "c")]


async def test_saturated_upstream_is_flagged(client, fakes) -> None:
    await call(client, "POST", "/api/admin/servers", status=201,
               json={"name": "c", "url": fakes["c"].url, "models": "*", "max_concurrent": 1})
    client.server.app[HEALTH].started("c")  # one request in flight: at its cap
    rows = {r["name"]: r for r in (await call(client, "GET", "/api/admin/health", status=200))["data"]}
    assert (rows["c"]["in_flight"], rows["c"]["saturated"], rows["a"]["saturated"]) == (1, True, False)


async def test_drain_and_undrain_hand_written_server(client, config_dir: str) -> None:
    hand = open(os.path.join(config_dir, "upstreams.yaml"), "rb").read()
    body = await call(client, "PATCH", "/api/admin/servers/a", status=200, json={"drain": True})
    assert (body["drain"], body["state"], body["managed"]) == (True, "draining", False)
    assert yaml.safe_load(open(managed_path(config_dir)))["upstream_overrides"] == {"a": {"drain": True}}
    assert open(os.path.join(config_dir, "upstreams.yaml"), "rb").read() == hand
    assert load_config(config_dir).upstream_by_name["a"].drain is True

    health = await call(client, "GET", "/api/admin/health", status=200)
    assert [(e["event"], e["upstream"]) for e in health["events"]] == [("draining", "a")]

    body = await call(client, "PATCH", "/api/admin/servers/a", status=200, json={"drain": False})
    assert body["state"] == "healthy"


async def test_hand_written_server_refuses_other_changes_and_delete(client, config_dir: str) -> None:
    source = f"{config_dir}/upstreams.yaml"
    error = await call(client, "PATCH", "/api/admin/servers/a", status=409, json={"weight": 4})
    assert error["error"] == {
        "message": f"Server 'a' is declared in {source}, which the gateway never rewrites; change weight there. "
                   "Through this API it can only be drained or disabled (fields: drain, enabled).",
        "type": "invalid_request_error", "param": "weight", "code": "server_in_hand_written_file"}
    error = await call(client, "DELETE", "/api/admin/servers/a", status=409)
    assert source in error["error"]["message"]
    assert client.server.app[CONFIG].version == 1
    assert not os.path.exists(managed_path(config_dir))


async def test_delete_managed_server(client, config_dir: str, fakes) -> None:
    await call(client, "POST", "/api/admin/servers", status=201,
               json={"name": "c", "url": fakes["c"].url, "models": "*"})
    assert await call(client, "DELETE", "/api/admin/servers/c", status=200) == {
        "object": "server", "name": "c", "deleted": True, "config_version": 3}
    assert "c" not in load_config(config_dir).upstream_by_name
    await call(client, "GET", "/api/admin/servers/c", status=404)
    health = await call(client, "GET", "/api/admin/health", status=200)
    assert [e["event"] for e in health["events"]] == ["joined", "left"]


async def test_unknown_duplicate_and_bad_bodies(client, fakes) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        error = await call(client, method, "/api/admin/servers/ghost", status=404, json={"drain": True})
        assert error["error"]["code"] == "server_not_found"
    dup = await call(client, "POST", "/api/admin/servers", status=409,
                     json={"name": "b", "url": fakes["c"].url, "models": "*"})
    assert dup["error"]["param"] == "name"
    bad = await call(client, "POST", "/api/admin/servers", status=400,
                     json={"name": "c", "url": fakes["c"].url, "models": "*", "priority": -2})
    assert bad["error"]["param"] == "priority"
    resp = await client.post("/api/admin/servers", headers={**ADMIN, "Content-Type": "application/json"},
                             data=b"{nope")
    assert resp.status == 400
    empty = await call(client, "PATCH", "/api/admin/servers/a", status=400, json={})
    assert empty["error"]["message"] == "The request body names no field to change."
    assert client.server.app[CONFIG].version == 1


async def test_change_the_config_rejects_is_rolled_back(client, config_dir: str, fakes) -> None:
    await call(client, "POST", "/api/admin/servers", status=201,
               json={"name": "c", "url": fakes["c"].url, "models": "*"})
    before = open(managed_path(config_dir), "rb").read()
    error = await call(client, "PATCH", "/api/admin/servers/c", status=400, json={"models": ["m9"]})
    assert error["error"]["code"] == "config_invalid"
    assert error["error"]["message"] == (
        "The server change was not applied; version 2 keeps serving. Problems: "
        f"{managed_path(config_dir)}:7: upstreams[0].models[0]: model 'm9' is not declared in models")
    assert open(managed_path(config_dir), "rb").read() == before
    holder = client.server.app[CONFIG]
    assert (holder.version, holder.last_error) == (2, None)
    assert holder.current.upstream_by_name["c"].models == ("*",)


async def test_first_change_rejected_removes_the_managed_file(client, config_dir: str, fakes) -> None:
    await call(client, "POST", "/api/admin/servers", status=400,
               json={"name": "c", "url": fakes["c"].url, "models": ["m9"]})
    assert not os.path.exists(managed_path(config_dir))


async def test_if_match_guards_concurrent_edits(client, fakes) -> None:
    resp = await client.get("/api/admin/servers", headers=ADMIN)
    etag = resp.headers["ETag"]
    await call(client, "PATCH", "/api/admin/servers/a", status=200, json={"drain": True},
               headers={**ADMIN, "If-Match": etag})
    stale = await call(client, "PATCH", "/api/admin/servers/a", status=412, json={"drain": False},
                       headers={**ADMIN, "If-Match": etag})
    assert stale["error"]["code"] == "precondition_failed"


async def test_server_names_may_contain_a_slash(client, fakes) -> None:
    await call(client, "POST", "/api/admin/servers", status=201,
               json={"name": "pool/c", "url": fakes["c"].url, "models": "*"})
    body = await call(client, "PATCH", "/api/admin/servers/pool/c", status=200, json={"weight": 2})
    assert body["name"] == "pool/c"
    await call(client, "DELETE", "/api/admin/servers/pool/c", status=200)


async def test_no_change_is_no_new_version(client, config_dir: str) -> None:
    await call(client, "PATCH", "/api/admin/servers/a", status=200, json={"drain": None})
    assert client.server.app[CONFIG].version == 1
    assert not os.path.exists(managed_path(config_dir))


async def test_an_added_server_cannot_read_its_key_from_an_arbitrary_variable(client, fakes, monkeypatch) -> None:
    admin_env = client.server.app[CONFIG].current.admin.key_env
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    monkeypatch.setenv("BLUESMINDS_UPSTREAM_C_KEY", "sk-c")
    for name in (admin_env, "DATABASE_PASSWORD"):
        refused = await call(client, "POST", "/api/admin/servers", status=400,
                             json={"name": "c", "url": fakes["c"].url, "models": "*", "api_key_env": name})
        assert refused["error"]["param"] == "api_key_env"
        assert refused["error"]["code"] == "api_key_env_not_allowed"
    await call(client, "POST", "/api/admin/servers", status=201,
               json={"name": "c", "url": fakes["c"].url, "models": "*", "api_key_env": "BLUESMINDS_UPSTREAM_C_KEY"})
    assert client.server.app[CONFIG].current.upstream_by_name["c"].api_key == "sk-c"

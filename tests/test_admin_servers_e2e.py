"""Servers managed through /api/admin/servers, seen by real traffic and kept across restarts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml

from proxy.appkeys import CONFIG
from proxy.fake_upstream import FakeUpstream, start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-server-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    ups = {name: await start_fake_upstream(name=name) for name in ("a", "b", "c")}
    yield ups
    for up in ups.values():
        await up.stop()


@pytest.fixture
async def gateway(tmp_path, fakes, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GatewayHarness]:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    harness = GatewayHarness.write(
        str(tmp_path / "config"),
        [upstream_entry("a", fakes["a"].url), upstream_entry("b", fakes["b"].url)],
        admin={"key_env": ADMIN_ENV})
    await harness.start()
    yield harness
    await harness.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def admin(http, gateway: GatewayHarness, method: str, path: str, *, status: int, json=None,
                headers=None) -> dict:
    async with http.request(method, gateway.url + path, json=json,
                            headers=ADMIN if headers is None else headers) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


async def traffic(http, gateway: GatewayHarness, fakes: dict[str, FakeUpstream], n: int) -> dict[str, int]:
    """Send `n` chat requests one after another; how many each upstream served."""
    for fake in fakes.values():
        fake.reset_stats()
    for _ in range(n):
        async with http.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=gateway.headers()) as resp:
            assert resp.status == 200, await resp.text()
    return {name: fake.stats()["requests"] for name, fake in fakes.items()}


async def test_admin_routes_refuse_non_admins(gateway: GatewayHarness, http) -> None:
    anonymous = await admin(http, gateway, "GET", "/api/admin/servers", status=401, headers={})
    assert anonymous["error"]["type"] == "invalid_request_error"
    # A tenant's API key is for /v1 only.
    await admin(http, gateway, "GET", "/api/admin/servers", status=401, headers=gateway.headers())
    async with http.post(gateway.url + "/api/auth/login",
                         json={"email": "tenant@example.com", "password": "correct horse battery"}) as resp:
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["token"]
    user = {"Authorization": f"Bearer {token}"}
    for method, path in (("GET", "/api/admin/servers"), ("POST", "/api/admin/servers"),
                         ("DELETE", "/api/admin/servers/a"), ("GET", "/api/admin/config"),
                         ("POST", "/api/admin/reload"), ("GET", "/api/admin/health")):
        denied = await admin(http, gateway, method, path, status=403, headers=user)
        assert denied["error"]["code"] == "admin_required"
    assert gateway.app[CONFIG].version == 1


async def test_server_lifecycle_through_the_api(gateway: GatewayHarness, http, fakes) -> None:
    managed = os.path.join(gateway.config_dir, "servers.managed.yaml")
    hand_written = {n: open(os.path.join(gateway.config_dir, n), "rb").read()
                    for n in ("gateway.yaml", "upstreams.yaml")}

    added = await admin(http, gateway, "POST", "/api/admin/servers", status=201,
                        json={"name": "c", "url": fakes["c"].url, "models": "*"})
    assert (added["managed"], added["source"]) == (True, managed)
    assert await traffic(http, gateway, fakes, 30) == {"a": 10, "b": 10, "c": 10}

    # A restart from the same folder brings it back: it is config now.
    await gateway.stop()
    await gateway.start()
    listing = await admin(http, gateway, "GET", "/api/admin/servers", status=200)
    assert {s["name"]: s["managed"] for s in listing["data"]} == {"a": False, "b": False, "c": True}
    assert await traffic(http, gateway, fakes, 3) == {"a": 1, "b": 1, "c": 1}

    patched = await admin(http, gateway, "PATCH", "/api/admin/servers/c", status=200, json={"weight": 2})
    assert patched["weight"] == 2
    assert await traffic(http, gateway, fakes, 40) == {"a": 10, "b": 10, "c": 20}

    drained = await admin(http, gateway, "PATCH", "/api/admin/servers/a", status=200, json={"drain": True})
    assert drained["state"] == "draining"
    assert await traffic(http, gateway, fakes, 30) == {"a": 0, "b": 10, "c": 20}

    refused = await admin(http, gateway, "DELETE", "/api/admin/servers/a", status=409)
    assert f"{gateway.config_dir}/upstreams.yaml" in refused["error"]["message"]

    await admin(http, gateway, "DELETE", "/api/admin/servers/c", status=200)
    assert await traffic(http, gateway, fakes, 10) == {"a": 0, "b": 10, "c": 0}
    await admin(http, gateway, "PATCH", "/api/admin/servers/a", status=200, json={"drain": False})
    assert await traffic(http, gateway, fakes, 10) == {"a": 5, "b": 5, "c": 0}

    assert yaml.safe_load(open(managed)) == {"upstream_overrides": {"a": {"drain": False}}}
    for name, content in hand_written.items():
        assert open(os.path.join(gateway.config_dir, name), "rb").read() == content

    health = await admin(http, gateway, "GET", "/api/admin/health", status=200)
    assert [(e["event"], e["upstream"]) for e in health["events"]] == [
        ("draining", "a"), ("left", "c"), ("admitting", "a")]  # the restart began a fresh history

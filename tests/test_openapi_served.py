"""The reference as a running gateway serves it, and its /api request examples sent to that gateway."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest
from openapi_spec_validator import validate as validate_spec

from proxy.openapi import ROUTES

from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_ENV, ADMIN_KEY = "BM_TEST_OPENAPI_ADMIN", "admin-key-for-openapi-tests"
# What a body or query the schema refuses is answered with (validation.py and intake.py).
REFUSED = {"invalid_request", "unknown_parameter", "missing_required_parameter", "invalid_json",
           "unsupported_content_type"}
# Writes that end the session the other examples use go last.
LAST = {("POST", "/api/auth/logout"), ("DELETE", "/api/auth/sessions")}


@pytest.fixture
async def gateway(tmp_path, monkeypatch, upstreams):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    monkeypatch.setenv("BM_TEST_OPENAPI_WEBHOOK_KEY", base64.b64encode(b"k" * 32).decode())
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)],
                                   admin={"key_env": ADMIN_ENV}, auth={"signup": "open"},
                                   webhooks={"encryption_key_env": "BM_TEST_OPENAPI_WEBHOOK_KEY", "allow_http": True,
                                             "allow_networks": ["127.0.0.0/8"]},
                                   plans={"test": {"rpm": 100000, "tpm": 100000000, "models": "*"},
                                          "pro": {"rpm": 600, "models": "*"}})
    await harness.start()
    yield harness
    await harness.stop()


async def test_openapi_json_is_served_without_auth_and_answers_304_to_its_etag(gateway):
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/api/openapi.json") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            etag = response.headers["ETag"]
            document = json.loads(await response.read())
        async with client.get(gateway.url + "/api/openapi.json", headers={"If-None-Match": etag}) as again:
            assert again.status == 304
            assert again.headers["ETag"] == etag
            assert await again.read() == b""
    validate_spec(document)
    assert "/api/keys" in document["paths"]


def _api_examples():
    routes = [r for r in ROUTES if r.path.startswith("/api/") and r.example_request is not None
              and r.auth != "none" and r.path != "/api/billing/checkout"]
    return sorted(routes, key=lambda r: r.key in LAST)


async def test_every_api_request_example_is_accepted_by_a_running_gateway(gateway):
    async with aiohttp.ClientSession() as client:
        async with client.post(gateway.url + "/api/auth/login",
                               json={"email": "tenant@example.com", "password": "correct horse battery"}) as login:
            assert login.status == 200, await login.text()
            token = (await login.json())["token"]
        # Objects the examples' path parameters can name.
        async with client.post(gateway.url + "/api/webhooks", headers={"Authorization": f"Bearer {token}"},
                               json={"url": "http://127.0.0.1:9/hook", "events": ["key.created"]}) as made:
            assert made.status == 201, await made.text()
            hook_id = (await made.json())["id"]
        ids = {"id": str(hook_id), "name": "a", "delivery_id": "1"}
        checked = []
        for route in _api_examples():
            who = ADMIN_KEY if route.auth == "admin" else token
            path = route.path
            if path.startswith("/api/keys/"):
                ids_here = {**ids, "id": "1"}  # the harness's own key
            elif path.startswith("/api/admin/users/"):
                ids_here = {**ids, "id": str(gateway.user_id)}
            else:
                ids_here = ids
            for name, value in ids_here.items():
                path = path.replace("{" + name + "}", value)
            kwargs = ({"params": {k: json.dumps(v) if isinstance(v, bool) else str(v)
                                  for k, v in route.example_request.items()}}
                      if route.method == "GET" else {"json": route.example_request})
            async with client.request(route.method, gateway.url + path,
                                      headers={"Authorization": f"Bearer {who}"}, **kwargs) as response:
                text = await response.text()
                code = json.loads(text).get("error", {}).get("code") if text.startswith("{") else None
                assert not (response.status == 400 and code in REFUSED), f"{route.method} {path}: {text}"
                assert response.status < 500, f"{route.method} {path}: {text}"
                checked.append((route.method, route.path, response.status))
    assert len(checked) >= 25
    assert ("POST", "/api/keys", 201) in checked
    assert ("PATCH", "/api/admin/users/{id}", 200) in checked

"""Deliveries end to end: a real gateway, a real receiver, the injected clock for retries."""

from __future__ import annotations

import base64

import orjson
import pytest

from proxy.appkeys import CONFIG, HEALTH, TRANSPORT, WEBHOOKS
from proxy.webhooks.delivery import RETRY_DELAYS

from .test_webhooks_support import (ADMIN_KEY, YAML_SECRET, Receiver, db_bytes, start_gateway,
                                    verify, webhooks_section)


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def gw(tmp_path, monkeypatch):
    gateway = await start_gateway(tmp_path, monkeypatch)
    yield gateway
    await gateway.stop()


async def test_a_new_key_is_announced_signed_so_the_reference_verifier_accepts_it(gw, receiver):
    endpoint = await gw.create_endpoint(receiver.url, ["key.created"])
    status, key = await gw.call("POST", "/api/keys", json={"name": "ci"})
    assert status == 201
    got = (await receiver.wait_for(1))[0]
    payload = verify(endpoint["secret"], got)
    assert payload["type"] == "key.created"
    assert payload["data"] == {"key_id": key["id"], "prefix": key["prefix"], "name": "ci"}
    assert got.headers["webhook-id"] == payload["id"]
    assert got.headers["webhook-timestamp"] == str(int(gw.clock.now))
    assert key["key"].encode() not in got.body


async def test_a_receiver_that_fails_then_succeeds_gets_the_same_id_again(gw, receiver):
    receiver.statuses = [500]
    endpoint = await gw.create_endpoint(receiver.url, ["key.created"])
    await gw.call("POST", "/api/keys", json={"name": "ci"})
    await receiver.wait_for(1)
    await gw.app[WEBHOOKS].deliverer.drain()
    [(state, attempts, due)] = await gw.rows("SELECT state, attempts, next_attempt_at FROM webhook_deliveries")
    assert (state, attempts) == ("pending", 1)
    # The first retry comes about 5 s later (±20 % jitter), by the injected clock.
    assert RETRY_DELAYS[0] * 0.8 <= due - gw.clock.now <= RETRY_DELAYS[0] * 1.2
    await gw.deliver_due()
    assert len(receiver.got) == 1  # not due yet
    gw.clock.advance(6.1)
    await gw.deliver_due()
    first, second = await receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    verify(endpoint["secret"], second)
    status, page = await gw.call("GET", f"/api/webhooks/{endpoint['id']}/deliveries")
    assert status == 200
    [delivery] = page["data"]
    assert delivery["state"] == "succeeded" and delivery["attempts"] == 2
    assert [(a["number"], a["status"]) for a in delivery["attempt_log"]] == [(1, 500), (2, 200)]
    assert delivery["attempt_log"][0]["error"] == "answered 500"


async def test_a_410_disables_the_endpoint_and_says_why(gw, receiver):
    receiver.default = 410
    endpoint = await gw.create_endpoint(receiver.url, ["key.created"])
    await gw.call("POST", "/api/keys", json={"name": "one"})
    await receiver.wait_for(1)
    await gw.app[WEBHOOKS].deliverer.drain()
    status, shown = await gw.call("GET", f"/api/webhooks/{endpoint['id']}")
    assert status == 200
    assert (shown["state"], shown["disabled_reason"]) == ("disabled", "the receiver answered 410 Gone")
    await gw.call("POST", "/api/keys", json={"name": "two"})
    gw.clock.advance(10)
    await gw.deliver_due()
    assert len(receiver.got) == 1
    [(state,)] = await gw.rows("SELECT state FROM webhook_deliveries")  # the second never fanned out
    assert state == "failed"
    status, error = await gw.call("POST", f"/api/webhooks/{endpoint['id']}/test")
    assert status == 409 and error["error"]["code"] == "conflict"
    assert "is disabled (the receiver answered 410 Gone)" in error["error"]["message"]


async def test_redirects_are_not_followed(gw, receiver):
    target = await Receiver().start()
    try:
        receiver.default = 302
        receiver.extra_headers = {"Location": target.url}
        endpoint = await gw.create_endpoint(receiver.url)
        status, delivery = await gw.call("POST", f"/api/webhooks/{endpoint['id']}/test")
        assert status == 202 and delivery["event_type"] == "webhook.test"
        await receiver.wait_for(1)
        await gw.app[WEBHOOKS].deliverer.drain()
        assert target.got == []
        _, page = await gw.call("GET", f"/api/webhooks/{endpoint['id']}/deliveries")
        assert page["data"][0]["last_error"] == "answered 302; redirects are not followed"
        assert page["data"][0]["state"] == "pending"
    finally:
        await target.stop()


async def test_manual_retry_sends_a_failed_delivery_again_with_its_id(gw, receiver):
    receiver.statuses = [500]
    endpoint = await gw.create_endpoint(receiver.url)
    _, delivery = await gw.call("POST", f"/api/webhooks/{endpoint['id']}/test")
    await receiver.wait_for(1)
    await gw.app[WEBHOOKS].deliverer.drain()
    status, retried = await gw.call("POST", f"/api/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/retry")
    assert status == 202 and retried["state"] == "pending"
    first, second = await receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["event_id"]
    status, error = await gw.call("POST", f"/api/webhooks/{endpoint['id']}/deliveries/999/retry")
    assert status == 404 and error["error"]["message"].startswith("No delivery with id 999")


async def test_the_secret_is_shown_once_and_stored_encrypted(gw, receiver):
    endpoint = await gw.create_endpoint(receiver.url)
    secret = endpoint["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    _, shown = await gw.call("GET", f"/api/webhooks/{endpoint['id']}")
    _, listed = await gw.call("GET", "/api/webhooks")
    assert "secret" not in shown and secret not in orjson.dumps(listed).decode()
    assert shown == {k: v for k, v in endpoint.items() if k != "secret"}
    raw = db_bytes(gw.harness.db_path)
    assert secret.encode() not in raw
    assert secret[6:].encode() not in raw
    assert base64.b64decode(secret[6:]) not in raw
    # …yet deliveries are signed with it.
    await gw.call("POST", f"/api/webhooks/{endpoint['id']}/test")
    got = (await receiver.wait_for(1))[0]
    assert verify(secret, got)["type"] == "webhook.test"


async def test_a_tenant_sees_only_their_own_endpoints_and_the_admin_sees_all(gw, receiver):
    mine = await gw.create_endpoint(receiver.url)
    status, other = await gw.call("POST", "/api/auth/signup", headers={},
                                  json={"email": "other@example.com", "password": "correct horse battery"})
    assert status in (201, 202), other
    _, session = await gw.call("POST", "/api/auth/login", headers={},
                               json={"email": "other@example.com", "password": "correct horse battery"})
    theirs = {"Authorization": f"Bearer {session['token']}"}
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/deliveries"),
                         ("POST", "/test")):
        kwargs = {"json": {"active": False}} if method == "PATCH" else {}
        status, error = await gw.call(method, f"/api/webhooks/{mine['id']}{path}", theirs, **kwargs)
        assert status == 404, (method, path, error)
        assert error["error"]["message"] == (f"No webhook endpoint with id {mine['id']}; "
                                             "GET /api/webhooks lists yours.")
    _, listed = await gw.call("GET", "/api/webhooks", theirs)
    assert listed == {"object": "list", "data": [], "has_more": False}
    status, everything = await gw.call("GET", "/api/webhooks", gw.admin())
    assert status == 200 and [e["id"] for e in everything["data"]] == [mine["id"]]


async def test_bad_input_gets_a_400_naming_the_field(gw):
    cases = [
        ({"url": "https://example.com/h"}, "Missing required field 'events'."),
        ({"url": "https://example.com/h", "events": ["upstream.down"]}, "Field 'events[0]' must be one of"),
        ({"url": "https://example.com/h", "events": ["*"], "user_id": 2**63}, "Field 'user_id' must be at most"),
        ({"url": "ftp://example.com/h", "events": ["*"]}, "url must start with https://."),
        ({"url": "https://u:p@example.com/h", "events": ["*"]}, "url must not carry a user name or password."),
    ]
    for body, message in cases:
        status, error = await gw.call("POST", "/api/webhooks", json=body)
        assert status == 400, (body, error)
        assert error["error"]["message"].startswith(message), error


async def test_a_yaml_endpoint_gets_system_events_signed_with_its_environment_secret(tmp_path, monkeypatch):
    receiver = await Receiver().start()
    section = webhooks_section(endpoints=[{"name": "ops", "url": receiver.url, "events": ["upstream.down",
                                                                                         "upstream.up"],
                                           "secret_env": "BM_TEST_YAML_SECRET"}])
    gw = await start_gateway(tmp_path, monkeypatch, webhooks=section)
    try:
        status, listed = await gw.call("GET", "/api/webhooks", gw.admin())
        assert [(e["source"], e["name"], e["user_id"]) for e in listed["data"]] == [("config", "ops", None)]
        _, tenant_view = await gw.call("GET", "/api/webhooks")
        assert tenant_view["data"] == []
        await gw.fake.stop()  # the upstream goes away: probes fail
        monitor = gw.app[HEALTH]
        for _ in range(gw.app[CONFIG].current.health.fall):
            await monitor.probe_all(gw.app[CONFIG].current, gw.app[TRANSPORT])
        got = (await receiver.wait_for(1))[0]
        payload = verify(YAML_SECRET, got)
        assert payload["type"] == "upstream.down"
        assert payload["data"] == {"upstream": "u", "state": "down"}
    finally:
        await gw.stop()
        await receiver.stop()
    assert ADMIN_KEY.encode() not in got.body

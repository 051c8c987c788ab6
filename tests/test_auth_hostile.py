"""Accounts and keys under attack, through a real gateway on 127.0.0.1: parallel
guessing, floods of unverifiable keys, forged X-Forwarded-For, lookalike
addresses, out-of-range integers, and the admin's view and creation of keys."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest

from proxy.appkeys import AUTHENTICATOR, HASHER
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_KEY = "adm-hostile-tests-0123456789abcdef"
PASSWORD = "correct horse battery"  # the harness's tenant
TENANT = "tenant@example.com"
BIG = 2**63


@pytest.fixture
async def upstream():
    fake = await start_fake_upstream(name="a")
    yield fake
    await fake.stop()


@pytest.fixture
async def gateway_factory(tmp_path, upstream, monkeypatch):
    """Start the gateway with config overrides; stopped at the end of the test."""
    monkeypatch.setenv("BLUESMINDS_TEST_ADMIN_KEY", ADMIN_KEY)
    started: list[GatewayHarness] = []

    async def make(**overrides) -> GatewayHarness:
        # A large queue unless a test is about the queue, so counts stay exact.
        auth = {"signup": "open", "key_check_queue": 1000, **overrides.pop("auth", {})}
        harness = GatewayHarness.write(
            str(tmp_path / "config"), [upstream_entry("a", upstream.url)],
            admin={"key_env": "BLUESMINDS_TEST_ADMIN_KEY"}, auth=auth, **overrides)
        started.append(await harness.start(email=TENANT))
        return harness

    yield make
    for harness in started:
        await harness.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def forged(key: str) -> str:
    """The same lookup id with another random secret."""
    return key[: key.index("_") + 1] + secrets.token_urlsafe(32)


def unknown_key() -> str:
    return f"bm-{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def models(http, gw, key: str, headers: dict[str, str] | None = None):
    async with http.get(gw.url + "/v1/models",
                        headers={"Authorization": f"Bearer {key}", **(headers or {})}) as response:
        return response.status, await response.json(), response.headers


async def post(http, gw, path: str, body: dict, headers: dict[str, str] | None = None):
    async with http.post(gw.url + path, json=body, headers=headers or {}) as response:
        return response.status, await response.json()


async def get(http, gw, path: str, headers: dict[str, str] | None = None):
    async with http.get(gw.url + path, headers=headers or {}) as response:
        return response.status, await response.json()


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


# -- login and signup throttles ------------------------------------------------------


async def test_parallel_wrong_logins_cannot_outrun_the_throttle(gateway_factory, http):
    gw = await gateway_factory(auth={"login_attempts_per_minute": 10})
    answers = await asyncio.gather(*(
        post(http, gw, "/api/auth/login", {"email": TENANT, "password": f"guess number {i}"})
        for i in range(30)
    ))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [401] * 10 + [429] * 20
    assert gw.app[HASHER].verifications == 10
    refused = next(body for status, body in answers if status == 429)["error"]
    assert (refused["code"], refused["message"][:24]) == ("rate_limit_exceeded", "Too many failed logins; ")


async def test_successful_logins_do_not_use_up_the_throttle(gateway_factory, http):
    gw = await gateway_factory(auth={"login_attempts_per_minute": 2})
    for _ in range(5):
        status, _ = await post(http, gw, "/api/auth/login", {"email": TENANT, "password": PASSWORD})
        assert status == 200


async def test_signup_is_throttled_per_address(gateway_factory, http):
    gw = await gateway_factory(auth={"signups_per_hour": 3})
    for i in range(3):
        status, _ = await post(http, gw, "/api/auth/signup", {"email": f"s{i}@example.com", "password": PASSWORD})
        assert status == 202
    status, body = await post(http, gw, "/api/auth/signup", {"email": "s9@example.com", "password": PASSWORD})
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["message"].startswith("Too many signups from this address; try again in ")


async def test_forwarded_for_is_ignored_without_a_trusted_proxy(gateway_factory, http):
    gw = await gateway_factory(auth={"signups_per_hour": 2})
    statuses = []
    for i in range(3):
        status, _ = await post(http, gw, "/api/auth/signup", {"email": f"f{i}@example.com", "password": PASSWORD},
                               headers=via(f"198.51.100.{i}"))
        statuses.append(status)
    assert statuses == [202, 202, 429]


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(gateway_factory, http):
    gw = await gateway_factory(auth={"signups_per_hour": 1},
                               server={"trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]})

    async def signup(n: int, forwarded: str) -> int:
        status, _ = await post(http, gw, "/api/auth/signup", {"email": f"p{n}@example.com", "password": PASSWORD},
                               headers=via(forwarded))
        return status

    assert await signup(1, "203.0.113.7, 10.0.0.5") == 202
    # The left part is the client's own writing: changing it does not give a new bucket.
    assert await signup(2, "1.2.3.4, 203.0.113.7, 10.0.0.5") == 429
    assert await signup(3, "203.0.113.8, 10.9.9.9") == 202


# -- floods of unverifiable keys ----------------------------------------------------------


async def test_failed_key_checks_are_throttled_per_lookup_id(gateway_factory, http):
    gw = await gateway_factory(auth={"key_failures_per_minute": 3}, server={"trusted_proxies": ["127.0.0.1"]})
    assert (await models(http, gw, gw.key))[0] == 200  # verified before the attack
    statuses = [(await models(http, gw, forged(gw.key), via(f"192.0.2.{i}")))[0] for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    status, body, headers = await models(http, gw, forged(gw.key), via("192.0.2.200"))
    assert status == 429
    assert body["error"]["message"].startswith("Too many failed API key checks; try again in ")
    assert int(headers["Retry-After"]) >= 1
    assert (await models(http, gw, gw.key))[0] == 200  # the verified key never waits on the throttle


async def test_failed_key_checks_are_throttled_per_address(gateway_factory, http):
    gw = await gateway_factory(auth={"key_failures_per_minute": 3}, server={"trusted_proxies": ["127.0.0.1"]})
    statuses = [(await models(http, gw, unknown_key(), via("192.0.2.1")))[0] for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert (await models(http, gw, unknown_key(), via("192.0.2.2")))[0] == 401


async def test_parallel_forged_secrets_cannot_outrun_the_throttle(gateway_factory, http):
    gw = await gateway_factory(auth={"key_failures_per_minute": 5}, server={"trusted_proxies": ["127.0.0.1"]})
    answers = await asyncio.gather(*(models(http, gw, forged(gw.key), via(f"192.0.2.{i}")) for i in range(15)))
    assert sorted(status for status, _, _ in answers) == [401] * 5 + [429] * 10
    assert gw.app[AUTHENTICATOR].bcrypt_verifications == 5


async def test_unknown_lookup_id_costs_the_same_check_as_a_known_one(gateway_factory, http):
    gw = await gateway_factory(auth={"bcrypt_rounds": 5})
    hasher = gw.app[HASHER]
    before = hasher.verifications
    assert (await models(http, gw, forged(gw.key)))[0] == 401
    assert (await models(http, gw, unknown_key()))[0] == 401
    assert hasher.verifications == before + 2
    assert (await hasher.dummy_hash(5)).startswith("$2b$05$")


async def test_key_checks_beyond_the_queue_are_refused_and_logins_still_work(gateway_factory, http):
    gw = await gateway_factory(auth={"bcrypt_rounds": 10, "key_check_queue": 0, "key_failures_per_minute": 1000},
                               server={"trusted_proxies": ["127.0.0.1"]})
    flood = asyncio.gather(*(models(http, gw, unknown_key(), via(f"192.0.2.{i}")) for i in range(12)))
    status, _ = await post(http, gw, "/api/auth/login", {"email": TENANT, "password": PASSWORD})
    assert status == 200
    answers = await flood
    busy = [body for status, body, _ in answers if status == 429]
    assert busy, "a queue of 0 behind a running check refuses at once"
    assert {b["error"]["message"] for b in busy} == {
        "The server is busy checking API keys it has not seen yet; try again in 1 s."}
    assert sorted({status for status, _, _ in answers}) == [401, 429]
    assert gw.app[AUTHENTICATOR].bcrypt_verifications == 12 - len(busy)


async def test_a_check_whose_client_left_is_dropped(gateway_factory, http):
    gw = await gateway_factory(auth={"bcrypt_rounds": 13, "key_failures_per_minute": 1000},
                               server={"trusted_proxies": ["127.0.0.1"]})
    gate = gw.app[AUTHENTICATOR]._gate
    await gw.app[HASHER].dummy_hash(13)  # made once, ahead, so the checks below are the only bcrypt work
    running = asyncio.ensure_future(models(http, gw, unknown_key(), via("192.0.2.1")))
    await _until(lambda: gate.free == 0)
    before = gw.app[HASHER].verifications
    async with aiohttp.ClientSession() as leaving:
        abandoned = asyncio.ensure_future(models(leaving, gw, unknown_key(), via("192.0.2.2")))
        await _until(lambda: gate.waiting == 1)
        abandoned.cancel()
    await _until(lambda: gate.waiting == 0)
    assert gate.free == 0  # the first check is still running: the second left the queue, not the pool
    assert (await running)[0] == 401
    assert gw.app[HASHER].verifications == before  # the abandoned check never reached bcrypt


async def _until(condition, *, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# -- lookalike addresses and taken addresses ----------------------------------------------


@pytest.mark.parametrize("email", ["ada\u200b@example.com", "ada@exa\u200dmple.com", "\ufeffada@example.com",
                                   "ada\u202e@example.com", "ada\x00@example.com", "ad\ta@example.com"])
async def test_invisible_characters_in_an_address_are_refused(gateway_factory, http, email):
    gw = await gateway_factory()
    status, body = await post(http, gw, "/api/auth/signup", {"email": email, "password": PASSWORD})
    assert status == 400
    assert body["error"]["param"] == "email"
    assert body["error"]["message"].startswith("The e-mail address contains control or invisible characters")


async def test_compatibility_forms_of_an_address_are_one_account(gateway_factory, http):
    gw = await gateway_factory()
    status, body = await post(http, gw, "/api/auth/signup", {"email": "ＡＤＡ@ｅｘａｍｐｌｅ.com", "password": PASSWORD})
    assert (status, body["email"]) == (202, "ada@example.com")
    status, _ = await post(http, gw, "/api/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    assert status == 200


async def test_signup_of_the_tenants_address_answers_like_any_other(gateway_factory, http):
    gw = await gateway_factory()
    taken = await post(http, gw, "/api/auth/signup", {"email": TENANT, "password": "someone else's"})
    new = await post(http, gw, "/api/auth/signup", {"email": "fresh@example.com", "password": "someone else's"})
    assert (taken[0], new[0]) == (202, 202)
    assert taken[1] == {**new[1], "email": TENANT}
    status, _ = await post(http, gw, "/api/auth/login", {"email": TENANT, "password": PASSWORD})
    assert status == 200  # the real owner's password is untouched


# -- integers out of range ------------------------------------------------------------------


@pytest.mark.parametrize("path, param", [
    (f"/api/usage/logs?key_id={BIG}", "key_id"),
    (f"/api/usage/logs?user_id={BIG}", "user_id"),
    (f"/api/usage/stats?user_id={BIG}", "user_id"),
    (f"/api/keys?user_id={BIG}", "user_id"),
    (f"/api/admin/users?after={BIG}", "after"),
])
async def test_ids_beyond_64_bits_are_a_400(gateway_factory, http, path, param):
    gw = await gateway_factory()
    status, body = await get(http, gw, path, ADMIN)
    assert status == 400
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"


async def test_a_cursor_with_a_huge_row_id_is_a_400(gateway_factory, http):
    import base64

    gw = await gateway_factory()
    cursor = base64.urlsafe_b64encode(f"1700000000.0:{BIG}".encode()).decode().rstrip("=")
    status, body = await get(http, gw, f"/api/usage/logs?cursor={cursor}", ADMIN)
    assert status == 400
    assert body["error"]["param"] == "cursor"
    assert body["error"]["message"].startswith("cursor is not one this API gave out")


@pytest.mark.parametrize("expires_at", [10**20, 253402300800, 1e300])
async def test_a_huge_expires_at_is_a_400_and_the_key_list_keeps_working(gateway_factory, http, expires_at):
    gw = await gateway_factory()
    status, body = await post(http, gw, "/api/keys", {"name": "far", "user_id": gw.user_id, "expires_at": expires_at},
                              ADMIN)
    assert status == 400
    assert body["error"]["param"] == "expires_at"
    assert "at most 253402300799" in body["error"]["message"]
    status, listed = await get(http, gw, f"/api/keys?user_id={gw.user_id}", ADMIN)
    assert status == 200
    assert [key["name"] for key in listed["data"]] == ["e2e"]


async def test_the_latest_allowed_expiry_is_listed(gateway_factory, http):
    gw = await gateway_factory()
    status, created = await post(http, gw, "/api/keys",
                                 {"name": "far", "user_id": gw.user_id, "expires_at": 253402300799}, ADMIN)
    assert (status, created["expires_at"]) == (201, 253402300799)
    status, listed = await get(http, gw, f"/api/keys?user_id={gw.user_id}", ADMIN)
    assert status == 200 and listed["data"][-1]["expires_at"] == 253402300799


# -- the admin and keys -----------------------------------------------------------------------


async def test_admin_key_list_shows_each_keys_usage(gateway_factory, http):
    gw = await gateway_factory()
    for _ in range(3):
        async with http.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200

    async def admin_usage():
        _, listed = await get(http, gw, "/api/keys", ADMIN)
        return {key["id"]: key["usage"]["requests"] for key in listed["data"]}

    deadline = asyncio.get_running_loop().time() + 10
    while (usage := await admin_usage()) != {1: 3}:
        assert asyncio.get_running_loop().time() < deadline, usage
        await asyncio.sleep(0.02)
    _, login = await post(http, gw, "/api/auth/login", {"email": TENANT, "password": PASSWORD})
    _, own = await get(http, gw, "/api/keys", {"Authorization": f"Bearer {login['token']}"})
    _, everyone = await get(http, gw, "/api/keys", ADMIN)
    assert own["data"][0]["usage"] == everyone["data"][0]["usage"]
    assert everyone["data"][0]["usage"]["last_30d"]["requests"] == 3


async def test_admin_key_creates_a_working_key_for_a_user(gateway_factory, http):
    gw = await gateway_factory()
    status, created = await post(http, gw, "/api/keys",
                                 {"name": "made-by-admin", "email": TENANT, "scopes": ["models"]}, ADMIN)
    assert status == 201
    assert (created["user_id"], created["name"], created["scopes"]) == (gw.user_id, "made-by-admin", ["models"])
    status, body, _ = await models(http, gw, created["key"])
    assert status == 200 and body["object"] == "list"

"""The /v1 authenticator: bcrypt once per key per process, then memory only;
every change that restricts a key shows on the next request."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from proxy.auth.keys import KeyLimits, revoke_key
from proxy.auth.users import update_user
from proxy.errors import AuthenticationFailed

from .db_access import store_at
from .test_auth_support import ADMIN, ADMIN_KEY, api, build_app, clock, snapshot  # noqa: F401


def run_without_suspending(coro):
    """Drive a coroutine one step: it must finish without awaiting anything
    that yields (no thread hop, no SQLite, no bcrypt)."""
    with pytest.raises(StopIteration) as finished:
        coro.send(None)
    return finished.value.value


async def rejected(api, header, snapshot):
    with pytest.raises(AuthenticationFailed) as failure:
        await api.authenticator.authenticate(header, snapshot)
    body = failure.value.body()["error"]
    assert (failure.value.status, body["code"], body["type"]) == (401, "invalid_api_key", "invalid_request_error")
    return body["message"]


async def test_principal_carries_plan_scopes_models_limits(api, snapshot):
    headers, user = await api.user()
    key = await api.create_key(headers, scopes=["chat"], models=["mini"], limits={"rpm": 5})
    principal = await api.authenticate(key["key"])
    assert principal.user_id == user["id"]
    assert principal.key_id == key["id"]
    assert principal.plan == "free"
    assert principal.scopes == frozenset({"chat"})
    assert principal.models == ("gpt-4o-mini",)
    assert principal.limits == KeyLimits(rpm=5)
    assert principal.is_admin is False
    assert principal.email == user["email"]


async def test_admin_users_keys_are_admin_principals(api):
    headers, _ = await api.admin_user()
    key = await api.create_key(headers)
    assert (await api.authenticate(key["key"])).is_admin is True


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "bearer "])
async def test_missing_key(api, snapshot, header):
    message = await rejected(api, header, snapshot)
    assert message.startswith("You didn't provide an API key.")


@pytest.mark.parametrize("token", ["sk-openai", "bm-", "bm-0123456789ab_short", "bm-" + "x" * 56])
async def test_malformed_key_costs_no_bcrypt(api, snapshot, token):
    message = await rejected(api, f"Bearer {token}", snapshot)
    assert message == "Incorrect API key provided. List your API keys with GET /api/keys."
    assert token not in message or token == "bm-"
    assert api.authenticator.bcrypt_verifications == 0


async def test_wrong_secret_is_checked_once(api, snapshot):
    headers, _ = await api.user()
    key = (await api.create_key(headers))["key"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for _ in range(3):
        message = await rejected(api, f"Bearer {forged}", snapshot)
        assert forged not in message
    assert api.authenticator.bcrypt_verifications == 1


async def test_unknown_lookup_id_costs_one_bcrypt_of_the_configured_cost(api, snapshot):
    # Answering an unknown lookup id at once would tell it apart from a known one by timing.
    await rejected(api, "Bearer bm-0123456789ab_" + "A" * 43, snapshot)
    assert api.authenticator.bcrypt_verifications == 1
    assert api.hasher.verifications == 1
    dummy = await api.hasher.dummy_hash(snapshot.auth.bcrypt_rounds)
    assert dummy.startswith("$2b$04$")


async def test_admin_key_is_not_a_v1_key(api, snapshot):
    message = await rejected(api, f"Bearer {ADMIN_KEY}", snapshot)
    assert "management API" in message and ADMIN_KEY not in message


async def test_cache_hit_needs_no_bcrypt_and_no_await(api, snapshot):
    headers, _ = await api.user()
    key = (await api.create_key(headers))["key"]
    before = api.hasher.verifications  # the login's password check
    first = await api.authenticate(key)
    assert api.authenticator.bcrypt_verifications == 1
    for _ in range(100):
        again = run_without_suspending(api.authenticator.authenticate(f"Bearer {key}", snapshot))
        assert again == first
    assert api.authenticator.bcrypt_verifications == 1
    assert api.hasher.verifications == before + 1


async def test_concurrent_first_sight_shares_one_bcrypt(api, snapshot):
    headers, _ = await api.user()
    key = (await api.create_key(headers))["key"]
    principals = await asyncio.gather(*(api.authenticate(key) for _ in range(20)))
    assert len({p.key_id for p in principals}) == 1
    assert api.authenticator.bcrypt_verifications == 1


async def test_revocation_shows_on_the_next_request(api, snapshot):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    await api.client.delete(f"/api/keys/{key['id']}", headers=headers)
    message = await rejected(api, f"Bearer {key['key']}", snapshot)
    assert "revoked" in message
    assert api.authenticator.bcrypt_verifications == 1


async def test_expiry_is_checked_on_every_hit(api, clock, snapshot):
    headers, _ = await api.user()
    key = await api.create_key(headers, expires_at=int(clock.now) + 60)
    await api.authenticate(key["key"])
    clock.advance(59)
    run_without_suspending(api.authenticator.authenticate(f"Bearer {key['key']}", snapshot))
    clock.advance(1)
    message = await rejected(api, f"Bearer {key['key']}", snapshot)
    assert "expired" in message
    assert api.authenticator.bcrypt_verifications == 1


async def test_disable_and_enable_user(api, snapshot):
    headers, user = await api.user()
    key = (await api.create_key(headers))["key"]
    await api.authenticate(key)
    await api.client.patch(f"/api/admin/users/{user['id']}", json={"disabled": True}, headers=ADMIN)
    assert "disabled" in await rejected(api, f"Bearer {key}", snapshot)
    await api.client.patch(f"/api/admin/users/{user['id']}", json={"disabled": False}, headers=ADMIN)
    assert (await api.authenticate(key)).user_id == user["id"]
    assert api.authenticator.bcrypt_verifications == 1


async def test_plan_and_role_changes_show_on_the_next_request(api):
    headers, user = await api.user()
    key = (await api.create_key(headers))["key"]
    assert (await api.authenticate(key)).plan == "free"
    await api.client.patch(f"/api/admin/users/{user['id']}", json={"plan": "pro", "role": "admin"},
                           headers=ADMIN)
    principal = await api.authenticate(key)
    assert (principal.plan, principal.is_admin) == ("pro", True)
    assert api.authenticator.bcrypt_verifications == 1


async def test_scope_change_shows_on_the_next_request(api):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    await api.client.patch(f"/api/keys/{key['id']}", json={"scopes": ["embeddings"]}, headers=headers)
    assert (await api.authenticate(key["key"])).scopes == frozenset({"embeddings"})


async def test_a_plan_removed_from_config_falls_back_to_the_default(api, snapshot):
    headers, user = await api.user()
    await api.client.patch(f"/api/admin/users/{user['id']}", json={"plan": "pro"}, headers=ADMIN)
    key = (await api.create_key(headers))["key"]
    without_pro = dataclasses.replace(snapshot, plans={"free": snapshot.plans["free"]})
    assert (await api.authenticator.authenticate(f"Bearer {key}", without_pro)).plan == "free"


async def test_changes_from_another_process_arrive_with_the_next_poll(api, snapshot, clock):
    headers, user = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    other = store_at(snapshot.database.path)  # another process's connection, e.g. the CLI
    other.open_sync()
    try:
        other.write_sync(lambda conn: revoke_key(conn, key["id"], clock.now))
    finally:
        other.close_sync()
    assert await api.authenticator.poll_changes() == 1
    assert "revoked" in await rejected(api, f"Bearer {key['key']}", snapshot)
    assert await api.authenticator.poll_changes() == 0


async def test_user_change_from_another_process(api, snapshot, clock):
    headers, user = await api.user()
    key = (await api.create_key(headers))["key"]
    await api.authenticate(key)
    await api.db.write(lambda conn: update_user(conn, user["id"], {"plan": "pro"}, clock.now))
    await api.authenticator.poll_changes()
    assert (await api.authenticate(key)).plan == "pro"


async def test_cache_is_bounded(api, snapshot):
    small = dataclasses.replace(snapshot, auth=dataclasses.replace(snapshot.auth, key_cache_size=2))
    headers, _ = await api.user()
    keys = [(await api.create_key(headers))["key"] for _ in range(3)]
    for key in keys:
        await api.authenticator.authenticate(f"Bearer {key}", small)
    assert api.authenticator.bcrypt_verifications == 3
    await api.authenticator.authenticate(f"Bearer {keys[2]}", small)
    assert api.authenticator.bcrypt_verifications == 3
    await api.authenticator.authenticate(f"Bearer {keys[0]}", small)  # evicted: verified again
    assert api.authenticator.bcrypt_verifications == 4


async def test_last_used_is_written_in_batches(api, clock):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    clock.advance(5)
    await api.authenticate(key["key"])

    def stored(conn):
        return conn.execute("SELECT last_used_at FROM api_keys WHERE id = ?", (key["id"],)).fetchone()[0]

    assert await api.db.read(stored) is None
    await api.authenticator.flush_last_used()
    assert await api.db.read(stored) == clock.now


async def test_shutdown_flushes_last_used(aiohttp_client, snapshot, clock):
    app = build_app(snapshot, clock)
    client = await aiohttp_client(app)
    await client.post("/api/auth/signup", json={"email": "z@example.com", "password": "x" * 12})
    response = await client.post("/api/auth/login", json={"email": "z@example.com", "password": "x" * 12})
    token = (await response.json())["token"]
    created = await (await client.post("/api/keys", json={"name": "k"},
                                       headers={"Authorization": f"Bearer {token}"})).json()
    from proxy.auth import AUTHENTICATOR

    await app[AUTHENTICATOR].authenticate(f"Bearer {created['key']}", snapshot)
    await client.close()
    db = store_at(snapshot.database.path)
    db.open_sync()
    try:
        row = db.read_sync(lambda conn: conn.execute("SELECT last_used_at FROM api_keys").fetchone())
    finally:
        db.close_sync()
    assert row[0] == clock.now

"""/api/keys*: create, list, read, change, revoke and rotate, within the owner's plan."""

from __future__ import annotations

import pytest

from proxy.auth.keys import parse_key
from proxy.errors import AuthenticationFailed

from .test_auth_support import ADMIN, api, clock, error_of, snapshot  # noqa: F401


async def test_create_key_shows_it_once(api, clock):
    headers, user = await api.user()
    created = await api.create_key(headers, name="laptop")
    assert parse_key(created["key"]) is not None
    assert created["prefix"] == created["key"][:15]
    assert created == {
        "object": "api_key", "id": created["id"], "user_id": user["id"], "name": "laptop",
        "prefix": created["prefix"], "scopes": ["chat", "completions", "embeddings", "models", "responses", "messages",
                                               "moderations", "images", "audio", "rerank"],
        "models": None, "tags": [], "limits": {}, "expires_at": None, "created_at": int(clock.now),
        "last_used_at": None, "revoked_at": None, "previous_key_expires_at": None,
        "capture": False, "cache": None, "key": created["key"],
    }
    shown = await (await api.client.get(f"/api/keys/{created['id']}", headers=headers)).json()
    assert "key" not in shown
    listed = await (await api.client.get("/api/keys", headers=headers)).json()
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    assert "key" not in listed["data"][0]
    assert created["key"] not in str(listed)


async def test_key_secret_has_at_least_32_random_bytes(api):
    headers, _ = await api.user()
    key = (await api.create_key(headers))["key"]
    lookup_id, secret = parse_key(key)
    assert key.startswith("bm-") and len(lookup_id) == 12
    assert len(secret) == 43  # base64url of 32 bytes


async def test_create_with_scopes_models_limits_expiry(api, clock):
    headers, _ = await api.user()
    created = await api.create_key(
        headers, name="narrow", scopes=["embeddings", "chat"], models=["mini", "gpt-4o-mini"],
        limits={"rpm": 10, "monthly_budget_usd": 1.5, "tpm": None}, expires_at=int(clock.now) + 60,
    )
    assert created["scopes"] == ["chat", "embeddings"]
    assert created["models"] == ["gpt-4o-mini"]  # alias resolved, duplicate dropped
    assert created["limits"] == {"rpm": 10, "monthly_budget_usd": 1.5}
    assert created["expires_at"] == int(clock.now) + 60


@pytest.mark.parametrize(
    "body, param, message",
    [
        ({"name": "x", "models": ["gpt-4o"]}, "models[0]",
         "Model 'gpt-4o' is not included in plan 'free'; a key can only be limited to models its plan allows."),
        ({"name": "x", "models": ["gpt-4o-mini", "nope"]}, "models[1]",
         "Unknown model 'nope'; GET /v1/models lists the models you can use."),
        ({"name": "x", "limits": {"rpm": 61}}, "limits.rpm",
         "limits.rpm is 61, above the 60 of plan 'free'; a key's limits can only tighten its plan's."),
        ({"name": "x", "limits": {"monthly_budget_usd": 5.01}}, "limits.monthly_budget_usd",
         "limits.monthly_budget_usd is 5.01, above the 5.0 of plan 'free'; "
         "a key's limits can only tighten its plan's."),
        ({"name": "x", "expires_at": 1_600_000_000}, "expires_at",
         "expires_at must be in the future, in Unix seconds; omit it or send null for a key that does not expire."),
        ({"name": "x", "scopes": []}, "scopes", "Field 'scopes' must list at least 1 item."),
        ({"name": "x", "scopes": ["admin"]}, "scopes[0]",
         'Field \'scopes[0]\' must be one of: "chat", "completions", "embeddings", "models", "responses", '
         '"messages", "moderations", "images", "audio", "rerank".'),
        ({"name": "x", "limits": {"rpm": "10"}}, "limits.rpm", "Field 'limits.rpm' must be an integer or null."),
        ({"name": "x", "limits": {"rpm": 0}}, "limits.rpm", "Field 'limits.rpm' must be at least 1."),
        ({"name": ""}, "name", "Field 'name' must be at least 1 characters long."),
        ({}, "name", "Missing required field 'name'."),
    ],
)
async def test_create_refuses_settings_beyond_the_plan(api, body, param, message):
    headers, _ = await api.user()
    response = await api.client.post("/api/keys", json=body, headers=headers)
    assert response.status == 400
    error = await error_of(response)
    assert (error["param"], error["message"]) == (param, message)


async def test_unlimited_plan_fields_accept_any_tightening(api):
    headers, user = await api.user()
    await api.client.patch(f"/api/admin/users/{user['id']}", json={"plan": "pro"}, headers=ADMIN)
    created = await api.create_key(headers, models=["gpt-4o"], limits={"tpm": 5_000_000, "rpm": 600})
    assert created["limits"] == {"tpm": 5_000_000, "rpm": 600}


@pytest.mark.parametrize("field, value", [
    ("owner", 1), ("id", 5), ("key", "bm-x"), ("revoked_at", None),
    ("created_at", 0), ("last_used_at", 0), ("prefix", "bm-"),
])
async def test_mass_assignment_on_create_and_update(api, field, value):
    headers, _ = await api.user()
    response = await api.client.post("/api/keys", json={"name": "x", field: value}, headers=headers)
    assert response.status == 400
    error = await error_of(response)
    assert (error["param"], error["code"]) == (field, "unknown_parameter")
    key = await api.create_key(headers)
    response = await api.client.patch(f"/api/keys/{key['id']}", json={field: value}, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == field


async def test_a_user_cannot_name_another_owner(api):
    headers, _ = await api.user()
    _, victim = await api.user()
    for field, value in (("user_id", victim["id"]), ("email", victim["email"])):
        response = await api.client.post("/api/keys", json={"name": "x", field: value}, headers=headers)
        assert response.status == 403
        error = await error_of(response)
        assert (error["code"], error["param"]) == ("admin_required", field)
        assert error["message"].startswith("Only administrators can create keys for another user")
    key = await api.create_key(headers)
    response = await api.client.patch(f"/api/keys/{key['id']}", json={"user_id": victim["id"]}, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["code"] == "unknown_parameter"


async def test_admin_key_needs_an_owner_named(api):
    response = await api.client.post("/api/keys", json={"name": "x"}, headers=ADMIN)
    assert response.status == 403
    error = await error_of(response)
    assert error["code"] == "account_required"
    assert "send user_id or email" in error["message"]


async def test_admin_creates_a_key_for_a_user_by_id_or_email(api):
    _, owner = await api.user()
    admin_headers, admin = await api.admin_user()
    for credential in (ADMIN, admin_headers):
        for field in ("user_id", "email"):
            value = owner["id"] if field == "user_id" else owner["email"].upper()
            response = await api.client.post(
                "/api/keys", json={"name": f"by-{field}", field: value, "limits": {"rpm": 7}},
                headers=credential)
            assert response.status == 201, await response.text()
            created = await response.json()
            assert (created["user_id"], created["name"], created["limits"]) == (owner["id"], f"by-{field}", {"rpm": 7})
            principal = await api.authenticate(created["key"])
            assert (principal.user_id, principal.plan) == (owner["id"], "free")


async def test_admin_key_for_a_user_is_held_to_that_users_plan(api):
    _, owner = await api.user()
    response = await api.client.post(
        "/api/keys", json={"name": "x", "user_id": owner["id"], "limits": {"rpm": 61}}, headers=ADMIN)
    assert response.status == 400
    error = await error_of(response)
    assert error["param"] == "limits.rpm"
    assert "above the 60 of plan 'free'" in error["message"]


async def test_admin_key_for_a_missing_user_is_404(api):
    cases = [({"user_id": 999_999}, "user_id", "No user with id 999999"),
             ({"email": "nobody@example.com"}, "email", "No user with e-mail address nobody@example.com"),
             ({"user_id": 1, "email": "x@example.com"}, "email", "Send user_id or email, not both")]
    for extra, param, message in cases:
        response = await api.client.post("/api/keys", json={"name": "x", **extra}, headers=ADMIN)
        assert response.status == (400 if "not both" in message else 404)
        error = await error_of(response)
        assert error["param"] == param
        assert error["message"].startswith(message)


async def test_patch_replaces_fields_and_rechecks_the_plan(api):
    headers, _ = await api.user()
    key = await api.create_key(headers, limits={"rpm": 5})
    response = await api.client.patch(
        f"/api/keys/{key['id']}", json={"name": "renamed", "limits": {"tpm": 100}, "models": ["mini"]},
        headers=headers)
    assert response.status == 200
    body = await response.json()
    assert (body["name"], body["limits"], body["models"]) == ("renamed", {"tpm": 100}, ["gpt-4o-mini"])
    response = await api.client.patch(f"/api/keys/{key['id']}", json={"models": ["gpt-4o"]}, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == "models[0]"
    response = await api.client.patch(f"/api/keys/{key['id']}", json={"models": None}, headers=headers)
    assert (await response.json())["models"] is None


async def test_admin_patch_is_checked_against_the_owners_plan(api):
    admin_headers, admin = await api.admin_user()
    response = await api.client.patch(f"/api/admin/users/{admin['id']}", json={"plan": "pro"}, headers=ADMIN)
    assert response.status == 200
    headers, _ = await api.user()  # on "free"
    key = await api.create_key(headers)
    response = await api.client.patch(f"/api/keys/{key['id']}", json={"limits": {"rpm": 100}},
                                      headers=admin_headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == "limits.rpm"


async def test_delete_revokes(api, clock):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    response = await api.client.delete(f"/api/keys/{key['id']}", headers=headers)
    assert response.status == 200
    assert await response.json() == {"object": "api_key.deleted", "id": key["id"], "deleted": True}
    shown = await (await api.client.get(f"/api/keys/{key['id']}", headers=headers)).json()
    assert shown["revoked_at"] == int(clock.now)
    active = await (await api.client.get("/api/keys?include_revoked=false", headers=headers)).json()
    assert active["data"] == []


async def test_other_users_key_is_404_everywhere(api):
    owner, _ = await api.user()
    other, _ = await api.user()
    key = await api.create_key(owner, name="secret-project")
    for method, path, body in (
        ("GET", f"/api/keys/{key['id']}", None),
        ("PATCH", f"/api/keys/{key['id']}", {"name": "mine now"}),
        ("DELETE", f"/api/keys/{key['id']}", None),
        ("POST", f"/api/keys/{key['id']}/rotate", {}),
    ):
        response = await api.client.request(method, path, json=body, headers=other)
        assert response.status == 404, (method, path)
        text = await response.text()
        assert "secret-project" not in text
        missing = await api.client.request(method, path.replace(str(key["id"]), "999999"), json=body,
                                           headers=other)
        assert (await error_of(missing))["code"] == (await error_of(response))["code"] == "not_found"
    listed = await (await api.client.get("/api/keys", headers=other)).json()
    assert listed["data"] == []
    still = await (await api.client.get(f"/api/keys/{key['id']}", headers=owner)).json()
    assert (still["name"], still["revoked_at"]) == ("secret-project", None)


async def test_non_numeric_key_id_is_404(api):
    headers, _ = await api.user()
    response = await api.client.get("/api/keys/abc", headers=headers)
    assert response.status == 404


async def test_listing_another_users_keys_is_for_admins(api):
    owner, user = await api.user()
    await api.create_key(owner)
    other, _ = await api.user()
    response = await api.client.get(f"/api/keys?user_id={user['id']}", headers=other)
    assert response.status == 403
    response = await api.client.get(f"/api/keys?user_id={user['id']}", headers=ADMIN)
    assert [k["user_id"] for k in (await response.json())["data"]] == [user["id"]]
    response = await api.client.get("/api/keys?user_id=abc", headers=ADMIN)
    assert response.status == 400
    assert (await error_of(response))["param"] == "user_id"


# -- rotation ------------------------------------------------------------------------


async def test_rotate_without_overlap_stops_the_old_key_at_once(api):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    response = await api.client.post(f"/api/keys/{key['id']}/rotate", headers=headers)
    assert response.status == 200
    rotated = await response.json()
    assert rotated["id"] == key["id"]
    assert rotated["key"] != key["key"] and rotated["prefix"] != key["prefix"]
    assert rotated["previous_key_expires_at"] is None
    assert (await api.authenticate(rotated["key"])).key_id == key["id"]
    with pytest.raises(AuthenticationFailed):
        await api.authenticate(key["key"])


async def test_rotate_with_overlap_keeps_the_old_key_until_the_window_ends(api, clock):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    response = await api.client.post(f"/api/keys/{key['id']}/rotate", json={"overlap_seconds": 600},
                                     headers=headers)
    rotated = await response.json()
    assert rotated["previous_key_expires_at"] == int(clock.now) + 600
    clock.advance(599)
    assert (await api.authenticate(key["key"])).key_id == key["id"]
    assert (await api.authenticate(rotated["key"])).key_id == key["id"]
    clock.advance(1)
    with pytest.raises(AuthenticationFailed):
        await api.authenticate(key["key"])
    assert (await api.authenticate(rotated["key"])).key_id == key["id"]


async def test_a_second_rotation_does_not_extend_the_first_overlap(api, clock):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    first = await (await api.client.post(f"/api/keys/{key['id']}/rotate", json={"overlap_seconds": 600},
                                         headers=headers)).json()
    await (await api.client.post(f"/api/keys/{key['id']}/rotate", json={"overlap_seconds": 60},
                                 headers=headers)).json()
    clock.advance(60)
    for old in (key["key"], first["key"]):
        with pytest.raises(AuthenticationFailed):
            await api.authenticate(old)


async def test_rotation_overlap_is_bounded(api, snapshot):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    limit = int(snapshot.auth.max_rotation_overlap)
    response = await api.client.post(f"/api/keys/{key['id']}/rotate", json={"overlap_seconds": limit + 1},
                                     headers=headers)
    assert response.status == 400
    error = await error_of(response)
    assert error["param"] == "overlap_seconds"
    assert error["message"] == f"overlap_seconds may be at most {limit} on this server."


async def test_revoked_key_cannot_be_rotated(api):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.client.delete(f"/api/keys/{key['id']}", headers=headers)
    response = await api.client.post(f"/api/keys/{key['id']}/rotate", headers=headers)
    assert response.status == 409


async def test_last_used_shows_before_the_batch_is_written(api, clock):
    headers, _ = await api.user()
    key = await api.create_key(headers)
    await api.authenticate(key["key"])
    shown = await (await api.client.get(f"/api/keys/{key['id']}", headers=headers)).json()
    assert shown["last_used_at"] == int(clock.now)

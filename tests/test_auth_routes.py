"""/api/auth/*: signup modes, login, sessions, /me, CSRF and the login throttle."""

from __future__ import annotations

import dataclasses
import logging

from proxy.auth.sessions import COOKIE_NAME

from .test_auth_support import ADMIN, PASSWORD, api, bearer, clock, error_of, new_email, snapshot  # noqa: F401


def with_auth(snapshot, **changes):
    return dataclasses.replace(snapshot, auth=dataclasses.replace(snapshot.auth, **changes))


# -- signup -----------------------------------------------------------------------


async def test_signup_creates_user_with_default_plan_then_login_gives_session(api, clock):
    response = await api.client.post(
        "/api/auth/signup", json={"email": "  Ada@Example.COM ", "password": PASSWORD, "name": "Ada"}
    )
    assert response.status == 202
    assert await response.json() == {
        "object": "signup",
        "email": "ada@example.com",
        "message": "Signup received. Log in with POST /api/auth/login using this e-mail "
                   "address and password.",
    }
    assert COOKIE_NAME not in response.cookies
    response = await api.client.post("/api/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "session"
    assert body["token"].startswith("bms_") and len(body["token"]) >= 4 + 43
    assert body["expires_at"] == int(clock.now + 7 * 86400)
    assert body["user"] == {
        "object": "user", "id": body["user"]["id"], "email": "ada@example.com", "name": "Ada",
        "plan": "free", "role": "user", "disabled": False, "created_at": int(clock.now),
    }
    cookie = response.cookies[COOKIE_NAME]
    assert cookie.value == body["token"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert not cookie["secure"]
    assert cookie["path"] == "/"


async def test_secure_cookie_when_configured(api, snapshot):
    api.set_snapshot(with_auth(snapshot, secure_cookies=True))
    email = new_email()
    await api.client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    response = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 200
    assert response.cookies[COOKIE_NAME]["secure"] is True


async def test_signup_of_a_taken_address_answers_like_a_new_one_and_changes_nothing(api, caplog):
    caplog.set_level(logging.INFO, logger="proxy.routes.auth_routes")
    await api.signup("bob@example.com")
    new = await api.client.post("/api/auth/signup", json={"email": "carol@example.com", "password": PASSWORD})
    taken = await api.client.post(
        "/api/auth/signup", json={"email": "BOB@example.com ", "password": "another password"}
    )
    assert (taken.status, new.status) == (202, 202)
    new_body, taken_body = await new.json(), await taken.json()
    assert taken_body == {**new_body, "email": "bob@example.com"}
    assert set(taken.headers) - {"Date"} == set(new.headers) - {"Date"}
    # The existing account keeps its password: the second signup changed nothing.
    response = await api.client.post("/api/auth/login", json={"email": "bob@example.com",
                                                             "password": "another password"})
    assert response.status == 401
    count = await api.db.read(
        lambda conn: conn.execute("SELECT count(*) FROM users WHERE email = 'bob@example.com'").fetchone()[0])
    assert count == 1
    assert "already has an account; nothing changed" in caplog.text


async def test_signup_of_a_taken_address_still_hashes_the_password(api):
    await api.signup("dora@example.com")
    before = api.hasher.hashes
    response = await api.client.post("/api/auth/signup", json={"email": "dora@example.com", "password": PASSWORD})
    assert response.status == 202
    assert api.hasher.hashes == before + 1  # the same work as a new account: no timing oracle


async def test_signup_with_invite_for_a_taken_address_keeps_the_invite(api, snapshot):
    await api.signup("erin@example.com")
    api.set_snapshot(with_auth(snapshot, signup="invite"))
    code = (await (await api.client.post("/api/admin/invites", json={}, headers=ADMIN)).json())["code"]
    response = await api.client.post(
        "/api/auth/signup", json={"email": "erin@example.com", "password": PASSWORD, "invite_code": code})
    assert response.status == 202
    session = await api.signup(invite_code=code)  # still unused
    listed = await (await api.client.get("/api/admin/invites", headers=ADMIN)).json()
    assert listed["data"][0]["used_by"] == session["user"]["id"]


async def test_signup_rejects_bad_email(api):
    response = await api.client.post("/api/auth/signup", json={"email": "not-an-address", "password": PASSWORD})
    assert response.status == 400
    assert (await error_of(response))["param"] == "email"


async def test_password_minimum_length(api):
    response = await api.client.post("/api/auth/signup", json={"email": new_email(), "password": "short"})
    assert response.status == 400
    error = await error_of(response)
    assert error["param"] == "password"
    assert error["message"] == "The password must be at least 10 characters long."


async def test_password_over_72_bytes_is_refused_not_truncated(api):
    # 71 ASCII bytes + "é" (2 bytes) = 73 bytes, only 72 characters.
    password = "a" * 71 + "é"
    response = await api.client.post("/api/auth/signup", json={"email": new_email(), "password": password})
    assert response.status == 400
    error = await error_of(response)
    assert error["param"] == "password"
    assert "73 bytes" in error["message"] and "72 bytes" in error["message"]
    # Exactly 72 bytes is fine, and only the exact password logs in: no truncation anywhere.
    email = new_email()
    await api.signup(email, password="b" * 72)
    response = await api.client.post("/api/auth/login", json={"email": email, "password": "b" * 72 + "c"})
    assert response.status == 400
    assert (await error_of(response))["param"] == "password"


async def test_signup_mass_assignment_is_refused(api):
    for field, value in (("role", "admin"), ("plan", "pro"), ("disabled", False), ("id", 1)):
        response = await api.client.post(
            "/api/auth/signup", json={"email": new_email(), "password": PASSWORD, field: value}
        )
        assert response.status == 400, field
        error = await error_of(response)
        assert error["param"] == field
        assert error["code"] == "unknown_parameter"


async def test_signup_validation_names_the_field(api):
    cases = [
        ({"password": PASSWORD}, "email", "Missing required field 'email'."),
        ({"email": 5, "password": PASSWORD}, "email", "Field 'email' must be a string."),
        ({"email": new_email(), "password": ["x"]}, "password", "Field 'password' must be a string."),
    ]
    for body, param, message in cases:
        response = await api.client.post("/api/auth/signup", json=body)
        assert response.status == 400
        error = await error_of(response)
        assert (error["param"], error["message"]) == (param, message)


async def test_signup_body_must_be_json(api):
    response = await api.client.post("/api/auth/signup", data="email=a@b.co&password=x",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 400
    assert (await error_of(response))["code"] == "unsupported_content_type"
    response = await api.client.post("/api/auth/signup", data="{nope",
                                     headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await error_of(response))["message"] == "The request body is not valid JSON."


async def test_signup_closed(api, snapshot):
    api.set_snapshot(with_auth(snapshot, signup="closed"))
    response = await api.client.post("/api/auth/signup", json={"email": new_email(), "password": PASSWORD})
    assert response.status == 403
    assert (await error_of(response))["code"] == "signup_closed"


async def test_signup_by_invite_is_single_use_and_carries_plan(api, snapshot, clock):
    api.set_snapshot(with_auth(snapshot, signup="invite"))
    response = await api.client.post("/api/auth/signup", json={"email": new_email(), "password": PASSWORD})
    assert response.status == 400
    assert (await error_of(response))["param"] == "invite_code"

    response = await api.client.post("/api/admin/invites", json={"plan": "pro", "note": "for ada"}, headers=ADMIN)
    assert response.status == 201
    invite = await response.json()
    assert invite["code"].startswith("bmi_")
    assert invite["expires_at"] == int(clock.now + 7 * 86400)

    session = await api.signup(invite_code=invite["code"])
    assert session["user"]["plan"] == "pro"

    response = await api.client.post(
        "/api/auth/signup", json={"email": new_email(), "password": PASSWORD, "invite_code": invite["code"]}
    )
    assert response.status == 400
    assert (await error_of(response))["param"] == "invite_code"

    listed = await (await api.client.get("/api/admin/invites", headers=ADMIN)).json()
    assert listed["data"][0]["used_by"] == session["user"]["id"]
    assert "code" not in listed["data"][0]


async def test_expired_invite_is_refused(api, snapshot, clock):
    api.set_snapshot(with_auth(snapshot, signup="invite"))
    response = await api.client.post("/api/admin/invites", json={"expires_in_seconds": 3600}, headers=ADMIN)
    code = (await response.json())["code"]
    clock.advance(3600)
    response = await api.client.post(
        "/api/auth/signup", json={"email": new_email(), "password": PASSWORD, "invite_code": code}
    )
    assert response.status == 400
    assert (await error_of(response))["param"] == "invite_code"


# -- login, logout, sessions ----------------------------------------------------------


async def test_login_returns_a_working_session(api):
    email = new_email()
    await api.signup(email)
    response = await api.client.post("/api/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert response.status == 200
    token = (await response.json())["token"]
    me = await api.client.get("/api/auth/me", headers=bearer(token))
    assert me.status == 200
    assert (await me.json())["email"] == email


async def test_login_wrong_password_and_unknown_account_look_alike(api):
    email = new_email()
    await api.signup(email)
    wrong = await api.client.post("/api/auth/login", json={"email": email, "password": "wrong password"})
    unknown = await api.client.post("/api/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert wrong.status == unknown.status == 401
    assert await error_of(wrong) == await error_of(unknown) == {
        "message": "Incorrect e-mail or password.", "type": "invalid_request_error",
        "param": None, "code": "invalid_credentials",
    }


async def test_session_expires(api, clock, snapshot):
    headers, _ = await api.user()
    clock.advance(snapshot.auth.session_ttl - 1)
    assert (await api.client.get("/api/auth/me", headers=headers)).status == 200
    clock.advance(1)
    response = await api.client.get("/api/auth/me", headers=headers)
    assert response.status == 401
    assert (await error_of(response))["code"] == "invalid_session"


async def test_logout_revokes_only_that_session(api):
    email = new_email()
    first = bearer((await api.signup(email))["token"])
    second = bearer((await (await api.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD})).json())["token"])
    response = await api.client.post("/api/auth/logout", headers=first)
    assert response.status == 200
    assert (await api.client.get("/api/auth/me", headers=first)).status == 401
    assert (await api.client.get("/api/auth/me", headers=second)).status == 200


async def test_cookie_session_and_logout_clears_cookie(api):
    session = await api.signup()
    client = api.client
    me = await client.get("/api/auth/me", cookies={COOKIE_NAME: session["token"]})
    assert me.status == 200
    response = await client.post("/api/auth/logout", json={},
                                 headers={"Origin": str(client.make_url("")).rstrip("/")},
                                 cookies={COOKIE_NAME: session["token"]})
    assert response.status == 200
    assert response.cookies[COOKIE_NAME].value == ""
    assert (await client.get("/api/auth/me", headers=bearer(session["token"]))).status == 401


async def test_disabled_account_cannot_log_in_and_loses_sessions(api):
    email = new_email()
    headers, user = await api.user(email=email)
    response = await api.client.patch(f"/api/admin/users/{user['id']}", json={"disabled": True}, headers=ADMIN)
    assert response.status == 200
    assert (await api.client.get("/api/auth/me", headers=headers)).status == 401
    response = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 403
    assert (await error_of(response))["code"] == "account_disabled"


async def test_login_upgrades_hash_cost(api, snapshot):
    email = new_email()
    await api.signup(email)
    api.set_snapshot(with_auth(snapshot, bcrypt_rounds=5))
    assert (await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).status == 200
    stored = await api.db.read(
        lambda conn: conn.execute("SELECT password_hash FROM users WHERE email = ?", (email,)).fetchone()[0])
    assert stored.startswith("$2b$05$")


# -- throttle ------------------------------------------------------------------------


async def test_login_throttled_per_account(api, clock, snapshot):
    api.set_snapshot(with_auth(snapshot, login_attempts_per_minute=3))
    email = new_email()
    await api.signup(email)
    for _ in range(3):
        response = await api.client.post("/api/auth/login", json={"email": email, "password": "wrong password"})
        assert response.status == 401
    clock.advance(10)
    response = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 429
    assert response.headers["Retry-After"] == "50"
    assert response.headers["retry-after-ms"] == "50000"
    assert (await error_of(response))["code"] == "rate_limit_exceeded"
    clock.advance(50)
    response = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 200


async def test_login_throttled_per_address(api, snapshot):
    api.set_snapshot(with_auth(snapshot, login_attempts_per_minute=3))
    email = new_email()
    await api.signup(email)
    for _ in range(3):
        response = await api.client.post("/api/auth/login", json={"email": new_email(), "password": PASSWORD})
        assert response.status == 401
    response = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 429


# -- /me ------------------------------------------------------------------------------


async def test_me_get_and_patch_name(api):
    headers, user = await api.user()
    response = await api.client.patch("/api/auth/me", json={"name": "  Grace "}, headers=headers)
    assert response.status == 200
    assert (await response.json())["name"] == "Grace"
    me = await (await api.client.get("/api/auth/me", headers=headers)).json()
    assert me == {**user, "name": "Grace"}


async def test_me_patch_cannot_touch_plan_role_or_disabled(api):
    headers, user = await api.user()
    for field, value in (("plan", "pro"), ("role", "admin"), ("disabled", False), ("id", 99)):
        response = await api.client.patch("/api/auth/me", json={field: value}, headers=headers)
        assert response.status == 400, field
        assert (await error_of(response))["param"] == field
    me = await (await api.client.get("/api/auth/me", headers=headers)).json()
    assert (me["plan"], me["role"]) == ("free", "user")


async def test_me_patch_empty_body(api):
    headers, _ = await api.user()
    response = await api.client.patch("/api/auth/me", json={}, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["message"] == "Send at least one field to change."


async def test_email_change_needs_current_password(api):
    headers, _ = await api.user()
    response = await api.client.patch("/api/auth/me", json={"email": "new@example.com"}, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == "current_password"
    response = await api.client.patch(
        "/api/auth/me", json={"email": "new@example.com", "current_password": "not it at all"}, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == "current_password"
    response = await api.client.patch(
        "/api/auth/me", json={"email": "New@Example.com", "current_password": PASSWORD}, headers=headers)
    assert response.status == 200
    assert (await response.json())["email"] == "new@example.com"


async def test_email_change_to_taken_address_conflicts(api):
    taken = new_email()
    await api.signup(taken)
    headers, _ = await api.user()
    response = await api.client.patch(
        "/api/auth/me", json={"email": taken, "current_password": PASSWORD}, headers=headers)
    assert response.status == 409


async def test_password_change_revokes_other_sessions(api):
    email = new_email()
    current = bearer((await api.signup(email))["token"])
    other = bearer((await (await api.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD})).json())["token"])
    new_password = "a brand new passphrase"
    response = await api.client.patch(
        "/api/auth/me", json={"password": new_password, "current_password": PASSWORD}, headers=current)
    assert response.status == 200
    assert (await api.client.get("/api/auth/me", headers=current)).status == 200
    assert (await api.client.get("/api/auth/me", headers=other)).status == 401
    old = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status == 401
    new = await api.client.post("/api/auth/login", json={"email": email, "password": new_password})
    assert new.status == 200


async def test_admin_key_has_no_account_for_me(api):
    response = await api.client.get("/api/auth/me", headers=ADMIN)
    assert response.status == 403
    assert (await error_of(response))["code"] == "account_required"


async def test_unknown_query_parameter_on_me(api):
    headers, _ = await api.user()
    response = await api.client.get("/api/auth/me?plan=pro", headers=headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == "plan"


async def test_api_key_is_not_a_management_credential(api):
    headers, _ = await api.user()
    key = (await api.create_key(headers))["key"]
    response = await api.client.get("/api/auth/me", headers=bearer(key))
    assert response.status == 401
    error = await error_of(response)
    assert key not in error["message"]


# -- CSRF -------------------------------------------------------------------------------


async def test_cookie_write_needs_same_origin(api):
    session = await api.signup()
    cookies = {COOKIE_NAME: session["token"]}
    own_origin = str(api.client.make_url("")).rstrip("/")
    cases = [
        ({"Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({}, 403),
        ({"Origin": own_origin}, 201),
        ({"Sec-Fetch-Site": "same-origin"}, 201),
    ]
    for headers, status in cases:
        response = await api.client.post("/api/keys", json={"name": "x"}, headers=headers, cookies=cookies)
        assert response.status == status, (headers, await response.text())
        if status == 403:
            assert (await error_of(response))["code"] == "csrf_rejected"


async def test_cookie_write_needs_json_content_type(api):
    session = await api.signup()
    response = await api.client.post(
        "/api/keys", data='{"name": "x"}', cookies={COOKIE_NAME: session["token"]},
        headers={"Content-Type": "text/plain", "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status == 400
    assert (await error_of(response))["code"] == "unsupported_content_type"


async def test_cookie_reads_need_no_origin(api):
    session = await api.signup()
    response = await api.client.get("/api/keys", cookies={COOKIE_NAME: session["token"]},
                                    headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status == 200


async def test_cross_site_login_is_refused(api):
    email = new_email()
    await api.signup(email)
    response = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD},
                                     headers={"Origin": "https://evil.example"})
    assert response.status == 403


async def test_bearer_writes_skip_the_origin_check(api):
    headers, _ = await api.user()
    response = await api.client.post("/api/keys", json={"name": "x"},
                                     headers={**headers, "Origin": "https://elsewhere.example"})
    assert response.status == 201



async def test_dead_sessions_are_pruned_and_live_ones_kept(api, clock, snapshot):
    from proxy.auth.sessions import prune_sessions

    email = new_email()
    live = bearer((await api.signup(email))["token"])
    logged_out = bearer((await (await api.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD})).json())["token"])
    await api.client.post("/api/auth/logout", headers=logged_out)
    old_headers, _ = await api.user()
    clock.advance(snapshot.auth.session_ttl / 2)
    live = bearer((await (await api.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD})).json())["token"])
    clock.advance(snapshot.auth.session_ttl / 2)  # the first sessions have now expired
    removed = await api.db.write(lambda conn: prune_sessions(conn, clock()))
    assert removed >= 3  # the revoked one and the expired ones
    assert (await api.client.get("/api/auth/me", headers=live)).status == 200
    assert (await api.client.get("/api/auth/me", headers=old_headers)).status == 401
    remaining = await api.db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
    assert remaining == 1

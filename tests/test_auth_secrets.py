"""A canary password, key and session token never appear in logs, error
bodies or the database file in plain text."""

from __future__ import annotations

import logging

from .db_access import stored_bytes
from .test_auth_support import ADMIN_KEY, api, bearer, clock, snapshot  # noqa: F401

CANARY_PASSWORD = "canary-PASS-7f3a9q"


async def test_canaries_stay_secret(api, snapshot, caplog):
    caplog.set_level(logging.DEBUG)
    client = api.client
    bodies: list[str] = []

    async def call(method, path, **kwargs):
        response = await client.request(method, path, **kwargs)
        assert response.status >= 400, await response.text()
        bodies.append(await response.text())
        return response

    email = "canary@example.com"
    await client.post("/api/auth/signup", json={"email": email, "password": CANARY_PASSWORD})
    login = await client.post("/api/auth/login", json={"email": email, "password": CANARY_PASSWORD})
    session = login.cookies
    token = (await login.json())["token"]
    headers = bearer(token)
    created = await (await client.post("/api/keys", json={"name": "canary"}, headers=headers)).json()
    key = created["key"]
    rotated = await (await client.post(f"/api/keys/{created['id']}/rotate", json={"overlap_seconds": 60},
                                       headers=headers)).json()
    await api.authenticate(key)
    await api.authenticator.flush_last_used()

    # Every way to get an error with a secret in the request.
    await call("POST", "/api/auth/login", json={"email": email, "password": CANARY_PASSWORD + "x"})
    taken = await client.post("/api/auth/signup", json={"email": email, "password": CANARY_PASSWORD})
    assert taken.status == 202  # an address that is taken answers like a new one
    bodies.append(await taken.text())
    await call("POST", "/api/auth/signup", json={"email": "c2@example.com", "password": CANARY_PASSWORD * 5})
    await call("POST", "/api/auth/signup", json={"email": "c3@example.com", "password": CANARY_PASSWORD[:5]})
    await call("PATCH", "/api/auth/me", json={"password": CANARY_PASSWORD, "current_password": "wrong one!"},
               headers=headers)
    await call("GET", "/api/auth/me", headers=bearer(key))
    await call("GET", "/api/auth/me", headers=bearer(token + "x"))
    for bad in (key[:-1] + "x", key + "x", "Bearer " + key):
        try:
            await api.authenticate(bad)
        except Exception as exc:  # noqa: BLE001 — the message is what is checked
            bodies.append(str(exc.body()))
    await call("PATCH", f"/api/keys/{created['id']}", json={"name": key, "owner": key}, headers=headers)
    await call("PATCH", f"/api/keys/{created['id']}", json={"name": key * 3}, headers=headers)
    await call("GET", "/api/admin/users", headers=bearer(ADMIN_KEY + "x"))
    await client.close()  # flushes and closes the database

    secrets = {
        "password": CANARY_PASSWORD,
        "key": key,
        "key secret": key.split("_", 1)[1],
        "rotated key secret": rotated["key"].split("_", 1)[1],
        "session token": token,
        "cookie session token": session["bm_session"].value,
        "admin key": ADMIN_KEY,
    }
    files = stored_bytes(snapshot.database.path)
    assert len(files) > 0
    for name, secret in secrets.items():
        assert secret not in caplog.text, f"{name} in logs"
        assert secret.encode() not in files, f"{name} in the database"
        for body in bodies:
            assert secret not in body, f"{name} in an error body: {body}"

"""Every management route × every kind of caller, with the status each must get."""

from __future__ import annotations

import pytest

from .test_auth_support import ADMIN, api, clock, error_of, snapshot  # noqa: F401

CALLERS = ("anonymous", "owner", "other", "admin", "admin_key")

# route, body, then the status for: anonymous, owner, other user, admin user, admin key.
# {key} is a key of "owner"; {user} is "owner"'s user id.
MATRIX = [
    ("GET /api/auth/me", None, (401, 200, 200, 200, 403)),
    ("PATCH /api/auth/me", {"name": "n"}, (401, 200, 200, 200, 403)),
    ("POST /api/auth/logout", None, (401, 200, 200, 200, 400)),
    ("GET /api/keys", None, (401, 200, 200, 200, 200)),
    ("POST /api/keys", {"name": "x"}, (401, 201, 201, 201, 403)),
    ("GET /api/keys/{key}", None, (401, 200, 404, 200, 200)),
    ("PATCH /api/keys/{key}", {"name": "y"}, (401, 200, 404, 200, 200)),
    ("DELETE /api/keys/{key}", None, (401, 200, 404, 200, 200)),
    ("POST /api/keys/{key}/rotate", {}, (401, 200, 404, 200, 200)),
    ("GET /api/admin/users", None, (401, 403, 403, 200, 200)),
    ("GET /api/admin/users/{user}", None, (401, 403, 403, 200, 200)),
    ("PATCH /api/admin/users/{user}", {"plan": "pro"}, (401, 403, 403, 200, 200)),
    ("GET /api/admin/invites", None, (401, 403, 403, 200, 200)),
    ("POST /api/admin/invites", {}, (401, 403, 403, 201, 201)),
]

CASES = [
    pytest.param(route, body, caller, status, id=f"{route} as {caller}")
    for route, body, statuses in MATRIX
    for caller, status in zip(CALLERS, statuses)
]


@pytest.mark.parametrize("route, body, caller, status", CASES)
async def test_route_by_caller(api, route, body, caller, status):
    owner, owner_user = await api.user()
    other, _ = await api.user()
    admin, _ = await api.admin_user()
    key = await api.create_key(owner, name="owners-key")
    headers = {"anonymous": {}, "owner": owner, "other": other, "admin": admin, "admin_key": ADMIN}[caller]
    method, path = route.split(" ")
    path = path.format(key=key["id"], user=owner_user["id"])
    response = await api.client.request(method, path, json=body, headers=headers)
    assert response.status == status, await response.text()
    if status >= 400:
        error = await error_of(response)
        assert "owners-key" not in error["message"]
        assert key["key"] not in await response.text()

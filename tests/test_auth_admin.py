"""/api/admin/users and /api/admin/invites, and the guard over all of /api/admin/."""

from __future__ import annotations

from aiohttp import web

from .test_auth_support import ADMIN, Api, api, bearer, build_app, clock, error_of, snapshot  # noqa: F401


async def test_list_users_pages_and_filters(api):
    ids = [(await api.user())[1]["id"] for _ in range(5)]
    await api.client.patch(f"/api/admin/users/{ids[1]}", json={"plan": "pro"}, headers=ADMIN)
    page = await (await api.client.get("/api/admin/users?limit=2", headers=ADMIN)).json()
    assert [u["id"] for u in page["data"]] == ids[:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[0], ids[1], True)
    page = await (await api.client.get(f"/api/admin/users?limit=2&after={page['last_id']}", headers=ADMIN)).json()
    assert [u["id"] for u in page["data"]] == ids[2:4]
    last = await (await api.client.get(f"/api/admin/users?after={ids[3]}", headers=ADMIN)).json()
    assert ([u["id"] for u in last["data"]], last["has_more"]) == ([ids[4]], False)
    pro = await (await api.client.get("/api/admin/users?plan=pro", headers=ADMIN)).json()
    assert [u["id"] for u in pro["data"]] == [ids[1]]
    assert all("password_hash" not in u for u in page["data"])


async def test_list_users_query_is_validated(api):
    for query, param in (("limit=0", "limit"), ("limit=x", "limit"), ("role=root", "role"), ("sort=id", "sort")):
        response = await api.client.get(f"/api/admin/users?{query}", headers=ADMIN)
        assert response.status == 400, query
        assert (await error_of(response))["param"] == param
    response = await api.client.get("/api/admin/users?limit=1&limit=2", headers=ADMIN)
    assert response.status == 400


async def test_set_plan_role_disabled(api):
    _, user = await api.user()
    response = await api.client.patch(f"/api/admin/users/{user['id']}",
                                      json={"plan": "pro", "role": "admin", "disabled": True}, headers=ADMIN)
    assert response.status == 200
    body = await response.json()
    assert (body["plan"], body["role"], body["disabled"]) == ("pro", "admin", True)


async def test_unknown_plan_is_refused(api):
    _, user = await api.user()
    response = await api.client.patch(f"/api/admin/users/{user['id']}", json={"plan": "gold"}, headers=ADMIN)
    assert response.status == 400
    error = await error_of(response)
    assert (error["param"], error["message"]) == ("plan", "Unknown plan 'gold'; plans: free, pro.")


async def test_admin_patch_fields_are_limited(api):
    _, user = await api.user()
    for body, param in (({"email": "x@example.com"}, "email"), ({"password_hash": "x"}, "password_hash"),
                        ({"role": "root"}, "role"), ({"disabled": "yes"}, "disabled")):
        response = await api.client.patch(f"/api/admin/users/{user['id']}", json=body, headers=ADMIN)
        assert response.status == 400, body
        assert (await error_of(response))["param"] == param


async def test_unknown_user_is_404(api):
    response = await api.client.patch("/api/admin/users/9999", json={"plan": "pro"}, headers=ADMIN)
    assert response.status == 404
    assert (await api.client.get("/api/admin/users/nope", headers=ADMIN)).status == 404


async def test_admin_cannot_lock_themselves_out(api):
    headers, admin = await api.admin_user()
    for body in ({"role": "user"}, {"disabled": True}):
        response = await api.client.patch(f"/api/admin/users/{admin['id']}", json=body, headers=headers)
        assert response.status == 409
    response = await api.client.patch(f"/api/admin/users/{admin['id']}", json={"plan": "pro"}, headers=headers)
    assert response.status == 200


async def test_demoted_admin_loses_admin_routes_at_once(api):
    headers, admin = await api.admin_user()
    assert (await api.client.get("/api/admin/users", headers=headers)).status == 200
    await api.client.patch(f"/api/admin/users/{admin['id']}", json={"role": "user"}, headers=ADMIN)
    assert (await api.client.get("/api/admin/users", headers=headers)).status == 403


async def test_invite_plan_must_exist(api):
    response = await api.client.post("/api/admin/invites", json={"plan": "gold"}, headers=ADMIN)
    assert response.status == 400
    assert (await error_of(response))["param"] == "plan"


async def test_guard_covers_admin_routes_of_other_features(aiohttp_client, snapshot, clock):
    app = build_app(snapshot, clock)

    async def probe(request):
        return web.json_response({"ok": True})

    app.router.add_get("/api/admin/probe", probe)
    api = Api(await aiohttp_client(app))
    headers, _ = await api.user()
    assert (await api.client.get("/api/admin/probe")).status == 401
    assert (await api.client.get("/api/admin/probe", headers=headers)).status == 403
    assert (await api.client.get("/api/admin/probe", headers=bearer("not-the-admin-key"))).status == 401
    assert (await api.client.get("/api/admin/probe", headers=ADMIN)).status == 200

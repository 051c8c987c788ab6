"""/api/admin/users and /api/admin/invites: accounts as an administrator sees them."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import STORE
from ..appkeys import AUTHENTICATOR
from ..auth.management import now_of, reply, require_user, snapshot_of
from ..auth.sessions import revoke_user_sessions
from ..auth.users import (
    check_plan_name,
    insert_invite,
    list_invites,
    list_users,
    new_invite_code,
    update_user,
    user_by_id,
)
from ..errors import Conflict, NotFound
from ..validation import read_body, read_query

INVITE_TTL = 7 * 86400


def setup(app: web.Application) -> None:
    app.router.add_get("/api/admin/users", list_route)
    app.router.add_get("/api/admin/users/{id}", get_route)
    app.router.add_patch("/api/admin/users/{id}", update_route)
    app.router.add_get("/api/admin/invites", list_invites_route)
    app.router.add_post("/api/admin/invites", create_invite_route)


def _user_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound(f"No user with id {raw[:20]}.")
    return int(raw)


async def list_route(request: web.Request) -> web.Response:
    query = read_query(request, "admin_users_query")
    after, limit = query.pop("after", 0), query.pop("limit", 100)
    found = await request.app[STORE].read(
        lambda conn: list_users(conn, after=after, limit=limit + 1, filters=query)
    )
    page = found[:limit]
    return reply({
        "object": "list",
        "data": [user.public() for user in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": len(found) > limit,
    })


async def get_route(request: web.Request) -> web.Response:
    read_query(request, "empty")
    user_id = _user_id(request)
    user = await request.app[STORE].read(lambda conn: user_by_id(conn, user_id))
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    return reply(user.public())


async def update_route(request: web.Request) -> web.Response:
    caller = await require_user(request)  # an admin: app.py's gate let it in
    body = await read_body(request, "admin_user_update")
    user_id = _user_id(request)
    if "plan" in body:
        check_plan_name(snapshot_of(request), body["plan"])
    if user_id == caller.user_id and (body.get("role") == "user" or body.get("disabled")):
        raise Conflict(
            "You cannot remove your own admin role or disable yourself; ask another administrator.",
        )
    now = now_of(request)

    def apply(conn):
        user = update_user(conn, user_id, dict(body), now)
        if body.get("disabled"):
            revoke_user_sessions(conn, user_id, now)
        return user

    user = await request.app[STORE].write(apply)
    request.app[AUTHENTICATOR].forget_user(user_id)
    return reply(user.public())


async def list_invites_route(request: web.Request) -> web.Response:
    read_query(request, "empty")
    found = await request.app[STORE].read(list_invites)
    return reply({"object": "list", "data": found, "has_more": False})


async def create_invite_route(request: web.Request) -> web.Response:
    caller = await require_user(request)  # an admin: app.py's gate let it in
    body = await read_body(request, "invite_create")
    plan = body.get("plan")
    if plan is not None:
        check_plan_name(snapshot_of(request), plan)
    now = now_of(request)
    code = new_invite_code()
    invite = await request.app[STORE].write(
        lambda conn: insert_invite(
            conn, code=code, plan=plan, note=body.get("note", ""), created_by=caller.user_id,
            now=now, expires_at=now + body.get("expires_in_seconds", INVITE_TTL),
        )
    )
    return reply({**invite, "code": code}, status=201)

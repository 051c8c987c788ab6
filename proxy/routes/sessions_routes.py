"""/api/auth/sessions: the caller's own login sessions, and logging out everywhere."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import STORE
from ..auth.management import now_of, reply, require_account
from ..auth.sessions import COOKIE_NAME, revoke_user_sessions
from ..validation import read_body, read_query


def setup(app: web.Application) -> None:
    app.router.add_get("/api/auth/sessions", list_route)
    app.router.add_delete("/api/auth/sessions", revoke_all_route)


def _active(conn, user_id: int, now: float) -> list[dict]:
    rows = conn.execute(
        "SELECT id, created_at, expires_at FROM sessions "
        "WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY id DESC LIMIT 100",
        (user_id, now),
    )
    return [{"object": "session", "id": r[0], "created_at": int(r[1]), "expires_at": int(r[2])}
            for r in rows]


async def list_route(request: web.Request) -> web.Response:
    caller = await require_account(request)
    read_query(request, "empty")
    now = now_of(request)
    found = await request.app[STORE].read(lambda conn: _active(conn, caller.user.id, now))
    for session in found:
        session["current"] = session["id"] == caller.session_id
    return reply({"object": "list", "data": found, "has_more": False})


async def revoke_all_route(request: web.Request) -> web.Response:
    """Ends every session of the account, this one included."""
    caller = await require_account(request)
    await read_body(request, "empty")
    now = now_of(request)
    count = await request.app[STORE].write(lambda conn: revoke_user_sessions(conn, caller.user.id, now))
    response = reply({"object": "list", "revoked": count})
    response.del_cookie(COOKIE_NAME, path="/")
    return response

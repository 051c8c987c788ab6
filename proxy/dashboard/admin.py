"""/dashboard/admin: servers with live health, users, and the running config."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..auth.management import Caller, snapshot_of
from ..routes import admin_routes, admin_users
from . import api
from .render import page, render

USERS_PER_PAGE = 50
USER_FILTERS = ("email", "plan", "role", "after")


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard/admin", page(admin_page, admin=True))


async def admin_page(request: web.Request, caller: Caller) -> web.Response:
    servers = await api.get(request, admin_routes.list_servers, "/api/admin/servers")
    health = await api.get(request, admin_routes.get_health, "/api/admin/health")
    config = await api.get(request, admin_routes.get_config, "/api/admin/config")
    filters = api.clean(request.query, USER_FILTERS)
    users = await api.get(request, admin_users.list_route, "/api/admin/users",
                          {**filters, "limit": USERS_PER_PAGE})
    live = {row["name"]: row for row in health["data"]}
    rows: list[dict[str, Any]] = []
    for server in servers["data"]:
        rows.append({**server, "health": live.get(server["name"], {})})
    more = None
    if users["has_more"]:
        more = {**{k: v for k, v in filters.items() if k != "after"}, "after": users["last_id"]}
    return render(request, "admin.html", caller=caller, title="Admin", servers=rows,
                  events=list(reversed(health["events"]))[:20], config=config,
                  users=users["data"], more_users=more, user_filters=filters,
                  plans=sorted(snapshot_of(request).plans))

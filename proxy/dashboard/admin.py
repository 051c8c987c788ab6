"""/dashboard/admin: servers with live health, users, the running config, every account's
invoices, and the deliveries of the system (YAML) webhook endpoints."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..auth.management import Caller, snapshot_of
from ..billing import routes as billing_routes
from ..routes import admin_routes, admin_users
from . import api, webhooks
from .render import page, render

USERS_PER_PAGE = 50
USER_FILTERS = ("email", "plan", "role", "after")
INVOICES_PER_PAGE = 50
INVOICE_FILTERS = ("month", "status", "account_id")


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard/admin", page(admin_page, admin=True))


async def admin_page(request: web.Request, caller: Caller) -> web.Response:
    servers = await api.get(request, admin_routes.list_servers, "/api/admin/servers")
    health = await api.get(request, admin_routes.get_health, "/api/admin/health")
    config = await api.get(request, admin_routes.get_config, "/api/admin/config")
    filters = api.clean(request.query, USER_FILTERS)
    users = await api.get(request, admin_users.list_route, "/api/admin/users",
                          {**filters, "limit": USERS_PER_PAGE})
    invoice_filters = api.clean(request.query, INVOICE_FILTERS)
    invoices = await api.get(request, billing_routes.admin_invoices, "/api/admin/invoices",
                             {**invoice_filters, "before": request.query.get("invoices_before"),
                              "limit": INVOICES_PER_PAGE})
    older_invoices = None
    if invoices["has_more"]:
        older_invoices = {**invoice_filters, "invoices_before": invoices["data"][-1]["id"]}
    live = {row["name"]: row for row in health["data"]}
    rows: list[dict[str, Any]] = []
    for server in servers["data"]:
        rows.append({**server, "health": live.get(server["name"], {})})
    more = None
    if users["has_more"]:
        more = {**{k: v for k, v in filters.items() if k != "after"}, "after": users["last_id"]}
    return render(request, "admin.html", caller=caller, title="Admin", servers=rows, regions=health["regions"],
                  events=list(reversed(health["events"]))[:20], config=config,
                  users=users["data"], more_users=more, user_filters=filters,
                  plans=sorted(snapshot_of(request).plans),
                  invoices=invoices["data"], older_invoices=older_invoices, invoice_filters=invoice_filters,
                  system_webhooks=await webhooks.system_endpoints(request))

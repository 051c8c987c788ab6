"""Webhook endpoints on the dashboard: the account's list (settings), one endpoint's
deliveries with their attempts, and the system (YAML) endpoints on the admin page."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..auth.management import Caller
from ..webhooks import routes as webhooks_routes
from ..webhooks.outbox import ACCOUNT_EVENTS
from . import api
from .render import page, render

# "*" first: what most accounts want, and what the form selects to start with.
EVENT_CHOICES = ("*", *sorted(ACCOUNT_EVENTS))
DELIVERIES_PER_PAGE = 50
# The admin page shows this many recent deliveries per system endpoint; the endpoint's page has the rest.
SYSTEM_DELIVERIES_SHOWN = 10


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard/settings/webhooks/{id}", page(endpoint_page))


async def account_endpoints(request: web.Request, caller: Caller) -> list[dict[str, Any]]:
    # The account's own, also for an administrator (GET /api/webhooks would list every account's).
    found = await api.get(request, webhooks_routes.list_route, "/api/webhooks", {"user_id": caller.user.id})
    return found["data"]


async def system_endpoints(request: web.Request) -> list[dict[str, Any]]:
    """The YAML's endpoints, each with its latest deliveries: the config bounds how many there are."""
    found = await api.get(request, webhooks_routes.list_route, "/api/webhooks")
    out = []
    for endpoint in found["data"]:
        if endpoint["source"] != "config":
            continue
        deliveries = await api.get(request, webhooks_routes.deliveries_route,
                                   f"/api/webhooks/{endpoint['id']}/deliveries",
                                   {"limit": SYSTEM_DELIVERIES_SHOWN})
        out.append({**endpoint, "deliveries": deliveries["data"], "more": deliveries["has_more"]})
    return out


async def endpoint_page(request: web.Request, caller: Caller) -> web.Response:
    path = f"/api/webhooks/{request.match_info['id']}"
    endpoint = await api.get(request, webhooks_routes.get_route, path)
    query = api.clean(request.query, ("before", "state"))
    deliveries = await api.get(request, webhooks_routes.deliveries_route, path + "/deliveries",
                               {**query, "limit": DELIVERIES_PER_PAGE})
    older = None
    if deliveries["has_more"]:
        older = {**query, "before": deliveries["data"][-1]["id"]}
    return render(request, "webhook.html", caller=caller, title=f"Webhook {endpoint['name']}",
                  endpoint=endpoint, deliveries=deliveries["data"], older=older, state=query.get("state"))

"""The web dashboard at /dashboard: server-rendered pages over the management API.

Each page is a view of the JSON API tenants and the CLI use: its handler calls
the API's own route handlers in-process (see api.py), so a page shows, accepts
and refuses exactly what the API does. Writes happen in the browser as JSON
fetches to the API, which is what lets them pass its CSRF check.
"""

from __future__ import annotations

from aiohttp import web

from ..routes import sessions_routes
from . import admin, export, pages, render, webhooks


def setup(app: web.Application) -> None:
    render.setup(app)
    # The account-session API the settings page needs ("log out everywhere").
    sessions_routes.setup(app)
    pages.setup(app)
    admin.setup(app)
    webhooks.setup(app)
    export.setup(app)
    render.setup_fallback(app)

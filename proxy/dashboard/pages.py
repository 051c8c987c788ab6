"""The tenant's pages: log in, sign up, overview, API keys, usage, logs, billing, settings."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from ..appkeys import STORE
from ..auth.management import Caller, identify, now_of, snapshot_of
from ..capture.reads import captures_of
from ..auth.users import plan_for
from ..errors import AuthenticationFailed
from ..billing import routes as billing_routes
from ..routes import auth_routes, keys_routes, sessions_routes, usage_routes
from . import api, billing, webhooks
from .columns import LOG_HEADERS, STAT_HEADERS, key_label, log_cells, stat_cells
from .render import page, public, render, secure

RANGES = (7, 30, 90)
LOG_FILTERS = ("model", "key_id", "status", "from", "to", "cursor", "limit")
STAT_FILTERS = ("from", "to", "key_id")


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard/login", login_page)
    app.router.add_post("/dashboard/login", no_script)
    app.router.add_get("/dashboard/signup", signup_page)
    app.router.add_post("/dashboard/signup", no_script)
    app.router.add_get("/dashboard", page(overview))
    app.router.add_get("/dashboard/", page(overview))
    app.router.add_get("/dashboard/api-keys", page(keys_page))
    app.router.add_get("/dashboard/usage", page(usage_page))
    app.router.add_get("/dashboard/logs", page(logs_page))
    app.router.add_get("/dashboard/billing", page(billing_page))
    app.router.add_get("/dashboard/billing/invoices/{id}", page(invoice_page))
    app.router.add_get("/dashboard/settings", page(settings_page))


# -- signed out ----------------------------------------------------------------------


def _next_page(request: web.Request) -> str:
    target = request.query.get("next", "")
    # Only our own pages: "//evil.example" or "https://…" would make this an open redirect.
    if target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"


async def _signed_in(request: web.Request) -> Caller | None:
    try:
        caller = await identify(request)
    except AuthenticationFailed:
        return None
    return caller if caller is not None and caller.user is not None else None


@public
async def login_page(request: web.Request) -> web.Response:
    if await _signed_in(request):
        return web.Response(status=303, headers={"Location": _next_page(request)})
    return render(request, "login.html", title="Log in", next_page=_next_page(request),
                  signup=snapshot_of(request).auth.signup)


@public
async def signup_page(request: web.Request) -> web.Response:
    if await _signed_in(request):
        return web.Response(status=303, headers={"Location": "/dashboard"})
    return render(request, "signup.html", title="Sign up", mode=snapshot_of(request).auth.signup,
                  ref=request.query.get("ref", "")[:64],
                  invite=request.query.get("invite", "")[:200],
                  min_length=snapshot_of(request).auth.password_min_length)


async def no_script(request: web.Request) -> web.Response:
    """A form posted without JavaScript: say what to do rather than fail oddly."""
    return secure(render(request, "error.html", status=400, title="JavaScript is needed",
                         message="Logging in and signing up run in your browser's JavaScript; "
                                 "turn it on for this site and try again."))


# -- overview -------------------------------------------------------------------------


def _today(request: web.Request) -> date:
    return datetime.fromtimestamp(now_of(request), timezone.utc).date()


def by_day(rows: list[dict[str, Any]], first: str, last: str) -> list[dict[str, Any]]:
    """One row per day of the range, zeros where nothing was used, so the
    chart and the table show quiet days instead of skipping them."""
    found = {row["day"]: row for row in rows}
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    out = []
    while start <= end:
        day = start.isoformat()
        out.append(found.get(day) or {"day": day, "requests": 0, "errors": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0, "total_tokens": 0, "cost_usd": 0.0,
                                      "latency_ms_p95": None})
        start += timedelta(days=1)
    return out


async def _key_names(request: web.Request) -> tuple[list[dict[str, Any]], dict[int, str]]:
    keys = (await api.get(request, keys_routes.list_route, "/api/keys"))["data"]
    return keys, {key["id"]: key["name"] for key in keys}


async def overview(request: web.Request, caller: Caller) -> web.Response:
    summary = await billing.usage_against_plan(request, caller)
    today = _today(request)
    first = today - timedelta(days=29)
    daily = await api.get(request, usage_routes.usage_stats, "/api/usage/stats",
                          {"from": first.isoformat(), "to": today.isoformat(), "group_by": "day",
                           "user_id": caller.user.id})
    recent = await api.get(request, usage_routes.usage_logs, "/api/usage/logs",
                           {"limit": 10, "user_id": caller.user.id})
    _, names = await _key_names(request)
    return render(request, "overview.html", caller=caller, title="Overview", summary=summary,
                  days=by_day(daily["data"], daily["from"], daily["to"]), daily=daily,
                  recent=[log_cells(entry, names) for entry in recent["data"]],
                  log_headers=LOG_HEADERS)


# -- API keys ---------------------------------------------------------------------------


async def keys_page(request: web.Request, caller: Caller) -> web.Response:
    keys, _ = await _key_names(request)
    snapshot = snapshot_of(request)
    plan = plan_for(snapshot, caller.user.plan)
    models = sorted(name for name in snapshot.models if plan.allows_model(name))
    now = now_of(request)
    for key in keys:
        expired = key["expires_at"] is not None and key["expires_at"] <= now
        key["status"] = "revoked" if key["revoked_at"] else "expired" if expired else "active"
    return render(request, "keys.html", caller=caller, title="API keys", keys=keys, models=models,
                  max_overlap=int(snapshot.auth.max_rotation_overlap))


# -- usage --------------------------------------------------------------------------------


async def usage_page(request: web.Request, caller: Caller) -> web.Response:
    filters = api.clean(request.query, STAT_FILTERS)
    if "days" in request.query and "from" not in filters:
        days = int(request.query["days"]) if request.query["days"] in {str(d) for d in RANGES} else 30
        filters["from"] = (_today(request) - timedelta(days=days - 1)).isoformat()
        filters.pop("to", None)
    per_day = await api.get(request, usage_routes.usage_stats, "/api/usage/stats",
                           {**filters, "group_by": "day"})
    by_model = await api.get(request, usage_routes.usage_stats, "/api/usage/stats",
                             {**filters, "group_by": "model"})
    by_key = await api.get(request, usage_routes.usage_stats, "/api/usage/stats",
                           {**filters, "group_by": "key"})
    keys, names = await _key_names(request)
    for row in by_key["data"]:
        row["label"] = key_label(row["key_id"], names)
    return render(request, "usage.html", caller=caller, title="Usage", filters=filters,
                  days=by_day(per_day["data"], per_day["from"], per_day["to"]), range=per_day,
                  by_model=by_model["data"], by_key=by_key["data"], total=per_day["total"],
                  keys=keys, stat_headers=STAT_HEADERS, stat_cells=stat_cells, ranges=RANGES)


# -- logs ----------------------------------------------------------------------------------


async def logs_page(request: web.Request, caller: Caller) -> web.Response:
    filters = api.clean(request.query, LOG_FILTERS)
    found = await api.get(request, usage_routes.usage_logs, "/api/usage/logs", filters)
    keys, names = await _key_names(request)
    rows = [{"cells": log_cells(entry, names), "entry": entry} for entry in found["data"]]
    # The page's captured bodies in one read by primary key (the API twin of each is
    # GET /api/usage/logs/{id}); the rows are already limited to what the caller may see.
    ids = [entry["id"] for entry in found["data"]]
    captured = await request.app[STORE].read(lambda conn: captures_of(conn, ids))
    older = None
    if found["has_more"]:
        older = {**{k: v for k, v in filters.items() if k != "cursor"}, "cursor": found["next_cursor"]}
    models = sorted(snapshot_of(request).models)
    return render(request, "logs.html", caller=caller, title="Logs", rows=rows, filters=filters,
                  headers=LOG_HEADERS, older=older, keys=keys, models=models, captured=captured,
                  export={k: v for k, v in filters.items() if k not in ("cursor", "limit")})


# -- billing and settings -------------------------------------------------------------------


async def billing_page(request: web.Request, caller: Caller) -> web.Response:
    return render(request, "billing.html", caller=caller, title="Billing",
                  billing=await billing.billing_view(request, caller, request.query.get("before")))


async def invoice_page(request: web.Request, caller: Caller) -> web.Response:
    invoice = await api.get(request, billing_routes.get_one_invoice,
                            f"/api/billing/invoices/{request.match_info['id']}")
    return render(request, "invoice.html", caller=caller, title=f"Invoice {invoice['number'] or invoice['month']}",
                  invoice=invoice)


async def settings_page(request: web.Request, caller: Caller) -> web.Response:
    me = await api.get(request, auth_routes.me, "/api/auth/me")
    sessions = await api.get(request, sessions_routes.list_route, "/api/auth/sessions")
    plan = await api.get(request, billing_routes.get_plan, "/api/billing/plan")
    return render(request, "settings.html", caller=caller, title="Settings", me=me,
                  sessions=sessions["data"], referral=_referral(request, plan["referral"]),
                  webhooks=await webhooks.account_endpoints(request, caller),
                  event_choices=webhooks.EVENT_CHOICES,
                  min_length=snapshot_of(request).auth.password_min_length)


def _referral(request: web.Request, referral: dict[str, Any]) -> dict[str, Any] | None:
    code = referral.get("code")
    if not code:
        return None
    # The gateway's public address when it sits behind a proxy; else the address this page came from.
    origin = (snapshot_of(request).server.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    return {**referral, "link": f"{origin}/dashboard/signup?ref={code}"}

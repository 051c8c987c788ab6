"""What the billing page shows, in one place: the API's billing answers and usage against the plan.

`billing_view` is the billing page's one data source: GET /api/billing/plan (the
plan, its period and the estimate of the next invoice), /api/billing/plans (what
the account may buy), /api/billing/invoices and /api/billing/payments, plus
`usage_against_plan`, which the overview shows too.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from ..auth.management import Caller, now_of, snapshot_of
from ..auth.users import plan_for
from ..billing import routes as billing_routes
from ..routes.usage_routes import usage_stats
from . import api

INVOICES_PER_PAGE = 24
PAYMENTS_SHOWN = 50

_ZERO = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
         "total_tokens": 0, "cost_usd": 0.0}


def _month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


async def usage_against_plan(request: web.Request, caller: Caller) -> dict[str, Any]:
    """Today's and this month's usage against the plan's quotas and budget."""
    plan = plan_for(snapshot_of(request), caller.user.plan)
    today = datetime.fromtimestamp(now_of(request), timezone.utc).date()
    first = today.replace(day=1)
    stats = await api.get(request, usage_stats, "/api/usage/stats",
                          {"from": first.isoformat(), "to": today.isoformat(), "group_by": "day",
                           # The account's own, also for an administrator (who would see everyone's).
                           "user_id": caller.user.id})
    day_row = next((row for row in stats["data"] if row["day"] == today.isoformat()), _ZERO)
    month = stats["total"]
    quotas = [
        ("Requests today", plan.requests_per_day, day_row["requests"], False),
        ("Tokens today", plan.tokens_per_day, day_row["total_tokens"], False),
        ("Requests this month", plan.requests_per_month, month["requests"], False),
        ("Tokens this month", plan.tokens_per_month, month["total_tokens"], False),
        ("Budget this month", plan.monthly_budget_usd, month["cost_usd"], True),
    ]
    return {
        "plan": plan,
        "period": {"start": first.isoformat(), "end": _month_end(first).isoformat()},
        "today": {**_ZERO, **day_row},
        "month": month,
        "quotas": [
            {"name": name, "limit": limit, "used": used, "money": money,
             "left": None if limit is None else max(0, limit - used),
             "percent": 0 if not limit else min(100, round(100 * used / limit))}
            for name, limit, used, money in quotas
        ],
        "rates": [("Requests per minute", plan.rpm), ("Tokens per minute", plan.tpm),
                  ("Concurrent requests", plan.max_concurrent)],
    }


def _day(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).date().isoformat()


async def billing_view(request: web.Request, caller: Caller,
                       before: str | None = None) -> dict[str, Any]:
    overview = await api.get(request, billing_routes.get_plan, "/api/billing/plan")
    plans = await api.get(request, billing_routes.get_plans, "/api/billing/plans")
    invoices = await api.get(request, billing_routes.get_invoices, "/api/billing/invoices",
                             {"limit": INVOICES_PER_PAGE, "before": before})
    payments = await api.get(request, billing_routes.get_payments, "/api/billing/payments",
                             {"limit": PAYMENTS_SHOWN})
    period = overview["period"]
    current = overview["plan"]["name"]
    return {
        "overview": overview,
        # Subscription periods are instants, calendar months are dates: both read as days.
        "period": {"source": period["source"],
                   "start": _day(period["start"]), "end": _day(period["end"] - 1)},  # the end is exclusive
        "usage": await usage_against_plan(request, caller),
        "for_sale": [p for p in plans["data"] if p["purchasable"] and p["name"] != current],
        "invoices": invoices["data"],
        "older_invoices": invoices["data"][-1]["id"] if invoices["has_more"] else None,
        "payments": payments["data"],
    }

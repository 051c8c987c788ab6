"""What the billing page shows, in one place: the plan, its period, usage against it.

Invoices, payments and checkout are None until billing lands; the page shows
those sections as soon as this function fills them in.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from ..auth.management import Caller, now_of, snapshot_of
from ..auth.users import plan_for
from ..routes.usage_routes import usage_stats
from . import api

_ZERO = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
         "total_tokens": 0, "cost_usd": 0.0}


def _month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


async def plan_usage(request: web.Request, caller: Caller) -> dict[str, Any]:
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
        "invoices": None,
        "payments": None,
        "checkout_url": None,
    }

"""The tenant's billing at a glance: plan, period, usage against it, the estimate of
the next invoice. `billing_overview(app, user_id)` is what GET /api/billing/plan
answers and what the dashboard's billing page renders."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import CLOCK, CONFIG, STORE
from ..auth.users import plan_for
from ..config.snapshot import PlanConfig, Snapshot
from ..errors import NotFound
from .invoices import bill_account, bill_view, load_month
from .money import minor_to_text, nano_to_minor, nano_to_text
from .plans import Month
from .referral import referral_summary


def plan_view(plan: PlanConfig, snapshot: Snapshot) -> dict[str, Any]:
    currency = snapshot.billing.currency
    price = plan.price
    creem_on = snapshot.billing.creem.api_key is not None
    return {
        "object": "plan", "name": plan.name, "currency": currency,
        "monthly_fee": minor_to_text(nano_to_minor(price.monthly_fee_nano, currency), currency),
        "included_tokens": price.included_tokens,
        "overage": {model: {"input_per_1m": nano_to_text(p.input_nano), "output_per_1m": nano_to_text(p.output_nano)}
                    for model, p in price.overage},
        "purchasable": bool(creem_on and price.creem_product_id and price.monthly_fee_nano),
        "limits": {"rpm": plan.rpm, "tpm": plan.tpm, "requests_per_day": plan.requests_per_day,
                   "tokens_per_day": plan.tokens_per_day, "requests_per_month": plan.requests_per_month,
                   "tokens_per_month": plan.tokens_per_month, "monthly_budget_usd": plan.monthly_budget_usd,
                   "max_concurrent": plan.max_concurrent},
        "models": list(plan.models),
    }


async def billing_overview(app: web.Application, user_id: int) -> dict[str, Any]:
    snapshot: Snapshot = app[CONFIG].current
    now = app[CLOCK]()
    month = Month.of(now)

    def read(conn) -> dict[str, Any]:
        data = load_month(conn, month, account_id=user_id)
        account = next((a for a in data.accounts if a[0] == user_id), None)
        if account is None:
            raise NotFound("No such account.")
        bill = bill_account(snapshot, data, account)
        sub = conn.execute("SELECT id, status, period_start, period_end FROM billing_subscriptions "
                           "WHERE account_id = ? ORDER BY updated_at DESC, id DESC LIMIT 1", (user_id,)).fetchone()
        return {"account": account, "bill": bill, "data": data, "sub": sub,
                "referral": referral_summary(conn, user_id)}

    got = await app[STORE].read(read)
    account, bill, sub = got["account"], got["bill"], got["sub"]
    plan = plan_for(snapshot, account[1])
    requests = sum(u[1] for u in got["data"].usage.get(user_id, []))
    tokens = sum(u[2] for u in got["data"].usage.get(user_id, []))
    cost = sum(u[3] for u in got["data"].usage.get(user_id, []))
    if sub is not None and sub["period_end"] is not None and sub["status"] not in ("refunded", "expired"):
        period = {"source": "subscription", "start": sub["period_start"], "end": sub["period_end"]}
    else:
        period = {"source": "calendar_month", "start": month.start, "end": month.end}
    return {
        "object": "billing.plan",
        "account_id": user_id,
        "plan": plan_view(plan, snapshot),
        "period": period,
        "subscription": None if sub is None else {"id": sub["id"], "status": sub["status"],
                                                  "period_start": sub["period_start"],
                                                  "period_end": sub["period_end"]},
        "usage": {"month": str(month), "requests": requests, "tokens": tokens, "cost_usd": nano_to_text(cost),
                  "included_tokens": bill.included_tokens,
                  "included_tokens_left": max(0, bill.included_tokens - tokens),
                  "tokens_per_month": plan.tokens_per_month, "requests_per_month": plan.requests_per_month,
                  "monthly_budget_usd": plan.monthly_budget_usd},
        "estimate": bill_view(bill, month, snapshot.billing.currency),
        "referral": got["referral"],
    }

"""Billing: priced plans, exact monthly invoices, Creem payments, referral codes.

    money.py       integer nano-dollars; the one half-up rounding per invoice line
    tables.py      schema (migration set "bluesminds.billing"): plan changes, invoices,
                   orders, payments, subscriptions, referral codes
    plans.py       plan history: what an account was on, day by day, for proration
    invoices.py    building, drafting and finalizing a month's invoices (numbered in one transaction)
    overview.py    billing_overview(app, user_id): the tenant's plan, period, usage and estimate
    creem.py       Creem's checkout API client and the webhook event handler
    fake_creem.py  a Creem stand-in on 127.0.0.1 for tests and the demo
    referral.py    referral codes and the once-per-account reward
    scheduler.py   the in-process job that generates and finalizes invoices
    routes.py      /api/billing/* and /api/admin/invoices*

Nothing is imported here eagerly: proxy/config imports money.py while loading.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "billing_overview":
        from .overview import billing_overview
        return billing_overview
    raise AttributeError(name)

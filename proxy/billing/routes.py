"""/api/billing/* and /api/admin/invoices*: thin handlers over the billing modules.

A tenant sees only their own invoices and payments (another account's invoice
answers 404, exactly as an unknown id); an admin sees all. /api/admin/* is
gated by the app's one admin check (proxy/app.py).
"""

from __future__ import annotations

import logging
import secrets
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from .. import bodies
from ..appkeys import CREEM_HTTP, STORE
from ..auth.management import now_of, reply, require_account, require_user, snapshot_of
from ..errors import InvalidRequest, NotFound
from ..validation import read_body, read_query
from .creem import MAX_WEBHOOK_BYTES, create_checkout, parse_event, signature_valid
from .creem_events import apply
from .invoices import get_invoice, list_invoices
from .money import minor_to_text, nano_to_minor
from .overview import billing_overview, plan_view
from .plans import Month
from .scheduler import generate_month, invoice_job_ctx

log = logging.getLogger("bluesminds.billing")


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_creem_http_ctx)
    app.cleanup_ctx.append(invoice_job_ctx)
    r = app.router
    r.add_get("/api/billing/plan", get_plan)
    r.add_get("/api/billing/plans", get_plans)
    r.add_post("/api/billing/checkout", checkout)
    r.add_get("/api/billing/invoices", get_invoices)
    r.add_get("/api/billing/invoices/{id}", get_one_invoice)
    r.add_get("/api/billing/payments", get_payments)
    r.add_post("/api/billing/webhooks/creem", creem_webhook)
    r.add_get("/api/admin/invoices", admin_invoices)
    r.add_post("/api/admin/invoices/generate", admin_generate)


async def _creem_http_ctx(app: web.Application) -> AsyncIterator[None]:
    # One client for Creem per app; it is only used by checkouts, never on the /v1 path.
    session = aiohttp.ClientSession()
    app[CREEM_HTTP] = session
    yield
    await session.close()


async def get_plan(request: web.Request) -> web.Response:
    caller = await require_account(request)
    return reply(await billing_overview(request.app, caller.user_id))


async def get_plans(request: web.Request) -> web.Response:
    await require_user(request)
    snapshot = snapshot_of(request)
    return reply({"object": "list", "data": [plan_view(p, snapshot) for p in snapshot.plans.values()]})


async def checkout(request: web.Request) -> web.Response:
    caller = await require_account(request)
    body = await read_body(request, "billing_checkout")
    snapshot = snapshot_of(request)
    creem, currency = snapshot.billing.creem, snapshot.billing.currency
    if creem.api_key is None:
        raise NotFound("Payments are not set up on this server; ask the operator to change your plan.",
                       code="payments_not_configured")
    plan = snapshot.plans.get(body["plan"])
    if plan is None or not plan.price.creem_product_id or not plan.price.monthly_fee_nano:
        buyable = sorted(p.name for p in snapshot.plans.values()
                         if p.price.creem_product_id and p.price.monthly_fee_nano)
        raise InvalidRequest(f"Plan '{body['plan']}' cannot be bought; plans for sale: "
                             f"{', '.join(buyable) or 'none'}.", param="plan")
    amount = nano_to_minor(plan.price.monthly_fee_nano, currency)
    order_id = "bmo_" + secrets.token_hex(12)
    now = now_of(request)
    store = request.app[STORE]
    await store.write(lambda conn: conn.execute(
        "INSERT INTO billing_orders (id, account_id, plan, product_id, amount_minor, currency, status, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'open', ?)",
        (order_id, caller.user_id, plan.name, plan.price.creem_product_id, amount, currency, now)))
    checkout_id, url = await create_checkout(request.app[CREEM_HTTP], creem, product_id=plan.price.creem_product_id,
                                             order_id=order_id, account_id=caller.user_id,
                                             email=caller.user.email)
    await store.write(lambda conn: conn.execute(
        "UPDATE billing_orders SET checkout_id = ?, checkout_url = ? WHERE id = ?", (checkout_id, url, order_id)))
    return reply({"object": "checkout", "order_id": order_id, "plan": plan.name, "currency": currency,
                  "amount": minor_to_text(amount, currency), "amount_minor": amount, "checkout_url": url},
                 status=201)


async def get_invoices(request: web.Request) -> web.Response:
    caller = await require_account(request)
    query = read_query(request, "billing_invoices_query")
    data, more = await request.app[STORE].read(lambda conn: list_invoices(
        conn, account_id=caller.user_id, month=query.get("month"), status=query.get("status"),
        before=query.get("before"), limit=query.get("limit", 50)))
    return reply({"object": "list", "data": data, "has_more": more})


async def get_one_invoice(request: web.Request) -> web.Response:
    caller = await require_user(request)
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"No invoice {raw!r}.", code="invoice_not_found")
    invoice = await request.app[STORE].read(lambda conn: get_invoice(conn, int(raw)))
    if invoice is None or (not caller.is_admin and invoice["account_id"] != caller.user_id):
        raise NotFound(f"No invoice {raw}.", code="invoice_not_found")
    return reply(invoice)


async def get_payments(request: web.Request) -> web.Response:
    caller = await require_account(request)
    query = read_query(request, "billing_payments_query")

    def read(conn):
        rows = conn.execute(
            "SELECT id, kind, amount_minor, currency, refunded_minor, order_id, subscription_id, created_at "
            "FROM billing_payments WHERE account_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (caller.user_id, query.get("before", 2**63 - 1), query.get("limit", 50) + 1)).fetchall()
        return rows

    rows = await request.app[STORE].read(read)
    limit = query.get("limit", 50)
    data = [{"object": "payment", "id": r["id"], "kind": r["kind"], "currency": r["currency"],
             "amount": minor_to_text(r["amount_minor"], r["currency"]), "amount_minor": r["amount_minor"],
             "refunded_minor": r["refunded_minor"], "order_id": r["order_id"],
             "subscription_id": r["subscription_id"], "created_at": r["created_at"]} for r in rows[:limit]]
    return reply({"object": "list", "data": data, "has_more": len(rows) > limit})


async def creem_webhook(request: web.Request) -> web.Response:
    snapshot = snapshot_of(request)
    secret = snapshot.billing.creem.webhook_secret
    if not secret:
        # Off without a secret, and indistinguishable from a route that does not exist.
        raise NotFound(f"Unknown route: {request.method} {request.path}. "
                       "See /v1/models for what this gateway serves.")
    raw = await bodies.read_body(request, snapshot.server, limit=MAX_WEBHOOK_BYTES)
    if not signature_valid(raw, request.headers.get("creem-signature"), secret):
        raise InvalidRequest("The creem-signature header does not match the body; nothing was changed.",
                             code="invalid_signature")
    event = parse_event(raw)
    now = now_of(request)
    outcome: list[str] = []
    applied = await request.app[STORE].write_once(
        f"creem:{event.id}", lambda conn: outcome.append(apply(conn, snapshot, event, now=now)))
    log.info("Creem event %s (%s): %s", event.id, event.type, outcome[0] if applied else "duplicate, ignored")
    return reply({"received": True, "event_id": event.id, "duplicate": not applied,
                  "result": outcome[0] if applied else None})


async def admin_invoices(request: web.Request) -> web.Response:
    query = read_query(request, "admin_invoices_query")
    data, more = await request.app[STORE].read(lambda conn: list_invoices(
        conn, account_id=query.get("account_id"), month=query.get("month"), status=query.get("status"),
        before=query.get("before"), limit=query.get("limit", 50)))
    return reply({"object": "list", "data": data, "has_more": more})


async def admin_generate(request: web.Request) -> web.Response:
    body = await read_body(request, "admin_invoices_generate")
    try:
        month = Month.parse(body["month"])
    except ValueError as exc:
        raise InvalidRequest(f"Field 'month' {exc}.", param="month") from None
    result = await generate_month(request.app[STORE], snapshot_of(request), month, now_of(request))
    return reply(result.as_dict())

"""Billing (/api/billing, /api/admin/invoices) and outbound webhooks (/api/webhooks)."""

from __future__ import annotations

from .entry import NULLABLE_STR, Error, Route, listing, obj
from .table_api import NOT_FOUND

_INVOICE = obj(("object", "id", "month", "status"), object={"const": "invoice"}, id="integer", month="string",
               status={"enum": ["draft", "final"]}, number=NULLABLE_STR, total="string", total_minor="integer",
               lines={"type": "array"})
_INVOICE_EXAMPLE = {"object": "invoice", "id": 4, "month": "2026-02", "status": "final", "number": "BM-000004",
                    "currency": "USD", "total": "20.00", "total_minor": 2000, "lines": []}
_ENDPOINT = obj(("object", "id", "url", "events"), object={"const": "webhook_endpoint"}, id="integer",
                url="string", events={"type": "array", "items": {"type": "string"}}, active="boolean")
_ENDPOINT_EXAMPLE = {"object": "webhook_endpoint", "id": 3, "url": "https://hooks.example.com/bm",
                     "events": ["key.created", "usage.threshold"], "name": "ops", "description": "",
                     "active": True}
_DELIVERY = obj(("id", "state"), id="integer", event_type="string", state="string", attempts={"type": "array"})
_GONE = Error(409, "conflict", "the endpoint is disabled; PATCH {\"active\": true} first")


def _bill(method, path, summary, **extra) -> Route:
    return Route(method=method, path=path, summary=summary, family="Billing", **extra)


def _hook(method, path, summary, **extra) -> Route:
    return Route(method=method, path=path, summary=summary, auth="user", family="Webhooks", **extra)


ROUTES = (
    _bill("GET", "/api/billing/plan", "The account's plan, period, usage against it and the month's estimate",
          auth="account", response=obj(("plan",), plan="object", period="object", referral="object"),
          example_response={"plan": {"name": "pro", "monthly_fee": "20.00"},
                            "period": {"month": "2026-03", "from": "2026-03-01", "to": "2026-03-31"},
                            "referral": {"code": "ada-7f3a"}}),
    _bill("GET", "/api/billing/plans", "The plans, with prices and limits", auth="user",
          response=listing(obj(("name",), name="string", monthly_fee="string", purchasable="boolean")),
          example_response={"object": "list", "data": [{"object": "plan", "name": "pro", "currency": "USD",
                                                        "monthly_fee": "20.00", "included_tokens": 1000000,
                                                        "overage": {}, "purchasable": True, "models": ["*"]}]}),
    _bill("POST", "/api/billing/checkout", "Start a Creem checkout for a plan", auth="account",
          body="billing_checkout", status=201,
          errors=(Error(404, "plan_not_found", "no such plan, or it is not buyable"),
                  Error(503, "payments_not_configured", "`billing.creem` is not configured"),
                  Error(502, "payment_provider_error", "Creem refused or failed the checkout")),
          response=obj(("checkout_url",), object="string", checkout_url="string"), example_request={"plan": "pro"},
          example_response={"object": "checkout", "checkout_url": "https://checkout.creem.io/ch_1"}),
    _bill("GET", "/api/billing/invoices", "The account's invoices", auth="account", query="billing_invoices_query",
          response=listing(_INVOICE, has_more="boolean"), example_request={"status": "final", "limit": 12},
          example_response={"object": "list", "data": [_INVOICE_EXAMPLE], "has_more": False}),
    _bill("GET", "/api/billing/invoices/{id}", "One invoice with its lines", auth="user",
          errors=(Error(404, "invoice_not_found", "no such invoice, or another account's"),), response=_INVOICE,
          example_response=_INVOICE_EXAMPLE),
    _bill("GET", "/api/billing/payments", "The account's payments and refunds", auth="account",
          query="billing_payments_query", response=listing(obj(("id",), id="integer", kind="string"),
                                                            has_more="boolean"),
          example_request={"limit": 20}, example_response={"object": "list", "data": [], "has_more": False}),
    _bill("POST", "/api/billing/webhooks/creem", "Creem's payment events (called by Creem)", auth="signature",
          description="Answers 404 unless `billing.creem.webhook_secret_env` is set. Idempotent per event id.",
          errors=(Error(401, "invalid_signature", "the signature does not match the body"),
                  Error(400, "invalid_creem_event", "the body is not a Creem event")),
          response=obj(("received",), received="boolean"), example_response={"received": True}),
    _bill("GET", "/api/admin/invoices", "Every account's invoices", auth="admin", query="admin_invoices_query",
          response=listing(_INVOICE, has_more="boolean"), example_request={"month": "2026-02"},
          example_response={"object": "list", "data": [_INVOICE_EXAMPLE], "has_more": False}),
    _bill("POST", "/api/admin/invoices/generate", "Draft or finalize a month's invoices (idempotent)", auth="admin",
          body="admin_invoices_generate",
          response=obj(("object", "month", "status"), object={"const": "invoice.generation"}, month="string",
                       status="string", drafted="integer", finalized="integer", unchanged="integer"),
          example_request={"month": "2026-02"},
          example_response={"object": "invoice.generation", "month": "2026-02", "status": "final", "drafted": 0,
                            "finalized": 12, "unchanged": 0}),

    _hook("GET", "/api/webhooks", "List webhook endpoints", query="webhooks_query",
          response=listing(_ENDPOINT, has_more="boolean"), example_request={},
          example_response={"object": "list", "data": [_ENDPOINT_EXAMPLE], "has_more": False}),
    _hook("POST", "/api/webhooks", "Create a webhook endpoint; its `whsec_` secret is in this answer only",
          body="webhook_create", status=201,
          errors=(Error(400, "webhook_url_refused", "the URL names a private, loopback or metadata address"),),
          response={"allOf": [_ENDPOINT, obj(("secret",), secret="string")]},
          example_request={"url": "https://hooks.example.com/bm", "events": ["key.created", "usage.threshold"],
                           "name": "ops"},
          example_response={**_ENDPOINT_EXAMPLE, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
    _hook("GET", "/api/webhooks/{id}", "One webhook endpoint", query="empty", errors=(NOT_FOUND,),
          response=_ENDPOINT, example_response=_ENDPOINT_EXAMPLE),
    _hook("PATCH", "/api/webhooks/{id}", "Change an endpoint (`active: true` re-enables it)", body="webhook_update",
          errors=(NOT_FOUND,), response=_ENDPOINT, example_request={"active": True},
          example_response=_ENDPOINT_EXAMPLE),
    _hook("DELETE", "/api/webhooks/{id}", "Delete an endpoint", body="empty", errors=(NOT_FOUND,),
          response=obj(("id", "deleted"), id="integer", deleted="boolean"), example_request={},
          example_response={"object": "webhook_endpoint.deleted", "id": 3, "deleted": True}),
    _hook("GET", "/api/webhooks/{id}/deliveries", "An endpoint's deliveries with their attempts",
          query="webhook_deliveries_query", errors=(NOT_FOUND,), response=listing(_DELIVERY, has_more="boolean"),
          example_request={"state": "failed", "limit": 20},
          example_response={"object": "list", "data": [{"id": 9, "event_type": "key.created", "state": "failed",
                                                        "attempts": []}], "has_more": False}),
    _hook("POST", "/api/webhooks/{id}/deliveries/{delivery_id}/retry", "Send a delivery again now", body="empty",
          errors=(NOT_FOUND, _GONE), response=_DELIVERY, example_request={},
          example_response={"id": 9, "event_type": "key.created", "state": "pending", "attempts": []}),
    _hook("POST", "/api/webhooks/{id}/test", "Send a test event to the endpoint", body="empty",
          errors=(NOT_FOUND, _GONE), response=obj(("id",), id="integer"), example_request={},
          example_response={"id": 10, "event_type": "webhook.test", "state": "pending", "attempts": []}),
)

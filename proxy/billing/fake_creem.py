"""A stand-in for Creem's API on 127.0.0.1, and signed events shaped like Creem's.

`start_fake_creem(api_key=...)` serves `POST /v1/checkouts` (checks
`x-api-key`, answers with an id and a `checkout_url`) and remembers every
checkout it made on the returned object, so tests can complete it with a
`checkout.completed` event that matches, or deliberately does not.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .creem import signature_of

_STATE: web.AppKey["FakeCreem"] = web.AppKey("fake_creem", object)


@dataclass
class FakeCreem:
    api_key: str
    url: str = ""
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None  # answer every checkout with this status
    runner: web.AppRunner | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(4)}"


async def _checkouts(request: web.Request) -> web.Response:
    fake = request.app[_STATE]
    if request.headers.get("x-api-key") != fake.api_key:
        return web.json_response({"message": "Unauthorized"}, status=403)
    body = orjson.loads(await request.read())
    fake.requests.append(body)
    if fake.fail_with is not None:
        return web.json_response({"message": "unavailable"}, status=fake.fail_with)
    checkout_id = fake.new_id("ch")
    checkout = {"id": checkout_id, "object": "checkout", "status": "pending", "mode": "test",
                "product": body["product_id"], "request_id": body.get("request_id"),
                "metadata": body.get("metadata") or {}, "success_url": body.get("success_url"),
                "checkout_url": f"{fake.url}/checkout/{checkout_id}"}
    fake.checkouts[checkout_id] = checkout
    return web.json_response(checkout)


async def start_fake_creem(*, api_key: str, host: str = "127.0.0.1", port: int = 0) -> FakeCreem:
    fake = FakeCreem(api_key=api_key)
    app = web.Application()
    app[_STATE] = fake
    app.router.add_post("/v1/checkouts", _checkouts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    fake.runner, fake.url = runner, f"http://{host}:{bound}"
    return fake


# -- events, as Creem sends them -----------------------------------------------------


def signed(event: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of a webhook delivery."""
    body = orjson.dumps(event)
    return body, {"creem-signature": signature_of(body, secret), "content-type": "application/json"}


def event(event_type: str, obj: dict[str, Any], *, created_at: int, event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_{secrets.token_hex(8)}", "eventType": event_type,
            "created_at": created_at, "object": obj}


def subscription_object(sub_id: str, checkout: dict[str, Any], *, status: str = "active",
                        period: tuple[str, str] | None = None, transaction: dict[str, Any] | None = None,
                        ) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": sub_id, "object": "subscription", "product": checkout["product"],
                           "status": status, "metadata": dict(checkout["metadata"])}
    if period is not None:
        obj["current_period_start_date"], obj["current_period_end_date"] = period
    if transaction is not None:
        obj["last_transaction_id"] = transaction["id"]
        obj["last_transaction"] = transaction
    return obj


def checkout_completed(checkout: dict[str, Any], *, amount: int, currency: str, created_at: int,
                       sub_id: str | None = "sub_1", transaction: str = "tran_1", order: str = "ord_1",
                       period: tuple[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": checkout["id"], "object": "checkout", "request_id": checkout["request_id"],
        "status": "completed", "product": {"id": checkout["product"]},
        "order": {"id": order, "object": "order", "product": checkout["product"], "amount": amount,
                  "currency": currency, "status": "paid", "transaction": transaction},
        "metadata": dict(checkout["metadata"]),
    }
    if sub_id is not None:
        obj["subscription"] = subscription_object(sub_id, checkout, period=period)
    obj.update(overrides)
    return event("checkout.completed", obj, created_at=created_at)

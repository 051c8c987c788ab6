"""Creem: the checkout API call, and the webhook's signature and event parsing.

The effects of events live in creem_events.py; this module is what touches
Creem's wire formats. A checkout is `POST {base_url}/v1/checkouts` with the
`x-api-key` header, the product, our order id as `request_id` and in
`metadata`, and the success URL; the answer carries `checkout_url`. Every
webhook is signed: `creem-signature` is the hex HMAC-SHA256 of the raw body.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from ..config.snapshot import CreemSettings
from ..errors import InvalidRequest, UpstreamError

log = logging.getLogger("bluesminds.billing")

MAX_WEBHOOK_BYTES = 256 * 1024  # Creem's events are a few KB; anything larger is not one


class CreemMismatch(InvalidRequest):
    """An event that does not match what the gateway created: 400, and nothing changes."""

    code = "creem_event_mismatch"


def signature_of(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, secret: str) -> bool:
    if not header:
        return False
    sent = header.strip().lower().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(signature_of(body, secret).encode(), sent)


@dataclass(frozen=True, slots=True)
class CreemEvent:
    id: str
    type: str
    created_at: int  # Creem's milliseconds since the epoch: what per-subscription order uses
    obj: dict[str, Any]


def parse_event(body: bytes) -> CreemEvent:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The Creem event is not valid JSON.", code="invalid_creem_event") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The Creem event must be a JSON object.", code="invalid_creem_event")
    event_id, event_type = value.get("id"), value.get("eventType")
    created, obj = value.get("created_at"), value.get("object")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
        raise InvalidRequest("The Creem event has no id.", param="id", code="invalid_creem_event")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 64:
        raise InvalidRequest("The Creem event has no eventType.", param="eventType", code="invalid_creem_event")
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**53:
        raise InvalidRequest("The Creem event's created_at must be milliseconds since the epoch.",
                             param="created_at", code="invalid_creem_event")
    if not isinstance(obj, dict):
        raise InvalidRequest("The Creem event has no object.", param="object", code="invalid_creem_event")
    return CreemEvent(event_id, event_type, created, obj)


def ref(value: Any) -> str | None:
    """Creem sends a related object either expanded ({"id": ...}) or as its id."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"] or None
    return None


def amount(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else None


def timestamp(value: Any) -> float | None:
    """An ISO date-time ("2026-11-13T13:54:26.000Z") or milliseconds → unix seconds."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value / 1000.0
    return None


async def create_checkout(session: aiohttp.ClientSession, settings: CreemSettings, *, product_id: str,
                          order_id: str, account_id: int, email: str) -> tuple[str | None, str]:
    """(Creem's checkout id, its URL). Raises UpstreamError when Creem does not give one."""
    body: dict[str, Any] = {"product_id": product_id, "request_id": order_id,
                            "metadata": {"bm_order_id": order_id, "account_id": str(account_id)},
                            "customer": {"email": email}}
    if settings.success_url:
        body["success_url"] = settings.success_url
    headers = {"x-api-key": settings.api_key or "", "content-type": "application/json"}
    try:
        async with session.post(f"{settings.base_url}/v1/checkouts", data=orjson.dumps(body), headers=headers,
                                timeout=aiohttp.ClientTimeout(total=settings.timeout),
                                allow_redirects=False) as resp:
            raw = await resp.content.read(MAX_WEBHOOK_BYTES)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("Creem checkout for order %s failed: %s", order_id, exc)
        raise UpstreamError("The payment provider could not be reached; try again in a moment.",
                            code="payment_provider_unavailable") from None
    try:
        answer = orjson.loads(raw) if status == 200 or status == 201 else None
    except orjson.JSONDecodeError:
        answer = None
    url = answer.get("checkout_url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        log.warning("Creem answered the checkout for order %s with HTTP %s and no checkout_url", order_id, status)
        raise UpstreamError("The payment provider did not create a checkout; try again, or tell the operator "
                            "if it persists.", code="payment_provider_error")
    checkout_id = answer.get("id") if isinstance(answer.get("id"), str) else None
    return checkout_id, url

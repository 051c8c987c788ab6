"""A real gateway with billing configured, the fake Creem, and helpers shared by
tests/test_billing_*.py, test_invoices_*.py and test_creem_*.py."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import aiohttp

from proxy.billing.fake_creem import FakeCreem, start_fake_creem
from proxy.cli.accounts import create_user_and_key
from proxy.usage import UsageRecord

from . import db_access
from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_ENV, ADMIN_KEY = "BM_TEST_BILLING_ADMIN", "admin-key-for-billing-tests"
CREEM_KEY_ENV, CREEM_KEY = "BM_TEST_CREEM_KEY", "creem_test_key_123"
CREEM_SECRET_ENV, CREEM_SECRET = "BM_TEST_CREEM_SECRET", "whsec_creem_test_secret"
PASSWORD = "correct horse battery"

PLANS = {
    "test": {"rpm": 100000, "tpm": 100000000, "models": "*"},
    "basic": {"models": "*", "price": {"monthly": "10.00"}},
    "pro": {"models": "*", "price": {"monthly": 30, "included_tokens": 1000,
                                     "creem_product_id": "prod_pro"}},
}


def ts(text: str) -> float:
    """"2026-03-10T12:00" → unix seconds, UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    """The injected clock: tests move it; nothing reads today's date."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def billing_section(creem_url: str | None, *, secret: bool = True, **extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"currency": "USD", "invoice_grace": "3d", "invoice_every": "1h", **extra}
    if creem_url is not None:
        section["creem"] = {"base_url": creem_url, "api_key_env": CREEM_KEY_ENV,
                            "success_url": "https://gateway.example/dashboard/billing"}
        if secret:
            section["creem"]["webhook_secret_env"] = CREEM_SECRET_ENV
    return section


async def start_gateway(tmp_path, monkeypatch, upstream_url: str, clock: Clock, *, creem: FakeCreem | None,
                        secret: bool = True, plans: dict | None = None, tenant_plan: str = "test",
                        billing: dict | None = None, **overrides: Any) -> GatewayHarness:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    monkeypatch.setenv(CREEM_KEY_ENV, CREEM_KEY)
    monkeypatch.setenv(CREEM_SECRET_ENV, CREEM_SECRET)
    harness = GatewayHarness.write(
        str(tmp_path / "config"), [upstream_entry("u", upstream_url)],
        admin={"key_env": ADMIN_ENV}, plans=plans or PLANS,
        billing=billing_section(creem.url if creem else None, secret=secret, **(billing or {})), **overrides)
    # The tenant exists from the clock's "now", so it is billed for the months the test uses.
    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "tenant@example.com", PASSWORD,
                                                       tenant_plan, "e2e", bcrypt_rounds=4, clock=clock)
    return await harness.start(clock=clock)


async def fake_creem() -> FakeCreem:
    return await start_fake_creem(api_key=CREEM_KEY)


def add_account(harness: GatewayHarness, email: str, plan: str, clock: Clock) -> int:
    user_id, _ = create_user_and_key(harness.db_settings, email, PASSWORD, plan, "k", bcrypt_rounds=4, clock=clock)
    return user_id


async def login(session: aiohttp.ClientSession, harness: GatewayHarness, email: str) -> dict[str, str]:
    async with session.post(harness.url + "/api/auth/login", json={"email": email, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["token"]
    return {"Authorization": f"Bearer {token}"}


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def query(db_path: str, sql: str, args: tuple = ()) -> list[tuple]:
    return db_access.query(db_path, sql, args)


def usage_row(at: float, user_id: int, model: str, prompt: int, completion: int, cost_nano: int,
              request_id: str = "r") -> UsageRecord:
    return UsageRecord(ts=at, request_id=request_id, user_id=user_id, key_id=None, route="chat",
                       requested_model=model, served_model=model, upstream="u", status=200, error_type=None,
                       prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                       cost_nano=cost_nano, latency_ms=10.0)

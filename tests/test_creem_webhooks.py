"""Creem: the checkout against the fake Creem, and webhook events that cannot be
forged, replayed, reordered or mismatched into a change."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from proxy.billing.fake_creem import checkout_completed, event, signed, subscription_object
from proxy.fake_upstream import start_fake_upstream

from .billing_support import CREEM_SECRET, Clock, fake_creem, login, query, start_gateway, ts

NOW = ts("2026-03-10T12:00")
T0 = 1_773_000_000_000  # Creem's created_at, milliseconds
PERIOD = ("2026-03-10T12:00:00.000Z", "2026-04-10T12:00:00.000Z")
NEXT_PERIOD = ("2026-04-10T12:00:00.000Z", "2026-05-10T12:00:00.000Z")


@pytest.fixture
async def creem():
    fake = await fake_creem()
    yield fake
    await fake.stop()


@pytest.fixture
async def upstream():
    fake = await start_fake_upstream(name="u")
    yield fake
    await fake.stop()


@pytest.fixture
async def gw(tmp_path, monkeypatch, upstream, creem):
    harness = await start_gateway(tmp_path, monkeypatch, upstream.url, Clock(NOW), creem=creem)
    async with aiohttp.ClientSession() as session:
        harness.session = session
        harness.tenant = await login(session, harness, "tenant@example.com")
        yield harness
    await harness.stop()


async def start_checkout(gw, creem) -> dict:
    async with gw.session.post(gw.url + "/api/billing/checkout", json={"plan": "pro"}, headers=gw.tenant) as resp:
        assert resp.status == 201, await resp.text()
        answer = await resp.json()
    [made] = creem.checkouts.values()
    assert answer["checkout_url"] == made["checkout_url"] and answer["amount"] == "30.00"
    return made


async def deliver(gw, body_event: dict | None = None, *, body: bytes | None = None,
                  signature: str | None = None) -> tuple[int, dict]:
    raw, headers = signed(body_event, CREEM_SECRET) if body_event is not None else (body, {})
    if body is not None:
        raw = body
    if signature is not None:
        headers = {"creem-signature": signature, "content-type": "application/json"}
    async with gw.session.post(gw.url + "/api/billing/webhooks/creem", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


def plan_of(gw) -> str:
    return query(gw.db_path, "SELECT plan FROM users WHERE id = ?", (gw.user_id,))[0][0]


def charges(gw) -> list[tuple]:
    return query(gw.db_path, "SELECT kind, creem_ref, amount_minor, currency FROM billing_payments ORDER BY id")


def state(gw) -> list[tuple]:
    return query(gw.db_path, "SELECT id, status, period_end FROM billing_subscriptions")


def completed(made: dict, **kw) -> dict:
    kw.setdefault("created_at", T0)
    return checkout_completed(made, amount=3000, currency="USD", period=PERIOD, **kw)


async def test_checkout_is_created_at_creem_and_bound_to_an_order(gw, creem):
    made = await start_checkout(gw, creem)
    [sent] = creem.requests
    assert sent["product_id"] == "prod_pro" and sent["success_url"] == "https://gateway.example/dashboard/billing"
    assert sent["metadata"] == {"bm_order_id": sent["request_id"], "account_id": str(gw.user_id)}
    assert query(gw.db_path, "SELECT id, account_id, plan, product_id, amount_minor, currency, status, checkout_url "
                             "FROM billing_orders") == [
        (sent["request_id"], gw.user_id, "pro", "prod_pro", 3000, "USD", "open", made["checkout_url"])]
    async with gw.session.post(gw.url + "/api/billing/checkout", json={"plan": "basic"}, headers=gw.tenant) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == "Plan 'basic' cannot be bought; plans for sale: pro."
    async with gw.session.post(gw.url + "/api/billing/checkout", json={"plan": 7}, headers=gw.tenant) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "plan"


async def test_creem_refusing_the_checkout_is_a_502(gw, creem):
    creem.fail_with = 500
    async with gw.session.post(gw.url + "/api/billing/checkout", json={"plan": "pro"}, headers=gw.tenant) as resp:
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "payment_provider_error"


async def test_a_valid_checkout_completed_grants_the_plan_and_records_one_charge(gw, creem):
    made = await start_checkout(gw, creem)
    status, body = await deliver(gw, completed(made))
    assert status == 200 and body["duplicate"] is False and body["result"] == "order completed"
    assert plan_of(gw) == "pro"
    assert charges(gw) == [("charge", "tran_1", 3000, "USD")]
    assert state(gw) == [("sub_1", "active", ts("2026-04-10T12:00"))]
    assert query(gw.db_path, "SELECT status FROM billing_orders") == [("completed",)]
    assert query(gw.db_path, "SELECT type FROM webhook_events WHERE type LIKE 'payment.%'") == [("payment.succeeded",)]
    async with gw.session.get(gw.url + "/api/billing/payments", headers=gw.tenant) as resp:
        [payment] = (await resp.json())["data"]
    assert (payment["kind"], payment["amount"], payment["subscription_id"]) == ("charge", "30.00", "sub_1")
    async with gw.session.get(gw.url + "/api/billing/plan", headers=gw.tenant) as resp:
        view = await resp.json()
    assert view["subscription"]["status"] == "active" and view["period"]["source"] == "subscription"


async def test_a_bad_signature_answers_400_and_changes_nothing(gw, creem):
    made = await start_checkout(gw, creem)
    raw, _ = signed(completed(made), CREEM_SECRET)
    for signature in ("0" * 64, "not hex at all", ""):
        status, body = await deliver(gw, body=raw, signature=signature)
        assert status == 400 and body["error"]["code"] == "invalid_signature"
    async with gw.session.post(gw.url + "/api/billing/webhooks/creem", data=raw) as resp:  # no header at all
        assert resp.status == 400
    assert plan_of(gw) == "test" and charges(gw) == [] and state(gw) == []
    assert query(gw.db_path, "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE 'creem:%'") == [(0,)]


async def test_a_tampered_body_fails_its_signature(gw, creem):
    made = await start_checkout(gw, creem)
    raw, headers = signed(completed(made), CREEM_SECRET)
    tampered = raw.replace(b'"amount":3000', b'"amount":1')
    assert tampered != raw
    status, body = await deliver(gw, body=tampered, signature=headers["creem-signature"])
    assert status == 400 and body["error"]["code"] == "invalid_signature"
    assert charges(gw) == [] and plan_of(gw) == "test"


async def test_a_replayed_event_answers_200_and_changes_nothing(gw, creem):
    made = await start_checkout(gw, creem)
    first = completed(made)
    assert (await deliver(gw, first))[0] == 200
    status, body = await deliver(gw, first)
    assert status == 200 and body["duplicate"] is True
    assert charges(gw) == [("charge", "tran_1", 3000, "USD")]
    assert query(gw.db_path, "SELECT COUNT(*) FROM webhook_events WHERE type LIKE 'payment.%'") == [(1,)]


async def test_fifty_concurrent_duplicates_apply_once(gw, creem):
    made = await start_checkout(gw, creem)
    same = completed(made)
    answers = await asyncio.gather(*[deliver(gw, same) for _ in range(50)])
    assert [s for s, _ in answers] == [200] * 50
    assert sorted(b["duplicate"] for _, b in answers) == [False] + [True] * 49
    assert charges(gw) == [("charge", "tran_1", 3000, "USD")]
    assert query(gw.db_path, "SELECT COUNT(*) FROM billing_plan_changes") == [(1,)]


async def test_the_first_payment_announced_twice_is_one_charge_and_one_period(gw, creem):
    made = await start_checkout(gw, creem)
    assert (await deliver(gw, completed(made)))[0] == 200
    paid = event("subscription.paid", subscription_object(
        "sub_1", made, period=PERIOD, transaction={"id": "tran_1", "order": "ord_1", "amount": 3000,
                                                   "currency": "USD"}), created_at=T0 + 1000)
    assert (await deliver(gw, paid))[0] == 200
    assert charges(gw) == [("charge", "tran_1", 3000, "USD")]
    assert state(gw) == [("sub_1", "active", ts("2026-04-10T12:00"))]
    renewal = event("subscription.paid", subscription_object(
        "sub_1", made, period=NEXT_PERIOD, transaction={"id": "tran_2", "order": "ord_2", "amount": 3000,
                                                        "currency": "USD"}), created_at=T0 + 2000)
    assert (await deliver(gw, renewal))[0] == 200
    assert charges(gw) == [("charge", "tran_1", 3000, "USD"), ("charge", "tran_2", 3000, "USD")]
    assert state(gw) == [("sub_1", "active", ts("2026-05-10T12:00"))]


async def test_an_older_event_arriving_late_never_changes_a_newer_state(gw, creem):
    made = await start_checkout(gw, creem)
    assert (await deliver(gw, completed(made)))[0] == 200
    canceled = event("subscription.canceled", subscription_object("sub_1", made, status="canceled", period=PERIOD),
                     created_at=T0 + 5000)
    older_active = event("subscription.active", subscription_object("sub_1", made, period=NEXT_PERIOD),
                         created_at=T0 + 3000)
    assert (await deliver(gw, canceled))[0] == 200
    assert (await deliver(gw, older_active))[0] == 200
    # Still canceled; the period may only grow (max), so the older event's later end counts.
    assert state(gw) == [("sub_1", "canceled", ts("2026-05-10T12:00"))]
    assert plan_of(gw) == "pro"


async def test_a_refund_is_terminal_and_never_undone(gw, creem):
    made = await start_checkout(gw, creem)
    assert (await deliver(gw, completed(made)))[0] == 200
    refund = event("refund.created", {"id": "ref_1", "object": "refund", "refund_amount": 3000,
                                      "refund_currency": "USD", "transaction": {"id": "tran_1"},
                                      "subscription": {"id": "sub_1"}}, created_at=T0 + 1000)
    status, body = await deliver(gw, refund)
    assert status == 200 and body["result"] == "refund recorded"
    assert plan_of(gw) == "test" and state(gw)[0][1] == "refunded"
    later_paid = event("subscription.paid", subscription_object(
        "sub_1", made, period=NEXT_PERIOD, transaction={"id": "tran_9", "amount": 3000, "currency": "USD"}),
        created_at=T0 + 9000)
    later_active = event("subscription.active", subscription_object("sub_1", made), created_at=T0 + 9500)
    assert (await deliver(gw, later_paid))[0] == 200
    assert (await deliver(gw, later_active))[0] == 200
    assert plan_of(gw) == "test" and state(gw) == [("sub_1", "refunded", ts("2026-04-10T12:00"))]
    assert [c[0] for c in charges(gw)] == ["charge", "refund", "charge"]  # money is recorded as it happened
    assert query(gw.db_path, "SELECT type FROM webhook_events WHERE type LIKE 'payment.%' ORDER BY created_at, type") == [
        ("payment.refunded",), ("payment.succeeded",), ("payment.succeeded",)]


async def test_expired_is_terminal(gw, creem):
    made = await start_checkout(gw, creem)
    assert (await deliver(gw, completed(made)))[0] == 200
    expired = event("subscription.expired", subscription_object("sub_1", made, status="expired"),
                    created_at=T0 + 1000)
    assert (await deliver(gw, expired))[0] == 200
    assert plan_of(gw) == "test"
    revived = event("subscription.active", subscription_object("sub_1", made, period=NEXT_PERIOD),
                    created_at=T0 + 2000)
    assert (await deliver(gw, revived))[0] == 200
    assert plan_of(gw) == "test" and state(gw) == [("sub_1", "expired", ts("2026-04-10T12:00"))]


@pytest.mark.parametrize("change,param", [
    (lambda e: e["object"]["order"].update(product="prod_other"), "object.product"),
    (lambda e: e["object"].update(product={"id": "prod_other"}), "object.product"),
    (lambda e: e["object"]["order"].update(amount=2999), "object.amount"),
    (lambda e: e["object"]["order"].update(currency="EUR"), "object.currency"),
    (lambda e: e["object"]["metadata"].update(account_id="999"), "object.account"),
    (lambda e: e["object"].update(request_id="bmo_unknown"), "object.request_id"),
])
async def test_an_event_that_does_not_match_its_order_is_a_400_that_changes_nothing(gw, creem, change, param):
    made = await start_checkout(gw, creem)
    wrong = completed(made)
    change(wrong)
    status, body = await deliver(gw, wrong)
    assert status == 400 and body["error"]["code"] == "creem_event_mismatch"
    if param is not None:
        assert body["error"]["param"] == param
    assert plan_of(gw) == "test" and charges(gw) == [] and state(gw) == []
    assert query(gw.db_path, "SELECT status FROM billing_orders") == [("open",)]
    # Nothing was recorded, not even the event id: the correct event still applies.
    right = completed(made)
    assert (await deliver(gw, right))[0] == 200 and plan_of(gw) == "pro"


async def test_malformed_events_are_400s(gw, creem):
    for raw in (b"not json", b"[1]", orjson.dumps({"id": "evt_1", "eventType": "x", "created_at": "soon",
                                                   "object": {}})):
        status, body = await deliver(gw, body=raw, signature=signed_raw(raw))
        assert status == 400 and body["error"]["code"] == "invalid_creem_event"
    big = b"x" * (300 * 1024)
    status, body = await deliver(gw, body=big, signature=signed_raw(big))
    assert status == 413


def signed_raw(raw: bytes) -> str:
    from proxy.billing.creem import signature_of
    return signature_of(raw, CREEM_SECRET)


async def test_without_a_configured_secret_the_route_is_404(tmp_path, monkeypatch, upstream, creem):
    harness = await start_gateway(tmp_path, monkeypatch, upstream.url, Clock(NOW), creem=creem, secret=False)
    try:
        made = {"id": "ch_1", "request_id": "bmo_x", "product": "prod_pro", "metadata": {}}
        raw, headers = signed(completed(made), CREEM_SECRET)
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/api/billing/webhooks/creem", data=raw, headers=headers) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "not_found"
    finally:
        await harness.stop()
    assert query(harness.db_path, "SELECT COUNT(*) FROM idempotency_keys") == [(0,)]

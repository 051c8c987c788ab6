"""What each Creem event does, inside the transaction that records its id.

`apply(conn, snapshot, event, now)` runs as the `fn` of
`store.write_once("creem:<event id>", fn)`: the event id and every effect
commit together, so a replayed or concurrent duplicate changes nothing, and an
event that raises (`CreemMismatch`) leaves no trace, its id included, so a
corrected redelivery still applies.

Per subscription, state changes apply in Creem's `created_at` order: an
event older than the last one applied may still extend the period (with
max(), so checkout.completed then subscription.paid for the same period
counts once) but never changes the status or the plan. `refunded` and
`expired` are terminal: nothing changes a subscription after them. Money is
recorded whatever the order: a charge once per Creem transaction, a refund
once per refund id. The README's billing section has the table of effects.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..config.snapshot import Snapshot
from ..webhooks.outbox import emit
from .creem import CreemEvent, CreemMismatch, amount, ref, timestamp
from .money import minor_to_text
from .plans import change_plan

TERMINAL = frozenset({"refunded", "expired"})
# Status a subscription event moves to, and whether it grants the plan (True),
# takes it back to the default plan (False), or leaves it (None).
_STATUS = {
    "checkout.completed": ("active", True),
    "subscription.active": ("active", True),
    "subscription.paid": ("active", True),
    "subscription.canceled": ("canceled", None),
    "subscription.past_due": ("past_due", None),
    "subscription.expired": ("expired", False),
}
HANDLED = frozenset(_STATUS) | {"refund.created"}


def apply(conn: sqlite3.Connection, snapshot: Snapshot, event: CreemEvent, *, now: float) -> str:
    """Apply one event; returns what it did, for the log and the answer."""
    if event.type == "checkout.completed":
        return _checkout_completed(conn, snapshot, event, now)
    if event.type == "refund.created":
        return _refund(conn, snapshot, event, now)
    if event.type in _STATUS:
        return _subscription(conn, snapshot, event, now)
    return "ignored"  # recorded all the same, so Creem stops redelivering it


def _plan_of_product(snapshot: Snapshot, product_id: str | None) -> str | None:
    for plan in snapshot.plans.values():
        if product_id is not None and plan.price.creem_product_id == product_id:
            return plan.name
    return None


def _order(conn: sqlite3.Connection, order_id: str | None) -> sqlite3.Row | None:
    if not order_id:
        return None
    return conn.execute("SELECT * FROM billing_orders WHERE id = ?", (order_id,)).fetchone()


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _checkout_completed(conn, snapshot: Snapshot, event: CreemEvent, now: float) -> str:
    obj = event.obj
    meta = _metadata(obj)
    order = _order(conn, obj.get("request_id") if isinstance(obj.get("request_id"), str)
                   else meta.get("bm_order_id"))
    if order is None:
        raise CreemMismatch("The checkout names no order this gateway created (request_id).",
                            param="object.request_id")
    creem_order = obj.get("order") if isinstance(obj.get("order"), dict) else {}
    # The checkout and its order each name the product; both must be the one ordered.
    products = {ref(obj.get("product")), ref(creem_order.get("product"))} - {None}
    product = products.pop() if len(products) == 1 else None
    paid, currency = amount(creem_order.get("amount")), str(creem_order.get("currency") or "").upper()
    for name, got, expected in (("product", product, order["product_id"]),
                                ("amount", paid, order["amount_minor"]),
                                ("currency", currency, order["currency"]),
                                ("account", str(meta.get("account_id")), str(order["account_id"]))):
        if got != expected:
            raise CreemMismatch(f"The checkout's {name} does not match the order the gateway created; "
                                "nothing was changed.", param=f"object.{name}")
    conn.execute("UPDATE billing_orders SET status = 'completed', completed_at = ? WHERE id = ? AND status = 'open'",
                 (now, order["id"]))
    subscription = obj.get("subscription")
    sub_id = ref(subscription)
    transaction = ref(creem_order.get("transaction")) or ref(creem_order)
    if transaction is not None:
        _charge(conn, order["account_id"], transaction, order_id=order["id"], subscription_id=sub_id,
                amount_minor=paid, currency=currency, now=now, event=event)
    period = _period(subscription if isinstance(subscription, dict) else {})
    if sub_id is None:  # a one-time product: the plan is bought outright
        change_plan(conn, order["account_id"], order["plan"], now=now, source="creem")
        return "order completed"
    _transition(conn, snapshot, sub_id, order["account_id"], order["plan"], order["product_id"],
                event, period, now)
    return "order completed"


def _subscription(conn, snapshot: Snapshot, event: CreemEvent, now: float) -> str:
    obj = event.obj
    sub_id = ref(obj)
    if sub_id is None:
        raise CreemMismatch("The subscription event has no subscription id.", param="object.id")
    product = ref(obj.get("product"))
    meta = _metadata(obj)
    row = conn.execute("SELECT account_id, plan, product_id FROM billing_subscriptions WHERE id = ?",
                       (sub_id,)).fetchone()
    if row is not None:
        account_id, plan, expected_product = row
    else:
        order = _order(conn, meta.get("bm_order_id"))
        if order is None:
            raise CreemMismatch("The subscription belongs to no checkout this gateway created.",
                                param="object.metadata")
        account_id, plan, expected_product = order["account_id"], order["plan"], order["product_id"]
    if product is not None and product != expected_product:
        raise CreemMismatch("The subscription's product does not match the checkout the gateway created.",
                            param="object.product")
    if "account_id" in meta and str(meta["account_id"]) != str(account_id):
        raise CreemMismatch("The subscription's account does not match the checkout the gateway created.",
                            param="object.metadata.account_id")
    if event.type == "subscription.paid":
        tx = obj.get("last_transaction") if isinstance(obj.get("last_transaction"), dict) else {}
        transaction = ref(tx) or ref(obj.get("last_transaction_id"))
        paid = amount(tx.get("amount"))
        if transaction is not None and paid is not None:
            _charge(conn, account_id, transaction, order_id=ref(tx.get("order")), subscription_id=sub_id,
                    amount_minor=paid, currency=str(tx.get("currency") or snapshot.billing.currency).upper(),
                    now=now, event=event)
    _transition(conn, snapshot, sub_id, account_id, plan, expected_product, event, _period(obj), now)
    return event.type


def _period(sub: dict[str, Any]) -> tuple[float | None, float | None]:
    return timestamp(sub.get("current_period_start_date")), timestamp(sub.get("current_period_end_date"))


def _transition(conn, snapshot: Snapshot, sub_id: str, account_id: int, plan: str, product: str,
                event: CreemEvent, period: tuple[float | None, float | None], now: float) -> None:
    status, grants = _STATUS[event.type]
    start, end = period
    row = conn.execute("SELECT status, period_start, period_end, last_event_at FROM billing_subscriptions "
                       "WHERE id = ?", (sub_id,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO billing_subscriptions (id, account_id, plan, product_id, status, period_start, "
                     "period_end, last_event_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (sub_id, account_id, plan, product, status, start, end, event.created_at, now))
    else:
        old_status, old_start, old_end, last = row
        if old_status in TERMINAL:
            return
        if end is not None and (old_end is None or end > old_end):
            conn.execute("UPDATE billing_subscriptions SET period_start = ?, period_end = ?, updated_at = ? "
                         "WHERE id = ?", (start if start is not None else old_start, end, now, sub_id))
        if event.created_at < last:
            return  # older than what was applied: the period may grow, the state stays
        conn.execute("UPDATE billing_subscriptions SET status = ?, last_event_at = ?, updated_at = ? WHERE id = ?",
                     (status, event.created_at, now, sub_id))
    if grants is True:
        change_plan(conn, account_id, plan, now=now, source="creem")
    elif grants is False:
        change_plan(conn, account_id, snapshot.auth.default_plan, now=now, source="creem")


def _charge(conn, account_id: int, transaction: str, *, order_id: str | None, subscription_id: str | None,
            amount_minor: int | None, currency: str, now: float, event: CreemEvent) -> None:
    if amount_minor is None:
        raise CreemMismatch("The payment has no amount in minor units.", param="object.order.amount")
    cur = conn.execute(
        "INSERT INTO billing_payments (account_id, kind, creem_ref, transaction_ref, order_id, subscription_id, "
        "amount_minor, currency, created_at, event_id) VALUES (?, 'charge', ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, creem_ref) DO NOTHING RETURNING id",
        (account_id, transaction, transaction, order_id, subscription_id, amount_minor, currency, now, event.id))
    row = cur.fetchone()
    if row is None:
        # The same transaction again (checkout.completed and subscription.paid both announce the
        # first payment): it is one charge; fill in what the first announcement lacked.
        conn.execute("UPDATE billing_payments SET order_id = COALESCE(order_id, ?), "
                     "subscription_id = COALESCE(subscription_id, ?) WHERE kind = 'charge' AND creem_ref = ?",
                     (order_id, subscription_id, transaction))
        return
    emit(conn, "payment.succeeded", {"payment_id": row[0], "amount": minor_to_text(amount_minor, currency),
                                     "currency": currency, "order_id": order_id,
                                     "subscription_id": subscription_id},
         now=now, account_id=account_id, event_id=f"evt_payment_{row[0]}_succeeded")


def _refund(conn, snapshot: Snapshot, event: CreemEvent, now: float) -> str:
    obj = event.obj
    refund_id = ref(obj)
    transaction = ref(obj.get("transaction"))
    charge = None
    if transaction is not None:
        charge = conn.execute("SELECT * FROM billing_payments WHERE kind = 'charge' AND creem_ref = ?",
                              (transaction,)).fetchone()
    if charge is None and ref(obj.get("order")) is not None:
        charge = conn.execute("SELECT * FROM billing_payments WHERE kind = 'charge' AND order_id = ? "
                              "ORDER BY id LIMIT 1", (ref(obj.get("order")),)).fetchone()
    if refund_id is None or charge is None:
        raise CreemMismatch("The refund names no payment this gateway recorded.", param="object.transaction")
    refunded = amount(obj.get("refund_amount"))
    currency = str(obj.get("refund_currency") or charge["currency"]).upper()
    if refunded is None or currency != charge["currency"]:
        raise CreemMismatch("The refund's amount or currency does not match its payment.",
                            param="object.refund_amount")
    cur = conn.execute(
        "INSERT INTO billing_payments (account_id, kind, creem_ref, transaction_ref, order_id, subscription_id, "
        "amount_minor, currency, created_at, event_id) VALUES (?, 'refund', ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, creem_ref) DO NOTHING RETURNING id",
        (charge["account_id"], refund_id, charge["creem_ref"], charge["order_id"], charge["subscription_id"],
         refunded, currency, now, event.id))
    row = cur.fetchone()
    if row is None:
        return "refund already recorded"
    conn.execute("UPDATE billing_payments SET refunded_minor = refunded_minor + ? WHERE id = ?",
                 (refunded, charge["id"]))
    emit(conn, "payment.refunded", {"payment_id": row[0], "refunded_payment_id": charge["id"],
                                    "amount": minor_to_text(refunded, currency), "currency": currency},
         now=now, account_id=charge["account_id"], event_id=f"evt_payment_{row[0]}_refunded")
    sub_id = charge["subscription_id"] or ref(obj.get("subscription"))
    if charge["refunded_minor"] + refunded >= charge["amount_minor"] and sub_id is not None:
        # Refunded in full: terminal whatever order events arrive in; a refund is never undone.
        cur = conn.execute("UPDATE billing_subscriptions SET status = 'refunded', last_event_at = MAX(last_event_at, ?), "
                           "updated_at = ? WHERE id = ? AND status NOT IN ('refunded', 'expired')",
                           (event.created_at, now, sub_id))
        if cur.rowcount:
            change_plan(conn, charge["account_id"], snapshot.auth.default_plan, now=now, source="creem")
    return "refund recorded"

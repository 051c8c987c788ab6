"""The outbox: the one way any feature announces an event.

`emit(conn, ...)` runs inside the caller's write transaction (the `fn` handed
to `Store.write` / `write_once`), so the event exists exactly when the change
that caused it committed: a crash before the commit loses both, a crash after
it loses neither. Delivery reads the outbox later and never runs on the
request path.

    webhook_events   one row per event: its id (the `webhook-id` every retry
                     repeats), type, the account it belongs to (NULL: a
                     system event for the YAML endpoints), thin JSON data
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

import orjson
import sqlite_utils

migrations = sqlite_utils.Migrations("bluesminds.webhooks")

# Events an account's own endpoints may receive, and the system-wide ones that
# only the endpoints configured in YAML get (DESIGN.md, "Outbound webhooks").
ACCOUNT_EVENTS = frozenset({
    "key.created", "key.revoked", "key.rotated", "usage.threshold", "budget.exceeded",
    "invoice.finalized", "payment.succeeded", "payment.refunded",
})
SYSTEM_EVENTS = frozenset({"upstream.down", "upstream.up", "config.reload_failed"})
EVENT_TYPES = ACCOUNT_EVENTS | SYSTEM_EVENTS


@migrations(name="001_webhook_events")
def _events(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE webhook_events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            account_id INTEGER,
            data TEXT NOT NULL,
            created_at REAL NOT NULL
        )""")
    db.execute("CREATE INDEX webhook_events_account ON webhook_events (account_id, created_at)")


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def emit(conn: sqlite3.Connection, event_type: str, data: dict[str, Any], *, now: float,
         account_id: int | None = None, event_id: str | None = None) -> str:
    """Record one event in the caller's transaction; returns its id.

    `data` is thin: ids and figures, never a secret. `account_id` None marks a
    system event. A given `event_id` makes the call idempotent: the same id
    twice records one event."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    if (event_type in SYSTEM_EVENTS) != (account_id is None):
        raise ValueError(f"{event_type} is {'a system' if event_type in SYSTEM_EVENTS else 'an account'} "
                         "event: account_id must be " + ("None" if event_type in SYSTEM_EVENTS else "given"))
    event_id = event_id or new_event_id()
    conn.execute(
        "INSERT OR IGNORE INTO webhook_events (id, type, account_id, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (event_id, event_type, account_id, orjson.dumps(data).decode(), now))
    return event_id

"""The outbox: the one way any feature announces an event.

`emit(conn, ...)` runs inside the caller's write transaction (the `fn` handed
to `Store.write` / `write_once`), so the event exists exactly when the change
that caused it committed: a crash before the commit loses both, a crash after
it loses neither. In the same transaction it fans out one delivery row per
endpoint that subscribes, so what is owed to whom is durable too; delivery
(delivery.py) reads those rows later and never runs on the request path.

    webhook_events      one row per event: its id (the `webhook-id` every retry
                        repeats), type, the account it belongs to (NULL: a
                        system event), thin JSON data
    webhook_endpoints   where events go: an account's own (source 'api', secret
                        encrypted) or the YAML's (source 'config', account NULL,
                        secret read from the environment, never stored)
    webhook_deliveries  one row per (event, endpoint): state, attempts, when due
    webhook_attempts    one row per HTTP attempt of a delivery
    webhook_fired       "this already fired" records for events that happen
                        once per threshold, window or bad config content
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
# Sent by POST /api/webhooks/{id}/test to that endpoint alone; no feature emits it.
TEST_EVENT = "webhook.test"


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


@migrations(name="002_webhook_endpoints_deliveries")
def _endpoints_deliveries(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE webhook_endpoints (
            id INTEGER PRIMARY KEY,
            account_id INTEGER,
            source TEXT NOT NULL CHECK (source IN ('api', 'config')),
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            events TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            secret_ciphertext BLOB,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            disabled_at REAL,
            disabled_reason TEXT
        )""",
        "CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id)",
        # A YAML endpoint is known by its name across restarts and reloads.
        "CREATE UNIQUE INDEX webhook_endpoints_config_name ON webhook_endpoints (name) "
        "WHERE source = 'config'",
        """CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL REFERENCES webhook_events(id),
            endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
            state TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            last_status INTEGER,
            last_error TEXT,
            created_at REAL NOT NULL,
            delivered_at REAL,
            UNIQUE (event_id, endpoint_id)
        )""",
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) "
        "WHERE state = 'pending'",
        "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)",
        """CREATE TABLE webhook_attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            at REAL NOT NULL,
            status INTEGER,
            error TEXT,
            duration_ms REAL NOT NULL
        )""",
        "CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, number)",
        """CREATE TABLE webhook_fired (
            key TEXT PRIMARY KEY,
            event_id TEXT NOT NULL,
            at REAL NOT NULL
        ) WITHOUT ROWID""",
    ):
        db.execute(statement)


@migrations(name="003_delivery_lease")
def _delivery_lease(db: sqlite_utils.Database) -> None:
    # A worker claims a due delivery until this time before sending it, so two
    # workers on one database never send the same attempt (delivery.py). The
    # claimer is a worker slot (host:index): the worker restarted in that slot
    # knows its predecessor is dead and takes the claims back at once.
    db.execute("ALTER TABLE webhook_deliveries ADD COLUMN claimed_until REAL")
    db.execute("ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT")


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


# Endpoints that take an event: active, subscribed to its type (or '*'), and
# either the account's own or a YAML one (which sees every account's events).
_FAN_OUT = """
INSERT INTO webhook_deliveries (event_id, endpoint_id, state, next_attempt_at, created_at)
SELECT :event_id, e.id, 'pending', :now, :now FROM webhook_endpoints e
WHERE e.disabled_at IS NULL
  AND (e.source = 'config' OR (e.account_id = :account_id AND :account_id IS NOT NULL))
  AND (e.events LIKE '%"' || :type || '"%' OR e.events LIKE '%"*"%')
ON CONFLICT DO NOTHING
"""


def emit(conn: sqlite3.Connection, event_type: str, data: dict[str, Any], *, now: float,
         account_id: int | None = None, event_id: str | None = None) -> str:
    """Record one event in the caller's transaction, with a pending delivery for
    every endpoint that subscribes to it; returns its id.

    `data` is thin: ids and figures, never a secret. `account_id` None marks a
    system event. A given `event_id` makes the call idempotent: the same id
    twice records one event (and its deliveries once)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    if (event_type in SYSTEM_EVENTS) != (account_id is None):
        raise ValueError(f"{event_type} is {'a system' if event_type in SYSTEM_EVENTS else 'an account'} "
                         "event: account_id must be " + ("None" if event_type in SYSTEM_EVENTS else "given"))
    event_id = event_id or new_event_id()
    cursor = conn.execute(
        "INSERT INTO webhook_events (id, type, account_id, data, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (event_id, event_type, account_id, orjson.dumps(data).decode(), now))
    if cursor.rowcount:
        conn.execute(_FAN_OUT, {"event_id": event_id, "now": now, "account_id": account_id,
                                "type": event_type})
    return event_id


def emit_test(conn: sqlite3.Connection, endpoint_id: int, account_id: int | None, *, now: float) -> int:
    """A test event for one endpoint only; returns its delivery's id."""
    event_id = new_event_id()
    conn.execute(
        "INSERT INTO webhook_events (id, type, account_id, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (event_id, TEST_EVENT, account_id, orjson.dumps({"endpoint_id": endpoint_id}).decode(), now))
    cursor = conn.execute(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, next_attempt_at, created_at) "
        "VALUES (?, ?, 'pending', ?, ?)", (event_id, endpoint_id, now, now))
    return cursor.lastrowid


def emit_once(conn: sqlite3.Connection, once_key: str, event_type: str, data: dict[str, Any], *,
              now: float, account_id: int | None = None) -> str | None:
    """`emit`, unless an event was already emitted under `once_key` (a threshold
    in a window, a bad config digest): the record and the event commit together,
    so a retry of the same transaction, or a restart, never fires twice.
    Returns the new event's id, or None when it had fired before."""
    event_id = new_event_id()
    cursor = conn.execute("INSERT INTO webhook_fired (key, event_id, at) VALUES (?, ?, ?) "
                          "ON CONFLICT DO NOTHING",
                          (once_key, event_id, now))
    if not cursor.rowcount:
        return None
    return emit(conn, event_type, data, now=now, account_id=account_id, event_id=event_id)

"""Webhook endpoints and their deliveries: rows, public shapes and SQL.

Functions that take a connection run on whichever thread the caller chose
(`Store.read` / `Store.write`). `list_endpoints` and `list_deliveries` are the
data functions other views (the dashboard's settings and admin pages) call.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

import orjson
from aiohttp import web

from ..appkeys import STORE
from ..config.snapshot import WebhookEndpointConfig

DISABLED_GONE = "the receiver answered 410 Gone"
DISABLED_BY_USER = "disabled through the API"
DISABLED_REMOVED = "removed from the config"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    account_id: int | None
    source: str  # "api" | "config"
    name: str
    url: str
    events: tuple[str, ...]
    description: str
    secret_ciphertext: bytes | None
    created_at: float
    updated_at: float
    disabled_at: float | None
    disabled_reason: str | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def public(self) -> dict[str, Any]:
        return {
            "object": "webhook_endpoint",
            "id": self.id,
            "user_id": self.account_id,
            "source": self.source,
            "name": self.name,
            "url": self.url,
            "events": list(self.events),
            "description": self.description,
            "state": "active" if self.active else "disabled",
            "disabled_reason": self.disabled_reason,
            "disabled_at": _seconds(self.disabled_at),
            "created_at": _seconds(self.created_at),
        }


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


_COLUMNS = ("id, account_id, source, name, url, events, description, secret_ciphertext, created_at, "
            "updated_at, disabled_at, disabled_reason")


def _endpoint(row: sqlite3.Row) -> Endpoint:
    return Endpoint(row[0], row[1], row[2], row[3], row[4], tuple(orjson.loads(row[5])), row[6], row[7],
                    row[8], row[9], row[10], row[11])


def get_endpoint(conn: sqlite3.Connection, endpoint_id: int) -> Endpoint | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).fetchone()
    return None if row is None else _endpoint(row)


def endpoints_of(conn: sqlite3.Connection, account_id: int | None) -> list[Endpoint]:
    """An account's endpoints; None: every endpoint, the YAML ones first."""
    if account_id is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints ORDER BY source = 'api', id")
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE account_id = ? ORDER BY id",
                            (account_id,))
    return [_endpoint(row) for row in rows]


def count_endpoints(conn: sqlite3.Connection, account_id: int) -> int:
    return conn.execute("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = ?",
                        (account_id,)).fetchone()[0]


def insert_endpoint(conn: sqlite3.Connection, *, account_id: int, name: str, url: str,
                    events: Iterable[str], description: str, seal, now: float) -> Endpoint:
    """`seal(endpoint_id) -> ciphertext` encrypts the secret bound to the new row's id."""
    cursor = conn.execute(
        "INSERT INTO webhook_endpoints (account_id, source, name, url, events, description, created_at, "
        "updated_at) VALUES (?, 'api', ?, ?, ?, ?, ?, ?)",
        (account_id, name, url, orjson.dumps(list(events)).decode(), description, now, now))
    endpoint_id = cursor.lastrowid
    conn.execute("UPDATE webhook_endpoints SET secret_ciphertext = ? WHERE id = ?",
                 (seal(endpoint_id), endpoint_id))
    return get_endpoint(conn, endpoint_id)


def update_endpoint(conn: sqlite3.Connection, endpoint_id: int, changes: dict[str, Any],
                    now: float) -> Endpoint:
    columns: dict[str, Any] = {}
    for name in ("url", "description", "name"):
        if name in changes:
            columns[name] = changes[name]
    if "events" in changes:
        columns["events"] = orjson.dumps(list(changes["events"])).decode()
    if "active" in changes:
        columns["disabled_at"] = None if changes["active"] else now
        columns["disabled_reason"] = None if changes["active"] else DISABLED_BY_USER
    if columns:
        columns["updated_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE webhook_endpoints SET {assignments} WHERE id = ?",
                     (*columns.values(), endpoint_id))
    return get_endpoint(conn, endpoint_id)


def delete_endpoint(conn: sqlite3.Connection, endpoint_id: int) -> None:
    conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))


def disable_endpoint(conn: sqlite3.Connection, endpoint_id: int, reason: str, now: float) -> None:
    conn.execute("UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?, updated_at = ? "
                 "WHERE id = ? AND disabled_at IS NULL", (now, reason, now, endpoint_id))


def sync_config_endpoints(conn: sqlite3.Connection, configured: Iterable[WebhookEndpointConfig],
                          now: float) -> None:
    """Make the 'config' rows match the YAML: by name, url and events follow the
    file; a name gone from it is disabled (its history kept), and comes back if
    the name returns. A 410 or an admin's disable is left as it is."""
    names = []
    for spec in configured:
        names.append(spec.name)
        events = orjson.dumps(list(spec.events)).decode()
        conn.execute(
            "INSERT INTO webhook_endpoints (account_id, source, name, url, events, created_at, updated_at) "
            "VALUES (NULL, 'config', ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) WHERE source = 'config' DO UPDATE SET url = excluded.url, "
            "events = excluded.events, updated_at = excluded.updated_at, "
            "disabled_at = CASE WHEN webhook_endpoints.disabled_reason = ? THEN NULL "
            "ELSE webhook_endpoints.disabled_at END, "
            "disabled_reason = CASE WHEN webhook_endpoints.disabled_reason = ? THEN NULL "
            "ELSE webhook_endpoints.disabled_reason END",
            (spec.name, spec.url, events, now, now, DISABLED_REMOVED, DISABLED_REMOVED))
    # An empty IN () is SQLite's extension, not SQL.
    kept = f" AND name NOT IN ({', '.join('?' for _ in names)})" if names else ""
    conn.execute(
        f"UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?, updated_at = ? "
        f"WHERE source = 'config' AND disabled_at IS NULL{kept}",
        (now, DISABLED_REMOVED, now, *names))


# -- deliveries --------------------------------------------------------------------

_DELIVERY = """
SELECT d.id, d.event_id, ev.type, d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error,
       d.created_at, d.delivered_at
FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id
"""


def _delivery(row: sqlite3.Row, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "webhook_delivery",
        "id": row[0],
        "event_id": row[1],
        "event_type": row[2],
        "state": row[3],
        "attempts": row[4],
        "next_attempt_at": _seconds(row[5]) if row[3] == "pending" else None,
        "last_status": row[6],
        "last_error": row[7],
        "created_at": _seconds(row[8]),
        "delivered_at": _seconds(row[9]),
        "attempt_log": attempts,
    }


def deliveries_page(conn: sqlite3.Connection, endpoint_id: int, *, limit: int = 50,
                    before: int | None = None, state: str | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Newest first, with every attempt of each, in two queries whatever the page size."""
    where, params = ["d.endpoint_id = ?"], [endpoint_id]
    if before is not None:
        where.append("d.id < ?")
        params.append(before)
    if state is not None:
        where.append("d.state = ?")
        params.append(state)
    rows = conn.execute(_DELIVERY + f"WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT ?",
                        (*params, limit + 1)).fetchall()
    has_more = len(rows) > limit
    rows = rows[:limit]
    attempts: dict[int, list[dict[str, Any]]] = {row[0]: [] for row in rows}
    if rows:
        marks = ", ".join("?" for _ in rows)
        for delivery_id, number, at, status, error, duration in conn.execute(
                f"SELECT delivery_id, number, at, status, error, duration_ms FROM webhook_attempts "
                f"WHERE delivery_id IN ({marks}) ORDER BY delivery_id, number", list(attempts)):
            attempts[delivery_id].append({"number": number, "at": _seconds(at), "status": status,
                                          "error": error, "duration_ms": round(duration, 1)})
    return [_delivery(row, attempts[row[0]]) for row in rows], has_more


def get_delivery(conn: sqlite3.Connection, endpoint_id: int, delivery_id: int) -> dict[str, Any] | None:
    row = conn.execute(_DELIVERY + "WHERE d.id = ? AND d.endpoint_id = ?", (delivery_id, endpoint_id)).fetchone()
    if row is None:
        return None
    attempts = [{"number": n, "at": _seconds(at), "status": s, "error": e, "duration_ms": round(ms, 1)}
                for n, at, s, e, ms in conn.execute(
                    "SELECT number, at, status, error, duration_ms FROM webhook_attempts "
                    "WHERE delivery_id = ? ORDER BY number", (delivery_id,))]
    return _delivery(row, attempts)


def retry_delivery(conn: sqlite3.Connection, delivery_id: int, now: float) -> None:
    conn.execute("UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ? WHERE id = ?",
                 (now, delivery_id))


# -- what other views call ---------------------------------------------------------


async def list_endpoints(app: web.Application, user_id: int | None) -> list[dict[str, Any]]:
    """Public shapes of an account's endpoints, or of every endpoint for None (admins)."""
    found = await app[STORE].read(lambda conn: endpoints_of(conn, user_id))
    return [endpoint.public() for endpoint in found]


async def list_deliveries(app: web.Application, endpoint_id: int, *, limit: int = 50,
                          before: int | None = None, state: str | None = None
                          ) -> tuple[list[dict[str, Any]], bool]:
    """One page of an endpoint's deliveries, newest first, each with its attempts;
    and whether older ones follow (pass the last id as `before`)."""
    return await app[STORE].read(
        lambda conn: deliveries_page(conn, endpoint_id, limit=limit, before=before, state=state))

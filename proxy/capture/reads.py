"""Reading a usage row with its capture: one primary-key read each."""

from __future__ import annotations

from typing import Any, Iterable

_CAPTURE = ("usage_id, captured_at, request_body, request_truncated, response_kind, response_body, "
            "response_truncated, bytes")


def usage_row(conn, usage_id: int) -> dict[str, Any] | None:
    cursor = conn.execute("SELECT * FROM usage WHERE id = ?", (usage_id,))
    row = cursor.fetchone()
    if row is None:
        return None
    out = dict(zip([d[0] for d in cursor.description], row))
    for flag in ("estimated", "partial", "stream"):
        out[flag] = bool(out[flag])
    out["cost_usd"] = out["cost_nano"] / 1e9
    return out


def capture_of(conn, usage_id: int) -> dict[str, Any] | None:
    found = captures_of(conn, [usage_id])
    return found.get(usage_id)


def captures_of(conn, usage_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The captures of these rows (at most a page of them), by usage id."""
    ids = [int(i) for i in usage_ids]
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    out = {}
    for row in conn.execute(f"SELECT {_CAPTURE} FROM usage_captures WHERE usage_id IN ({marks})", ids):
        out[row[0]] = {
            "captured_at": row[1],
            "request": {"body": row[2], "truncated": bool(row[3])},
            "response": {"kind": row[4], "body": row[5], "truncated": bool(row[6])},
            "bytes": row[7],
        }
    return out


def replay_row_id(conn, user_id: int, since: float, request_id: str) -> int | None:
    """The id of the row a replay just wrote: found through the (user_id, ts) index."""
    row = conn.execute("SELECT id FROM usage WHERE user_id = ? AND ts >= ? AND request_id = ? "
                       "ORDER BY id DESC LIMIT 1", (user_id, since, request_id)).fetchone()
    return None if row is None else row[0]


def total_bytes(conn) -> int:
    return conn.execute("SELECT bytes FROM capture_totals WHERE id = 1").fetchone()[0]

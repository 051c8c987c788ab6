"""Captures reach the database with their usage rows: a batch hook of the usage
recorder (proxy/usage/recorder.py) writes them in the batch's own transaction,
so a capture never exists without its row and never costs the hot path a write.

The total byte cap is kept in the same transaction (the oldest captures go
first); the retention sweep deletes expired captures in bounded chunks.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from .record import Captured
from .settings import CaptureSettings

log = logging.getLogger("bluesminds.capture")

SWEEP_CHUNK = 2_000  # captures deleted per transaction, so the writer is never held long


def batch_hook(settings: Callable[[], CaptureSettings]):
    def write_captures(conn, batch: Sequence, _notes) -> None:
        captured = [rec for rec in batch if rec.capture is not None]
        if captured:
            insert_captures(conn, batch, captured, settings().max_total_bytes)
    return write_captures


def insert_captures(conn, batch: Sequence, captured: Sequence, max_total_bytes: int) -> None:
    # The batch's rows are the newest ones in `usage` (the writer inserted them just
    # now, in order); a row the database refused is simply not among them.
    recent = conn.execute("SELECT id, request_id, ts, user_id FROM usage ORDER BY id DESC LIMIT ?",
                          (len(batch),)).fetchall()
    ids = {(row[1], row[2], row[3]): row[0] for row in recent}
    added = 0
    for rec in captured:
        usage_id = ids.get((rec.request_id, rec.ts, rec.user_id))
        if usage_id is None:
            continue
        cap: Captured = rec.capture
        size = cap.bytes
        conn.execute(
            "INSERT INTO usage_captures (usage_id, user_id, captured_at, request_body, request_truncated, "
            "response_kind, response_body, response_truncated, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (usage_id) DO NOTHING",
            (usage_id, rec.user_id, cap.captured_at, cap.request_body, int(cap.request_truncated),
             cap.response_kind, cap.response_body, int(cap.response_truncated), size))
        added += size
    total = _add_total(conn, added)
    if total > max_total_bytes:
        _drop_oldest(conn, total - max_total_bytes)


def _add_total(conn, delta: int) -> int:
    conn.execute("UPDATE capture_totals SET bytes = bytes + ? WHERE id = 1", (delta,))
    return conn.execute("SELECT bytes FROM capture_totals WHERE id = 1").fetchone()[0]


def _drop_oldest(conn, excess: int) -> None:
    freed, last = 0, None
    while freed < excess:
        rows = conn.execute(
            "SELECT usage_id, bytes FROM usage_captures WHERE usage_id > ? ORDER BY usage_id LIMIT 500",
            (-1 if last is None else last,)).fetchall()
        if not rows:
            break
        for usage_id, size in rows:
            freed += size
            last = usage_id
            if freed >= excess:
                break
    if last is not None:
        conn.execute("DELETE FROM usage_captures WHERE usage_id <= ?", (last,))
        _add_total(conn, -freed)


def sweep_chunk(conn, before: int) -> int:
    """Delete up to SWEEP_CHUNK captures taken before `before`; how many went."""
    rows = conn.execute("SELECT usage_id, bytes FROM usage_captures WHERE captured_at < ? "
                        "ORDER BY captured_at LIMIT ?", (before, SWEEP_CHUNK)).fetchall()
    if not rows:
        return 0
    marks = ", ".join("?" for _ in rows)
    conn.execute(f"DELETE FROM usage_captures WHERE usage_id IN ({marks})", [r[0] for r in rows])
    _add_total(conn, -sum(r[1] for r in rows))
    return len(rows)


async def sweep(db, now: float, retention_days: float) -> int:
    """Delete every capture older than the retention; returns how many."""
    before = int(now - retention_days * 86400)
    deleted = 0
    while True:
        n = await db.write(lambda conn: sweep_chunk(conn, before))
        deleted += n
        if n < SWEEP_CHUNK:
            return deleted

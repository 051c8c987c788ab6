"""Tables for captured bodies (migration set "bluesminds.capture").

`usage_captures` holds at most one row per usage row, keyed by the usage id,
so a log detail is one primary-key read. It is a table of its own, not columns
on `usage`, so the million-row logs and rollups never page through bodies, and
the retention sweep deletes bodies without touching the accounting rows.
`capture_totals` is a single row with the bytes held, kept in the same
transaction as every insert and delete, so the total cap is checked without
summing the table.

Times are integer epoch seconds computed in Python (portable to PostgreSQL).
"""

from __future__ import annotations

import sqlite_utils

migrations = sqlite_utils.Migrations("bluesminds.capture")


@migrations(name="001_captures")
def _captures(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE usage_captures (
            usage_id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL,
            captured_at INTEGER NOT NULL,
            request_body TEXT NOT NULL,
            request_truncated INTEGER NOT NULL,
            response_kind TEXT NOT NULL,
            response_body TEXT NOT NULL,
            response_truncated INTEGER NOT NULL,
            bytes INTEGER NOT NULL
        )
        """
    )
    # The sweep deletes the oldest first: by time for retention, by id for the total cap.
    db.execute("CREATE INDEX usage_captures_at ON usage_captures (captured_at)")
    db.execute("CREATE TABLE capture_totals (id INTEGER PRIMARY KEY, bytes INTEGER NOT NULL)")
    db.execute("INSERT INTO capture_totals (id, bytes) VALUES (1, 0)")
    # Opt-in per key, set by the key's owner (PATCH /api/keys/{id} {"capture": true}).
    db.execute("ALTER TABLE api_keys ADD COLUMN capture INTEGER NOT NULL DEFAULT 0")
    # The usage row a replay re-sent; NULL for every ordinary request.
    db.execute("ALTER TABLE usage ADD COLUMN replay_of INTEGER")

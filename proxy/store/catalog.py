"""Questions about the schema itself, asked the same way of both backends."""

from __future__ import annotations

from typing import Any


def table_exists(conn: Any, name: str) -> bool:
    if getattr(conn, "dialect", "sqlite") == "postgres":
        row = conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()
        return bool(row[0])
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None

"""Login sessions: 256 random bits, stored only as a SHA-256 digest.

A session token is as random as a key, so a fast hash is as good as bcrypt
here and keeps every management request to one indexed read.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from .users import USER_COLUMNS, User, user_by_id, user_from_row

TOKEN_PREFIX = "bms_"
COOKIE_NAME = "bm_session"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    user: User
    expires_at: float


def insert_session(
    conn: sqlite3.Connection, user_id: int, token: str, *, now: float, ttl: float
) -> Session:
    expires_at = now + ttl
    cursor = conn.execute(
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (user_id, token_hash(token), now, expires_at),
    )
    user = user_by_id(conn, user_id)
    return Session(cursor.lastrowid, user, expires_at)


def active_session(conn: sqlite3.Connection, token: str, now: float) -> Session | None:
    """The live session for a token, or None if unknown, expired, revoked or
    its account is disabled."""
    columns = ", ".join(f"u.{c.strip()}" for c in USER_COLUMNS.split(","))
    row = conn.execute(
        f"SELECT s.id, s.expires_at, {columns} FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND u.disabled = 0",
        (token_hash(token), now),
    ).fetchone()
    if row is None:
        return None
    return Session(row[0], user_from_row(tuple(row)[2:]), row[1])


def revoke_session(conn: sqlite3.Connection, session_id: int, now: float) -> None:
    conn.execute(
        "UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, session_id)
    )


def revoke_user_sessions(
    conn: sqlite3.Connection, user_id: int, now: float, *, keep: int | None = None
) -> int:
    cursor = conn.execute(
        "UPDATE sessions SET revoked_at = ? "
        "WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT ?",
        (now, user_id, keep),
    )
    return cursor.rowcount


def prune_sessions(conn: sqlite3.Connection, now: float) -> int:
    """Delete sessions that can never be used again: expired or revoked."""
    cursor = conn.execute("DELETE FROM sessions WHERE expires_at <= ? OR revoked_at IS NOT NULL", (now,))
    return cursor.rowcount

"""Schema of accounts, sessions, invites and API keys, and their change log.

Every write that can change what a credential may do (revoke, rotate, expiry,
plan, role, disable) appends to `auth_events` in the same transaction. The
server invalidates its own caches directly after such a write; the log is how
it learns about writes made by another process, such as the CLI.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

# Applied by the store: listed in proxy/store/migrations.py.
migrations = sqlite_utils.Migrations("bluesminds.auth")

# Enough history for any poller that is at most this many changes behind.
_EVENTS_KEPT = 10_000


@migrations(name="001_accounts_sessions_keys")
def _accounts_sessions_keys(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            plan TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            token_hash BLOB NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL
        )""",
        "CREATE INDEX sessions_user ON sessions(user_id)",
        """CREATE TABLE invites (
            id INTEGER PRIMARY KEY,
            code_hash BLOB NOT NULL UNIQUE,
            plan TEXT,
            note TEXT NOT NULL DEFAULT '',
            created_by INTEGER REFERENCES users(id),
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_by INTEGER REFERENCES users(id),
            used_at REAL
        )""",
        """CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            name TEXT NOT NULL,
            scopes TEXT NOT NULL,
            models TEXT,
            limits TEXT NOT NULL DEFAULT '{}',
            expires_at REAL,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL
        )""",
        "CREATE INDEX api_keys_user ON api_keys(user_id)",
        # A key keeps its id across rotations; each rotation adds a secret and
        # retires the previous one, at once or after the overlap window.
        """CREATE TABLE api_key_secrets (
            id INTEGER PRIMARY KEY,
            key_id INTEGER NOT NULL REFERENCES api_keys(id),
            lookup_id TEXT NOT NULL UNIQUE,
            secret_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            retires_at REAL
        )""",
        "CREATE INDEX api_key_secrets_key ON api_key_secrets(key_id)",
        """CREATE TABLE auth_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'key')),
            ref_id INTEGER NOT NULL,
            at REAL NOT NULL
        )""",
    ):
        db.execute(statement)


@migrations(name="002_default_scopes_follow_new_families")
def _all_scopes(db: sqlite_utils.Database) -> None:
    # Keys created with the default scopes used to store the list of the day,
    # so a route family added later was closed to them. They now store "*",
    # every scope there is or will be; a key made with chosen scopes keeps them.
    db.execute("""UPDATE api_keys SET scopes = '["*"]'
                  WHERE scopes = '["chat","completions","embeddings","models"]'""")


@migrations(name="003_key_tags")
def _key_tags(db: sqlite_utils.Database) -> None:
    # Short labels the owner puts on a key; routing rules can match them.
    db.execute("ALTER TABLE api_keys ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'")


def record_event(conn: sqlite3.Connection, kind: str, ref_id: int, now: float) -> None:
    cursor = conn.execute(
        "INSERT INTO auth_events (kind, ref_id, at) VALUES (?, ?, ?)", (kind, ref_id, now)
    )
    if cursor.lastrowid % 1000 == 0:
        conn.execute("DELETE FROM auth_events WHERE seq <= ?", (cursor.lastrowid - _EVENTS_KEPT,))


def last_event_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM auth_events").fetchone()[0]


def events_after(conn: sqlite3.Connection, seq: int) -> list[tuple[int, str, int]]:
    return [
        (row[0], row[1], row[2])
        for row in conn.execute(
            "SELECT seq, kind, ref_id FROM auth_events WHERE seq > ? ORDER BY seq", (seq,)
        )
    ]

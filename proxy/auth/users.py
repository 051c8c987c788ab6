"""Accounts and invites: rows, e-mail normalisation and the SQL that changes them.

Functions take a connection so callers choose the thread: `db.write(...)` in
the server, `write_sync` in the CLI. Every change that affects what a user's
keys may do is logged with `record_event`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ..config.snapshot import PlanConfig, Snapshot
from ..errors import Conflict, InvalidRequest, NotFound
from ..store.errors import IntegrityError
from .tables import record_event

ROLES = ("user", "admin")
INVITE_PREFIX = "bmi_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_MAX_EMAIL = 254


# Control, format (zero-width space and joiner, BOM, bidi marks), surrogate,
# private-use and unassigned characters: invisible or unstable, they would let
# two addresses look alike on screen and in the admin's list.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class EmailTaken(Conflict):
    """The address already has an account."""


def normalize_email(raw: str, *, param: str = "email") -> str:
    """One spelling per mailbox: NFKC, trimmed, lower-cased, nothing invisible."""
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    if any(unicodedata.category(ch) in _INVISIBLE for ch in email):
        raise InvalidRequest(
            "The e-mail address contains control or invisible characters (such as a "
            "zero-width space); type it again without them.",
            param=param,
        )
    if len(email) > _MAX_EMAIL or not _EMAIL.match(email):
        raise InvalidRequest(
            "This is not an e-mail address; expected something like name@example.com.",
            param=param,
        )
    return email


def plan_for(snapshot: Snapshot, name: str) -> PlanConfig:
    """A user's plan in this snapshot; a plan removed from the YAML falls back
    to the default plan rather than failing every request of its users."""
    plan = snapshot.plans.get(name) or snapshot.plans.get(snapshot.auth.default_plan)
    return plan if plan is not None else PlanConfig(name=snapshot.auth.default_plan)


def check_plan_name(snapshot: Snapshot, name: str, *, param: str = "plan") -> str:
    if name not in snapshot.plans:
        known = ", ".join(sorted(snapshot.plans)) or "none configured"
        raise InvalidRequest(f"Unknown plan '{name}'; plans: {known}.", param=param)
    return name


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    name: str
    plan: str
    role: str
    disabled: bool
    created_at: float
    password_hash: str = field(repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict[str, Any]:
        return {
            "object": "user",
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "plan": self.plan,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": int(self.created_at),
        }


USER_COLUMNS = "id, email, name, plan, role, disabled, created_at, password_hash"


def user_from_row(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7])


def insert_user(
    conn: sqlite3.Connection,
    *,
    email: str,
    password_hash: str,
    plan: str,
    now: float,
    name: str = "",
    role: str = "user",
) -> User:
    try:
        cursor = conn.execute(
            "INSERT INTO users (email, name, password_hash, plan, role, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (email, name, password_hash, plan, role, now, now),
        )
    except IntegrityError:
        raise EmailTaken(
            "An account with this e-mail address already exists; log in instead.", param="email"
        ) from None
    return user_by_id(conn, cursor.lastrowid)


def user_by_id(conn: sqlite3.Connection, user_id: int) -> User | None:
    row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
    return user_from_row(row)


def user_by_email(conn: sqlite3.Connection, email: str) -> User | None:
    row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE email = ?", (email,)).fetchone()
    return user_from_row(row)


def find_user(conn: sqlite3.Connection, ref: str) -> User | None:
    """By numeric id or by e-mail, as a CLI argument names a user."""
    if ref.isascii() and ref.isdigit():
        return user_by_id(conn, int(ref))
    return user_by_email(conn, normalize_email(ref))


def list_users(
    conn: sqlite3.Connection, *, after: int = 0, limit: int = 100, filters: dict[str, Any] | None = None
) -> list[User]:
    where, params = ["id > ?"], [after]
    for column, value in (filters or {}).items():
        if column == "email":
            where.append("instr(email, ?) > 0")
            params.append(value.lower())
        elif column in ("plan", "role", "disabled"):
            where.append(f"{column} = ?")
            params.append(value)
    params.append(limit)
    rows = conn.execute(
        f"SELECT {USER_COLUMNS} FROM users WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", params
    )
    return [user_from_row(row) for row in rows]


# Columns each caller may change; anything else never reaches the SQL.
SELF_SERVICE = frozenset({"name", "email", "password_hash"})
ADMIN_ONLY = frozenset({"plan", "role", "disabled"})
# Changes that alter what the user's keys may do, so caches must hear of them.
_AFFECTS_KEYS = frozenset({"plan", "role", "disabled", "email"})


def update_user(conn: sqlite3.Connection, user_id: int, changes: dict[str, Any], now: float) -> User:
    unknown = set(changes) - SELF_SERVICE - ADMIN_ONLY
    if unknown:
        raise ValueError(f"not user columns: {sorted(unknown)}")
    if changes:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        try:
            cursor = conn.execute(
                f"UPDATE users SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), now, user_id),
            )
        except IntegrityError:
            raise Conflict("Another account already uses this e-mail address.", param="email") from None
        if cursor.rowcount == 0:
            raise NotFound(f"No user with id {user_id}.")
        if _AFFECTS_KEYS & set(changes):
            record_event(conn, "user", user_id, now)
    user = user_by_id(conn, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    return user


# -- invites ------------------------------------------------------------------


def new_invite_code() -> str:
    return INVITE_PREFIX + secrets.token_urlsafe(24)


def _code_hash(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()


def insert_invite(
    conn: sqlite3.Connection,
    *,
    code: str,
    plan: str | None,
    note: str,
    created_by: int | None,
    now: float,
    expires_at: float,
) -> dict[str, Any]:
    cursor = conn.execute(
        "INSERT INTO invites (code_hash, plan, note, created_by, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (_code_hash(code), plan, note, created_by, now, expires_at),
    )
    return invite_by_id(conn, cursor.lastrowid)


def invite_by_id(conn: sqlite3.Connection, invite_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, plan, note, created_by, created_at, expires_at, used_by, used_at "
        "FROM invites WHERE id = ?",
        (invite_id,),
    ).fetchone()
    return _invite(row)


def list_invites(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, plan, note, created_by, created_at, expires_at, used_by, used_at "
        "FROM invites ORDER BY id"
    )
    return [_invite(row) for row in rows]


def _invite(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "object": "invite",
        "id": row[0],
        "plan": row[1],
        "note": row[2],
        "created_by": row[3],
        "created_at": int(row[4]),
        "expires_at": int(row[5]),
        "used_by": row[6],
        "used_at": None if row[7] is None else int(row[7]),
    }


def claim_invite(conn: sqlite3.Connection, code: str, now: float) -> tuple[int, str | None]:
    """Mark an invite used (inside the signup's transaction) and return its id and plan."""
    row = conn.execute(
        "SELECT id, plan FROM invites WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
        (_code_hash(code), now),
    ).fetchone()
    if row is None:
        raise InvalidRequest(
            "This invite code is unknown, expired or already used; ask an administrator for a new one.",
            param="invite_code",
        )
    conn.execute("UPDATE invites SET used_at = ? WHERE id = ?", (now, row[0]))
    return row[0], row[1]


def attach_invite(conn: sqlite3.Connection, invite_id: int, user_id: int) -> None:
    conn.execute("UPDATE invites SET used_by = ? WHERE id = ?", (user_id, invite_id))

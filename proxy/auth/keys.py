"""API keys: the `bm-` format, the rules a key's settings obey, and their SQL.

A key reads `bm-<lookup id>_<secret>`. The lookup id (12 hex digits) is not
secret: it is indexed and shown in listings. The secret is 32 random bytes
and only its bcrypt hash is stored. A key keeps its id for life; rotation
gives it a new secret and retires the old one at once or after an overlap.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson

from ..config.snapshot import PlanConfig, Snapshot
from ..errors import Conflict, InvalidRequest, NotFound
from ..webhooks.outbox import emit
from .principal import SCOPES, KeyLimits
from .tables import record_event
from .users import User, user_by_id

KEY_PREFIX = "bm-"
_KEY = re.compile(r"^bm-([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(KeyLimits))
# 9999-12-31T23:59:59Z: later than any real expiry, and still a date every
# listing can print (a larger value once made the owner's key list fail for good).
MAX_EXPIRES_AT = 253402300799


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def format_key(lookup_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{lookup_id}_{secret}"


def parse_key(text: str) -> tuple[str, str] | None:
    """(lookup id, secret) of a well-formed key, else None."""
    match = _KEY.match(text)
    return (match.group(1), match.group(2)) if match else None


# -- what a key may be set to -------------------------------------------------


def check_settings(
    body: Mapping[str, Any], *, plan: PlanConfig, snapshot: Snapshot, now: float
) -> dict[str, Any]:
    """Column values for the fields present in a (schema-valid) body, after
    holding each one against the owner's plan; a field that would widen the
    plan is refused, naming it."""
    columns: dict[str, Any] = {}
    if "name" in body:
        columns["name"] = body["name"].strip()
    if "scopes" in body:
        columns["scopes"] = orjson.dumps([s for s in SCOPES if s in body["scopes"]]).decode()
    if "models" in body:
        models = body["models"]
        columns["models"] = None if models is None else orjson.dumps(
            _plan_models(models, plan, snapshot)
        ).decode()
    if "tags" in body:
        columns["tags"] = orjson.dumps(sorted(set(body["tags"]))).decode()
    if "limits" in body:
        limits = {k: v for k, v in body["limits"].items() if v is not None}
        for name, value in limits.items():
            cap = getattr(plan, name)
            if cap is not None and value > cap:
                raise InvalidRequest(
                    f"limits.{name} is {value}, above the {cap} of plan '{plan.name}'; "
                    "a key's limits can only tighten its plan's.",
                    param=f"limits.{name}",
                )
        columns["limits"] = orjson.dumps(limits).decode()
    if "capture" in body:
        columns["capture"] = int(body["capture"])
    if "cache" in body:
        columns["cache"] = None if body["cache"] is None else int(body["cache"])
    if "expires_at" in body:
        expires_at = body["expires_at"]
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest(
                "expires_at must be in the future, in Unix seconds; omit it or send null "
                "for a key that does not expire.",
                param="expires_at",
            )
        if expires_at is not None and expires_at > MAX_EXPIRES_AT:
            raise InvalidRequest(
                f"expires_at must be at most {MAX_EXPIRES_AT} (9999-12-31) in Unix seconds; "
                "send null for a key that does not expire.",
                param="expires_at",
            )
        columns["expires_at"] = expires_at
    return columns


def _plan_models(names: Iterable[str], plan: PlanConfig, snapshot: Snapshot) -> list[str]:
    """Canonical names (aliases resolved), each one within the plan."""
    canonical: list[str] = []
    for index, name in enumerate(names):
        model = snapshot.resolve_model(name)
        if model is None:
            raise InvalidRequest(
                f"Unknown model '{name}'; GET /v1/models lists the models you can use.",
                param=f"models[{index}]",
            )
        if not (plan.allows_model(name) or plan.allows_model(model.name)):
            raise InvalidRequest(
                f"Model '{name}' is not included in plan '{plan.name}'; "
                "a key can only be limited to models its plan allows.",
                param=f"models[{index}]",
            )
        if model.name not in canonical:
            canonical.append(model.name)
    return canonical


# -- rows -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    user_id: int
    name: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None
    limits: KeyLimits
    expires_at: float | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    lookup_id: str
    previous_retires_at: float | None  # an older secret still works until then
    capture: bool = False  # its requests' bodies are captured (redacted), for logs and replay
    tags: tuple[str, ...] = ()  # the owner's labels, which routing rules may match
    cache: bool | None = None  # the response cache: on, off, or None to follow the plan

    def public(self, *, last_used_at: float | None = None) -> dict[str, Any]:
        last_used = max(filter(None, (self.last_used_at, last_used_at)), default=None)
        return {
            "object": "api_key",
            "id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "prefix": KEY_PREFIX + self.lookup_id,
            "scopes": list(self.scopes),
            "models": None if self.models is None else list(self.models),
            "tags": list(self.tags),
            "limits": {k: v for k, v in dataclasses.asdict(self.limits).items() if v is not None},
            "expires_at": _seconds(self.expires_at),
            "created_at": _seconds(self.created_at),
            "last_used_at": _seconds(last_used),
            "revoked_at": _seconds(self.revoked_at),
            "previous_key_expires_at": _seconds(self.previous_retires_at),
            "capture": self.capture,
            "cache": self.cache,
        }


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


_SELECT = """
SELECT k.id, k.user_id, k.name, k.scopes, k.models, k.limits, k.expires_at, k.created_at,
       k.last_used_at, k.revoked_at,
       (SELECT lookup_id FROM api_key_secrets s WHERE s.key_id = k.id ORDER BY s.id DESC LIMIT 1),
       (SELECT max(retires_at) FROM api_key_secrets s WHERE s.key_id = k.id AND s.retires_at > ?),
       k.capture, k.tags, k.cache
FROM api_keys k
"""


ALL_SCOPES = '["*"]'  # stored for a key made with the default scopes: every family, now and later


def _scopes(stored: list[str]) -> tuple[str, ...]:
    return SCOPES if stored == ["*"] else tuple(stored)


def _key(row: sqlite3.Row) -> ApiKey:
    models = row[4]
    return ApiKey(
        id=row[0],
        user_id=row[1],
        name=row[2],
        scopes=_scopes(orjson.loads(row[3])),
        models=None if models is None else tuple(orjson.loads(models)),
        limits=KeyLimits(**orjson.loads(row[5])),
        expires_at=row[6],
        created_at=row[7],
        last_used_at=row[8],
        revoked_at=row[9],
        lookup_id=row[10],
        previous_retires_at=row[11],
        capture=bool(row[12]),
        tags=tuple(orjson.loads(row[13])),
        cache=None if row[14] is None else bool(row[14]),
    )


def get_key(conn: sqlite3.Connection, key_id: int, now: float) -> ApiKey | None:
    row = conn.execute(_SELECT + "WHERE k.id = ?", (now, key_id)).fetchone()
    return None if row is None else _key(row)


def list_keys(
    conn: sqlite3.Connection, now: float, *, user_id: int | None = None, include_revoked: bool = True
) -> list[ApiKey]:
    where, params = [], [now]
    if user_id is not None:
        where.append("k.user_id = ?")
        params.append(user_id)
    if not include_revoked:
        where.append("k.revoked_at IS NULL")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return [_key(row) for row in conn.execute(_SELECT + clause + "ORDER BY k.id", params)]


def insert_key(
    conn: sqlite3.Connection,
    *,
    user_id: int,
    columns: Mapping[str, Any],
    secret: str,
    secret_hash: str,
    now: float,
) -> tuple[ApiKey, str]:
    """The new key and its full text, which is never stored."""
    values = {"scopes": ALL_SCOPES, "limits": "{}", **columns}
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cursor = conn.execute(
        f"INSERT INTO api_keys (user_id, created_at, {names}) VALUES (?, ?, {marks})",
        (user_id, now, *values.values()),
    )
    key_id = cursor.lastrowid
    text = _insert_secret(conn, key_id, secret, secret_hash, now)
    key = get_key(conn, key_id, now)
    emit(conn, "key.created", _event(key), now=now, account_id=user_id)
    return key, text


def _event(key: ApiKey) -> dict[str, Any]:
    # Thin: the key's id and public prefix, never its secret.
    return {"key_id": key.id, "prefix": KEY_PREFIX + key.lookup_id, "name": key.name}


def _insert_secret(
    conn: sqlite3.Connection, key_id: int, secret: str, secret_hash: str, now: float
) -> str:
    # 48-bit lookup ids collide about never; if one does, draw another. DO NOTHING rather
    # than catching the violation: on PostgreSQL a failed statement aborts the transaction.
    for _ in range(5):
        lookup_id = secrets.token_hex(6)
        inserted = conn.execute(
            "INSERT INTO api_key_secrets (key_id, lookup_id, secret_hash, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (lookup_id) DO NOTHING",
            (key_id, lookup_id, secret_hash, now),
        ).rowcount
        if inserted:
            return format_key(lookup_id, secret)
    raise Conflict("Could not allocate a key id; try again.")


def update_key(
    conn: sqlite3.Connection, key_id: int, columns: Mapping[str, Any], now: float
) -> ApiKey:
    if columns:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE api_keys SET {assignments} WHERE id = ?", (*columns.values(), key_id))
        record_event(conn, "key", key_id, now)
    return _existing(conn, key_id, now)


def revoke_key(conn: sqlite3.Connection, key_id: int, now: float) -> ApiKey:
    cursor = conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
    )
    key = _existing(conn, key_id, now)
    if cursor.rowcount:
        record_event(conn, "key", key_id, now)
        emit(conn, "key.revoked", _event(key), now=now, account_id=key.user_id)
    return key


def rotate_key(
    conn: sqlite3.Connection,
    key_id: int,
    *,
    secret: str,
    secret_hash: str,
    now: float,
    overlap: float,
) -> tuple[ApiKey, str]:
    key = _existing(conn, key_id, now)
    if key.revoked_at is not None:
        raise Conflict(f"Key {key_id} is revoked; create a new key instead of rotating it.")
    retire_at = now + overlap
    # An overlap never extends a secret that was already retiring sooner.
    conn.execute(
        "UPDATE api_key_secrets SET retires_at = ? "
        "WHERE key_id = ? AND (retires_at IS NULL OR retires_at > ?)",
        (retire_at, key_id, retire_at),
    )
    text = _insert_secret(conn, key_id, secret, secret_hash, now)
    record_event(conn, "key", key_id, now)
    rotated = _existing(conn, key_id, now)
    emit(conn, "key.rotated", {**_event(rotated), "previous_key_expires_at": int(retire_at)},
         now=now, account_id=rotated.user_id)
    return rotated, text


def _existing(conn: sqlite3.Connection, key_id: int, now: float) -> ApiKey:
    key = get_key(conn, key_id, now)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    return key


def record_last_used(conn: sqlite3.Connection, last_used: Mapping[int, float]) -> None:
    conn.executemany(
        "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?",
        [(at, key_id) for key_id, at in last_used.items()],
    )


# -- what the authenticator reads on a cache miss -------------------------------


def secret_by_lookup(conn: sqlite3.Connection, lookup_id: str) -> tuple[int, int, str] | None:
    """(secret id, key id, bcrypt hash) for a lookup id."""
    row = conn.execute(
        "SELECT id, key_id, secret_hash FROM api_key_secrets WHERE lookup_id = ?", (lookup_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


@dataclass(frozen=True, slots=True)
class KeyAuthState:
    key: ApiKey
    user: User
    secrets: Mapping[int, float | None]  # secret id -> when it retires (None = never)


def auth_state(conn: sqlite3.Connection, key_id: int, now: float) -> KeyAuthState | None:
    key = get_key(conn, key_id, now)
    if key is None:
        return None
    user = user_by_id(conn, key.user_id)
    rows = conn.execute(
        "SELECT id, retires_at FROM api_key_secrets "
        "WHERE key_id = ? AND (retires_at IS NULL OR retires_at > ?)",
        (key_id, now),
    )
    return KeyAuthState(key, user, {row[0]: row[1] for row in rows})

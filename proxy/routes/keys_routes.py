"""/api/keys*: a user's API keys. Another user's key is answered 404, as if
it did not exist; admins may see and change any key but never its owner, and
may create a key for any user (`user_id` or `email` in the body)."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import STORE
from ..appkeys import AUTHENTICATOR, HASHER
from ..auth.keys import (
    ApiKey,
    check_settings,
    get_key,
    insert_key,
    list_keys,
    new_secret,
    revoke_key,
    rotate_key,
    update_key,
)
from ..auth.management import Caller, now_of, reply, require_user, snapshot_of
from ..auth.users import User, normalize_email, plan_for, user_by_email, user_by_id
from ..errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from ..usage.stats import key_stats
from ..validation import read_body, read_query


def setup(app: web.Application) -> None:
    app.router.add_get("/api/keys", list_route)
    app.router.add_post("/api/keys", create_route)
    app.router.add_get("/api/keys/{id}", get_route)
    app.router.add_patch("/api/keys/{id}", update_route)
    app.router.add_delete("/api/keys/{id}", delete_route)
    app.router.add_post("/api/keys/{id}/rotate", rotate_route)


def _public(request: web.Request, key: ApiKey) -> dict:
    return key.public(last_used_at=request.app[AUTHENTICATOR].last_used(key.id))


async def _visible_key(request: web.Request, caller: Caller) -> ApiKey:
    raw = request.match_info["id"]
    key = None
    if raw.isascii() and raw.isdigit() and len(raw) < 19:
        now = now_of(request)
        key = await request.app[STORE].read(lambda conn: get_key(conn, int(raw), now))
    if key is None or (key.user_id != caller.user_id and not caller.is_admin):
        raise NotFound(f"No API key with id {raw[:20]}; GET /api/keys lists yours.")
    return key


async def list_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    query = read_query(request, "keys_query")
    owner = query.get("user_id", caller.user_id)
    if owner != caller.user_id and not caller.is_admin:
        raise PermissionDenied("Only administrators can list other users' keys.", code="admin_required")
    now = now_of(request)
    include_revoked = query.get("include_revoked", True)
    found = await request.app[STORE].read(
        lambda conn: list_keys(conn, now, user_id=owner, include_revoked=include_revoked)
    )
    usage = await key_stats(request.app[STORE], owner, [key.id for key in found], now=now)
    data = [{**_public(request, key), "usage": usage[key.id]} for key in found]
    return reply({"object": "list", "data": data, "has_more": False})


async def create_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    body = await read_body(request, "key_create")
    owner = await _new_key_owner(request, caller, body)
    snapshot = snapshot_of(request)
    now = now_of(request)
    settings = {k: v for k, v in body.items() if k not in _OWNER_FIELDS}
    columns = check_settings(settings, plan=plan_for(snapshot, owner.plan), snapshot=snapshot, now=now)
    secret = new_secret()
    secret_hash = await request.app[HASHER].hash(secret.encode("ascii"), snapshot.auth.bcrypt_rounds)
    key, text = await request.app[STORE].write(
        lambda conn: insert_key(
            conn, user_id=owner.id, columns=columns, secret=secret, secret_hash=secret_hash, now=now
        )
    )
    return reply({**_public(request, key), "key": text}, status=201)


_OWNER_FIELDS = ("user_id", "email")


async def _new_key_owner(request: web.Request, caller: Caller, body: dict) -> User:
    """The caller, or for an administrator the user the body names."""
    named = [field for field in _OWNER_FIELDS if field in body]
    if not named:
        if caller.user is None:
            raise PermissionDenied(
                "The admin key has no account of its own; send user_id or email to create "
                "a key for a user.",
                code="account_required",
            )
        return caller.user
    if not caller.is_admin:
        raise PermissionDenied(
            f"Only administrators can create keys for another user; leave out {named[0]} "
            "to create one for yourself.",
            code="admin_required", param=named[0],
        )
    if len(named) > 1:
        raise InvalidRequest("Send user_id or email, not both, to name the key's owner.",
                             param="email")
    if "user_id" in body:
        user_id = body["user_id"]
        owner = await request.app[STORE].read(lambda conn: user_by_id(conn, user_id))
        missing = f"No user with id {user_id}; GET /api/admin/users lists them."
    else:
        email = normalize_email(body["email"])
        owner = await request.app[STORE].read(lambda conn: user_by_email(conn, email))
        missing = f"No user with e-mail address {email}; GET /api/admin/users lists them."
    if owner is None:
        raise NotFound(missing, param=named[0])
    return owner


async def get_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    read_query(request, "empty")
    key = await _visible_key(request, caller)
    usage = await key_stats(request.app[STORE], key.user_id, [key.id], now=now_of(request))
    return reply({**_public(request, key), "usage": usage[key.id]})


async def update_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    body = await read_body(request, "key_update")
    key = await _visible_key(request, caller)
    snapshot = snapshot_of(request)
    owner = caller.user
    if owner is None or owner.id != key.user_id:
        owner = await request.app[STORE].read(lambda conn: user_by_id(conn, key.user_id))
    now = now_of(request)
    columns = check_settings(body, plan=plan_for(snapshot, owner.plan), snapshot=snapshot, now=now)
    updated = await request.app[STORE].write(lambda conn: update_key(conn, key.id, columns, now))
    request.app[AUTHENTICATOR].forget_key(key.id)
    return reply(_public(request, updated))


async def delete_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    await read_body(request, "empty")
    key = await _visible_key(request, caller)
    now = now_of(request)
    await request.app[STORE].write(lambda conn: revoke_key(conn, key.id, now))
    request.app[AUTHENTICATOR].forget_key(key.id)
    return reply({"object": "api_key.deleted", "id": key.id, "deleted": True})


async def rotate_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    body = await read_body(request, "key_rotate")
    snapshot = snapshot_of(request)
    overlap = body.get("overlap_seconds", 0)
    if overlap > snapshot.auth.max_rotation_overlap:
        raise InvalidRequest(
            f"overlap_seconds may be at most {int(snapshot.auth.max_rotation_overlap)} on this server.",
            param="overlap_seconds",
        )
    key = await _visible_key(request, caller)
    if key.revoked_at is not None:
        raise Conflict(f"Key {key.id} is revoked; create a new key instead of rotating it.")
    secret = new_secret()
    secret_hash = await request.app[HASHER].hash(secret.encode("ascii"), snapshot.auth.bcrypt_rounds)
    now = now_of(request)
    rotated, text = await request.app[STORE].write(
        lambda conn: rotate_key(
            conn, key.id, secret=secret, secret_hash=secret_hash, now=now, overlap=overlap
        )
    )
    request.app[AUTHENTICATOR].forget_key(key.id)
    return reply({**_public(request, rotated), "key": text})

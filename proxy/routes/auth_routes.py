"""/api/auth/*: signup, login, logout, and the caller's own account."""

from __future__ import annotations

import logging

from aiohttp import web

from ..appkeys import STORE
from ..appkeys import AUTHENTICATOR, HASHER, LOGIN_THROTTLE, SIGNUP_THROTTLE
from ..auth.client_address import client_address
from ..auth.management import (
    check_same_origin,
    now_of,
    reply,
    require_account,
    require_user,
    snapshot_of,
)
from ..auth.passwords import check_length_only, check_password, hash_rounds
from ..auth.sessions import (
    COOKIE_NAME,
    Session,
    insert_session,
    new_token,
    revoke_session,
    revoke_user_sessions,
)
from ..auth.users import (
    EmailTaken,
    attach_invite,
    claim_invite,
    insert_user,
    normalize_email,
    update_user,
    user_by_email,
)
from ..billing.referral import normalize_code, record_referral
from ..errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from ..validation import read_body, read_query

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/auth/signup", signup)
    app.router.add_post("/api/auth/login", login)
    app.router.add_post("/api/auth/logout", logout)
    app.router.add_get("/api/auth/me", me)
    app.router.add_patch("/api/auth/me", update_me)


async def signup(request: web.Request) -> web.Response:
    """Answers 202 and the same body whether or not the address already has an
    account, so signup cannot be used to learn who is registered; the new
    account logs in with POST /api/auth/login."""
    settings = snapshot_of(request).auth
    check_same_origin(request, require_evidence=False)
    if settings.signup == "closed":
        raise PermissionDenied(
            "Signup is closed on this server; ask an administrator for an account.",
            code="signup_closed",
        )
    body = await read_body(request, "signup")
    if settings.signup == "invite" and "invite_code" not in body:
        raise InvalidRequest(
            "Signup on this server needs an invite code; ask an administrator for one.",
            param="invite_code",
        )
    email = normalize_email(body["email"])
    password = check_password(body["password"], settings)
    # ?ref=CODE on the signup link, or "ref" in the body (the dashboard's form carries it).
    ref = body.get("ref", request.query.get("ref"))
    ref = normalize_code(ref) if ref is not None else None
    reward = snapshot_of(request).billing.referral_reward_tokens
    address = client_address(request)
    request.app[SIGNUP_THROTTLE].take((f"address:{address}",), settings.signups_per_hour)
    # Hashed whether or not the address is taken: the answer's timing tells nothing either.
    password_hash = await request.app[HASHER].hash(password, settings.bcrypt_rounds)
    now = now_of(request)

    def create(conn) -> int:
        plan, invite_id = settings.default_plan, None
        if "invite_code" in body:
            invite_id, invite_plan = claim_invite(conn, body["invite_code"], now)
            plan = invite_plan or plan
        user = insert_user(
            conn, email=email, password_hash=password_hash, plan=plan, now=now,
            name=body.get("name", "").strip(),
        )
        if invite_id is not None:
            attach_invite(conn, invite_id, user.id)
        if ref is not None:
            # In the account's own transaction: an address that already had an account
            # rolls back before this, so a referral for it changes nothing.
            record_referral(conn, user.id, ref, now=now, reward_tokens=reward)
        return user.id

    try:
        user_id = await request.app[STORE].write(create)
    except EmailTaken:
        # The transaction rolled back, so an invite sent along is still unused.
        log.info("signup from %s for an address that already has an account; nothing changed",
                 address)
    else:
        log.info("account %s signed up from %s", user_id, address)
    return reply(
        {
            "object": "signup",
            "email": email,
            "message": "Signup received. Log in with POST /api/auth/login using this e-mail "
                       "address and password.",
        },
        status=202,
    )


async def login(request: web.Request) -> web.Response:
    settings = snapshot_of(request).auth
    check_same_origin(request, require_evidence=False)
    body = await read_body(request, "login")
    email = normalize_email(body["email"])
    password = check_length_only(body["password"])
    throttle, limit = request.app[LOGIN_THROTTLE], settings.login_attempts_per_minute
    address = client_address(request)
    attempt = (f"account:{email}", f"address:{address}")
    # Counted before bcrypt is awaited, so parallel attempts cannot all get in; refunded on success.
    stamp = throttle.take(attempt, limit)
    user = await request.app[STORE].read(lambda conn: user_by_email(conn, email))
    hasher = request.app[HASHER]
    if user is None:
        await hasher.verify_unknown(password, settings.bcrypt_rounds)
        matched = False
    else:
        matched = await hasher.verify(password, user.password_hash)
    if not matched:
        log.info("failed login for account %s from %s", user.id if user else "(none)", address)
        raise AuthenticationFailed("Incorrect e-mail or password.", code="invalid_credentials")
    throttle.refund(attempt, stamp)
    if user.disabled:
        raise PermissionDenied(
            "This account is disabled; contact your administrator.", code="account_disabled"
        )
    # A raised bcrypt cost reaches existing accounts as they log in.
    rehashed = None
    if hash_rounds(user.password_hash) != settings.bcrypt_rounds:
        rehashed = await hasher.hash(password, settings.bcrypt_rounds)
    now = now_of(request)
    token = new_token()

    def start(conn) -> Session:
        if rehashed is not None:
            update_user(conn, user.id, {"password_hash": rehashed}, now)
        return insert_session(conn, user.id, token, now=now, ttl=settings.session_ttl)

    session = await request.app[STORE].write(start)
    return _session_reply(request, session, token, status=200)


def _session_reply(request: web.Request, session: Session, token: str, *, status: int) -> web.Response:
    settings = snapshot_of(request).auth
    response = reply(
        {
            "object": "session",
            "token": token,
            "expires_at": int(session.expires_at),
            "user": session.user.public(),
        },
        status=status,
    )
    response.set_cookie(
        COOKIE_NAME, token, max_age=int(settings.session_ttl), path="/", httponly=True,
        samesite="Lax", secure=settings.secure_cookies or _over_https(request),
    )
    return response


def _over_https(request: web.Request) -> bool:
    """Served over HTTPS, directly or (as public_url says) behind a TLS-terminating proxy."""
    public_url = snapshot_of(request).server.public_url or ""
    return request.secure or public_url.startswith("https://")


async def logout(request: web.Request) -> web.Response:
    caller = await require_user(request)
    await read_body(request, "empty")
    if caller.session_id is None:
        raise InvalidRequest("The admin key has no session to end.")
    now = now_of(request)
    await request.app[STORE].write(lambda conn: revoke_session(conn, caller.session_id, now))
    response = reply({"object": "session", "revoked": True})
    response.del_cookie(COOKIE_NAME, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    caller = await require_account(request)
    read_query(request, "empty")
    return reply(caller.user.public())


async def update_me(request: web.Request) -> web.Response:
    caller = await require_account(request)
    body = await read_body(request, "me_update")
    settings = snapshot_of(request).auth
    user = caller.user
    changes: dict[str, object] = {}
    if "name" in body:
        changes["name"] = body["name"].strip()
    if "email" in body:
        email = normalize_email(body["email"])
        if email != user.email:
            changes["email"] = email
    new_password = check_password(body["password"], settings) if "password" in body else None
    if "email" in changes or new_password is not None:
        await _confirm_current_password(request, body, user.password_hash, f"account:{user.email}")
    if new_password is not None:
        changes["password_hash"] = await request.app[HASHER].hash(new_password, settings.bcrypt_rounds)
    now = now_of(request)

    def apply(conn):
        updated = update_user(conn, user.id, changes, now)
        if new_password is not None:
            revoke_user_sessions(conn, user.id, now, keep=caller.session_id)
        return updated

    updated = await request.app[STORE].write(apply)
    if "email" in changes:
        request.app[AUTHENTICATOR].forget_user(user.id)
    return reply(updated.public())


async def _confirm_current_password(
    request: web.Request, body: dict, password_hash: str, account: str
) -> None:
    if "current_password" not in body:
        raise InvalidRequest(
            "Send current_password to change your e-mail address or password.",
            param="current_password",
        )
    current = check_length_only(body["current_password"], param="current_password")
    throttle = request.app[LOGIN_THROTTLE]
    limit = snapshot_of(request).auth.login_attempts_per_minute
    stamp = throttle.take((account,), limit)
    if not await request.app[HASHER].verify(current, password_hash):
        raise InvalidRequest("current_password does not match your password.", param="current_password")
    throttle.refund((account,), stamp)

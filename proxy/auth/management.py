"""Who is calling a management route (/api/...), and the CSRF rule for browsers.

Three credentials are accepted, checked in this order:

- `Authorization: Bearer <admin key>` — the operator's key from the
  environment; acts as an admin without an account.
- `Authorization: Bearer bms_…` — a session token, for API clients.
- the `bm_session` cookie — for the dashboard. A browser attaches cookies to
  cross-site requests too, so a cookie-authenticated write must carry a JSON
  content type (which a cross-site form cannot send without a CORS
  preflight) and a same-origin `Sec-Fetch-Site` or `Origin`.

`bm-` API keys are for /v1 only. The caller is resolved once per request.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from ..appkeys import CLOCK, CONFIG, STORE
from ..config.snapshot import Snapshot
from ..errors import AuthenticationFailed, PermissionDenied
from ..validation import require_json_content_type
from .keys import KEY_PREFIX
from .sessions import COOKIE_NAME, active_session
from .users import User

_CALLER: web.RequestKey["Caller | None"] = web.RequestKey("bluesminds.caller", object)
_SNAPSHOT: web.RequestKey[Snapshot] = web.RequestKey("bluesminds.snapshot", object)
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOG_IN = (
    "Log in first: POST /api/auth/login, then send the session cookie or "
    "'Authorization: Bearer <token>' from its answer."
)


@dataclass(frozen=True, slots=True)
class Caller:
    via: str  # "cookie" | "bearer" | "admin_key"
    user: User | None = None  # None for the admin key, which has no account
    session_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.via == "admin_key" or (self.user is not None and self.user.is_admin)

    @property
    def user_id(self) -> int | None:
        return None if self.user is None else self.user.id


def snapshot_of(request: web.Request) -> Snapshot:
    """The request's config snapshot, read once and kept for the whole request."""
    snapshot = request.get(_SNAPSHOT)
    if snapshot is None:
        snapshot = request[_SNAPSHOT] = request.app[CONFIG].current
    return snapshot


def now_of(request: web.Request) -> float:
    return request.app.get(CLOCK, time.time)()


async def identify(request: web.Request) -> Caller | None:
    if _CALLER in request:
        return request[_CALLER]
    caller = await _resolve(request)
    request[_CALLER] = caller
    return caller


async def _resolve(request: web.Request) -> Caller | None:
    header = request.headers.get("Authorization")
    if header is not None:
        if header[:7].lower() != "bearer ":
            raise AuthenticationFailed(
                "Unsupported Authorization header; send 'Authorization: Bearer <token>'.",
                code="invalid_authorization",
            )
        token = header[7:].strip()
        admin_key = snapshot_of(request).admin.key
        if admin_key and hmac.compare_digest(_bytes(token), _bytes(admin_key)):
            return Caller(via="admin_key")
        if token.startswith(KEY_PREFIX):
            raise AuthenticationFailed(
                "API keys (bm-…) authenticate /v1 only. " + _LOG_IN, code="invalid_session"
            )
        session = await _session(request, token)
        if session is None:
            raise AuthenticationFailed(
                "This session token is unknown, expired or revoked. " + _LOG_IN,
                code="invalid_session",
            )
        return Caller(via="bearer", user=session.user, session_id=session.id)
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    session = await _session(request, token)
    if session is None:
        return None
    if request.method in _UNSAFE:
        check_same_origin(request, require_evidence=True)
    return Caller(via="cookie", user=session.user, session_id=session.id)


async def _session(request: web.Request, token: str):
    now = now_of(request)
    return await request.app[STORE].read(lambda conn: active_session(conn, token, now))


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


async def require_user(request: web.Request) -> Caller:
    """Any authenticated caller: a user's session or the admin key."""
    caller = await identify(request)
    if caller is None:
        raise AuthenticationFailed(_LOG_IN, code="not_authenticated")
    return caller


async def require_account(request: web.Request) -> Caller:
    """A caller with an account of its own (not the admin key)."""
    caller = await require_user(request)
    if caller.user is None:
        raise PermissionDenied(
            "The admin key has no account; log in as a user for this route.",
            code="account_required",
        )
    return caller


async def require_admin(request: web.Request) -> Caller:
    caller = await require_user(request)
    if not caller.is_admin:
        raise PermissionDenied("This route is for administrators only.", code="admin_required")
    return caller


async def guard_admin_path(request: web.Request) -> None:
    """Every route under /api/admin/ is for admins, whoever registered it
    (called by the app's one gate, proxy/app.py)."""
    if request.path.startswith("/api/admin/") or request.path == "/api/admin":
        await require_admin(request)


# -- CSRF ---------------------------------------------------------------------------


def check_same_origin(request: web.Request, *, require_evidence: bool) -> None:
    """Refuse a browser write that another site could have triggered.

    With `require_evidence` (a cookie is the credential) the request must show
    it came from our own pages; without it (login, signup), only a request that
    shows it came from elsewhere is refused."""
    if request.method in _UNSAFE:
        require_json_content_type(request)
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is not None:
        if site in ("same-origin", "none"):
            return
        raise PermissionDenied(_CROSS_SITE, code="csrf_rejected")
    if origin is not None:
        if origin != "null" and _same_origin(request, origin):
            return
        raise PermissionDenied(_CROSS_SITE, code="csrf_rejected")
    if require_evidence:
        raise PermissionDenied(
            "A cookie-authenticated write needs an Origin or Sec-Fetch-Site header; "
            "API clients should send 'Authorization: Bearer <token>' instead of the cookie.",
            code="csrf_rejected",
        )


_CROSS_SITE = "Cross-site requests cannot use the session cookie; use the dashboard or a bearer token."


def _same_origin(request: web.Request, origin: str) -> bool:
    public_url = snapshot_of(request).server.public_url
    if public_url:
        expected = urlsplit(public_url)
        return origin.rstrip("/") == f"{expected.scheme}://{expected.netloc}"
    # Behind a TLS-terminating proxy the scheme we see may differ; the host may not.
    return urlsplit(origin).netloc == request.host


# -- replies -------------------------------------------------------------------------


def reply(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

"""POST /api/usage/logs/{id}/replay: the captured (redacted) request, sent again
through the whole /v1 pipeline as its owner.

- Billed to the owner's account, under the owner's limits: the principal is the
  one the original key gives (its scopes, models and limits) while that key still
  works, else the owner's account alone (its plan's limits). Admission runs as for
  any request, so a 429 from the limiter comes back as the replay's answer.
- Never served from the response cache: the request the pipeline sees carries
  `x-bluesminds-cache: false`, the per-request opt-out.
- Always non-stream: `stream` and `stream_options` are dropped, so the answer is
  one JSON body the caller gets whole (a stream's capture is its text anyway).
- The new usage row is marked `replay_of` = the original id.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from ..appkeys import CLOCK, CONFIG, STORE, USAGE
from ..auth.keys import get_key
from ..auth.principal import Principal
from ..auth.users import plan_for, user_by_id
from ..errors import Conflict, PermissionDenied
from ..gateway.families import FAMILIES
from ..gateway.pipeline import replay as run_replay
from .reads import replay_row_id

CACHE_HEADER = "x-bluesminds-cache"
FLUSH_WAIT = 10.0  # seconds
# Credentials of the caller (a session or the admin key) never reach the pipeline:
# the replay runs as the owner, whoever asked for it.
_DROPPED = ("authorization", "cookie", "x-api-key", "content-length", CACHE_HEADER, "cache-control")


def replayable_family(route: str):
    for family in FAMILIES:
        if family.name == route and family.method == "POST" and family.intake is None:
            return family
    return None


def replay_body(capture: dict[str, Any], usage_id: int) -> bytes:
    if capture["request"]["truncated"]:
        raise Conflict(f"The request of usage log {usage_id} was captured truncated (it was longer than "
                       "capture.max_body_bytes), so it cannot be sent again.", code="capture_truncated")
    body = orjson.loads(capture["request"]["body"])
    body.pop("stream", None)
    body.pop("stream_options", None)
    return orjson.dumps(body)


def replay_request(request: web.Request) -> web.Request:
    """The request the pipeline reads headers from: the caller's, without its
    credentials, and opted out of the response cache."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROPPED)
    headers[CACHE_HEADER] = "false"
    return request.clone(headers=headers)


async def owner_principal(request: web.Request, row: dict[str, Any]) -> Principal:
    snapshot = request.app[CONFIG].current
    now = request.app[CLOCK]()
    key_id = row["key_id"]

    def load(conn):
        user = user_by_id(conn, row["user_id"])
        key = get_key(conn, key_id, now) if key_id is not None else None
        return user, key

    user, key = await request.app[STORE].read(load)
    if user is None or user.disabled:
        raise PermissionDenied("The account this request belongs to is disabled or gone; it cannot be "
                               "replayed.", code="account_disabled")
    plan = plan_for(snapshot, user.plan).name
    usable = key is not None and key.revoked_at is None and (key.expires_at is None or key.expires_at > now)
    if not usable:
        return Principal(user_id=user.id, key_id=None, plan=plan, is_admin=user.is_admin, email=user.email)
    return Principal(user_id=user.id, key_id=key.id, plan=plan, scopes=frozenset(key.scopes),
                     models=key.models, limits=key.limits, is_admin=user.is_admin, email=user.email,
                     capture=key.capture)


async def replay(request: web.Request, row: dict[str, Any], capture: dict[str, Any]) -> web.Response:
    usage_id = row["id"]
    family = replayable_family(row["route"])
    if family is None:
        raise Conflict(f"Usage log {usage_id} is a '{row['route']}' request, which cannot be replayed.",
                       code="not_replayable")
    raw = replay_body(capture, usage_id)
    principal = await owner_principal(request, row)
    started = request.app[CLOCK]()
    answer = await run_replay(replay_request(request), family, raw, principal, usage_id)
    request_id = answer.headers.get("x-request-id")
    try:
        # The new row's id is known once its batch is written (one flush interval).
        await asyncio.wait_for(request.app[USAGE].flush(), FLUSH_WAIT)
    except TimeoutError:
        pass  # the database is struggling: answer without the id rather than hang
    new_id = await request.app[STORE].read(
        lambda conn: replay_row_id(conn, principal.user_id, started, request_id))
    headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-ratelimit-")}
    headers["x-request-id"] = request_id
    try:
        response = orjson.loads(answer.body)
    except (orjson.JSONDecodeError, TypeError):
        response = None
    body = {"object": "usage.replay", "id": new_id, "replay_of": usage_id, "request_id": request_id,
            "status": answer.status, "response": response}
    if answer.status >= 400 and isinstance(response, dict) and "error" in response:
        # The pipeline's refusal (a 429 from the owner's limits, a model gone): its
        # status and error body, so clients read it as they read any error.
        body = {**response, **{k: v for k, v in body.items() if k != "response"}}
    return web.Response(status=answer.status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)

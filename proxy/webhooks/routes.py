"""/api/webhooks*: an account's endpoints, their deliveries, retries and test sends.

Another account's endpoint answers 404, as if it did not exist; the YAML's
system-wide endpoints are visible to administrators only, who see every
endpoint. A secret is in the answer to POST alone.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import STORE, WEBHOOKS
from ..auth.management import Caller, now_of, reply, require_user, snapshot_of
from ..auth.users import user_by_id
from ..errors import Conflict, FeatureUnavailable, InvalidRequest, NotFound, PermissionDenied
from ..validation import read_body, read_query
from .endpoints import (Endpoint, count_endpoints, delete_endpoint, get_delivery, get_endpoint,
                        insert_endpoint, list_deliveries, list_endpoints, retry_delivery, update_endpoint)
from .outbox import emit_test
from .secrets import SecretBox
from .signing import new_secret
from .ssrf import NetworkPolicy, Refused

_MAX_ID_DIGITS = 18


def setup(app: web.Application) -> None:
    app.router.add_get("/api/webhooks", list_route)
    app.router.add_post("/api/webhooks", create_route)
    app.router.add_get("/api/webhooks/{id}", get_route)
    app.router.add_patch("/api/webhooks/{id}", update_route)
    app.router.add_delete("/api/webhooks/{id}", delete_route)
    app.router.add_get("/api/webhooks/{id}/deliveries", deliveries_route)
    app.router.add_post("/api/webhooks/{id}/deliveries/{delivery_id}/retry", retry_route)
    app.router.add_post("/api/webhooks/{id}/test", test_route)


def _id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= _MAX_ID_DIGITS else None


async def _visible(request: web.Request, caller: Caller) -> Endpoint:
    raw = request.match_info["id"]
    endpoint_id = _id(raw)
    endpoint = None
    if endpoint_id is not None:
        endpoint = await request.app[STORE].read(lambda conn: get_endpoint(conn, endpoint_id))
    if endpoint is None or (endpoint.account_id != caller.user_id and not caller.is_admin):
        raise NotFound(f"No webhook endpoint with id {raw[:20]}; GET /api/webhooks lists yours.")
    return endpoint


def _policy(request: web.Request) -> NetworkPolicy:
    settings = snapshot_of(request).webhooks
    return NetworkPolicy(allow_networks=settings.allow_networks, allow_http=settings.allow_http)


async def _checked_url(request: web.Request, url: str) -> str:
    try:
        return await request.app[WEBHOOKS].vet_url(url, _policy(request))
    except Refused as exc:
        raise InvalidRequest(f"{exc}.", param="url", code="webhook_url_refused") from None


async def list_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    query = read_query(request, "webhooks_query")
    if caller.is_admin:
        owner = query.get("user_id")
    else:
        owner = query.get("user_id", caller.user_id)
        if owner != caller.user_id:
            raise PermissionDenied("Only administrators can list other users' webhook endpoints.",
                                   code="admin_required")
    data = await list_endpoints(request.app, owner)
    return reply({"object": "list", "data": data, "has_more": False})


async def create_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    body = await read_body(request, "webhook_create")
    owner = await _owner(request, caller, body)
    settings = snapshot_of(request).webhooks
    if settings.encryption_key is None:
        raise FeatureUnavailable("Webhook endpoints cannot be created on this server yet: the operator "
                                 "must set webhooks.encryption_key_env (the key that encrypts their secrets).")
    url = await _checked_url(request, body["url"])
    now = now_of(request)
    secret = new_secret()
    box = SecretBox(settings.encryption_key)
    cap = settings.max_endpoints_per_account

    def create(conn) -> Endpoint:
        if count_endpoints(conn, owner) >= cap:
            raise Conflict(f"An account may have at most {cap} webhook endpoints; delete one first.")
        return insert_endpoint(conn, account_id=owner, name=body.get("name", url), url=url,
                               events=body["events"], description=body.get("description", ""),
                               seal=lambda endpoint_id: box.seal(secret, endpoint_id), now=now)

    endpoint = await request.app[STORE].write(create)
    return reply({**endpoint.public(), "secret": secret}, status=201)


async def _owner(request: web.Request, caller: Caller, body: dict) -> int:
    if "user_id" not in body:
        if caller.user is None:
            raise PermissionDenied("The admin key has no account of its own; send user_id to create an "
                                   "endpoint for a user.", code="account_required")
        return caller.user.id
    if not caller.is_admin:
        raise PermissionDenied("Only administrators can create endpoints for another user; leave out "
                               "user_id to create one for yourself.", code="admin_required", param="user_id")
    user_id = body["user_id"]
    if await request.app[STORE].read(lambda conn: user_by_id(conn, user_id)) is None:
        raise NotFound(f"No user with id {user_id}; GET /api/admin/users lists them.", param="user_id")
    return user_id


async def get_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    read_query(request, "empty")
    return reply((await _visible(request, caller)).public())


async def update_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    body = await read_body(request, "webhook_update")
    endpoint = await _visible(request, caller)
    if endpoint.source == "config" and set(body) - {"active"}:
        raise Conflict(f"Endpoint {endpoint.id} is defined in the YAML config (webhooks.endpoints); "
                       "change it there. Only 'active' can be set here.")
    if "url" in body:
        body["url"] = await _checked_url(request, body["url"])
    now = now_of(request)
    updated = await request.app[STORE].write(lambda conn: update_endpoint(conn, endpoint.id, body, now))
    if body.get("active"):
        request.app[WEBHOOKS].deliverer.kick()
    return reply(updated.public())


async def delete_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    await read_body(request, "empty")
    endpoint = await _visible(request, caller)
    if endpoint.source == "config":
        raise Conflict(f"Endpoint {endpoint.id} is defined in the YAML config (webhooks.endpoints); "
                       "remove it there.")
    await request.app[STORE].write(lambda conn: delete_endpoint(conn, endpoint.id))
    return reply({"object": "webhook_endpoint.deleted", "id": endpoint.id, "deleted": True})


async def deliveries_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    query = read_query(request, "webhook_deliveries_query")
    endpoint = await _visible(request, caller)
    data, has_more = await list_deliveries(request.app, endpoint.id, limit=query.get("limit", 50),
                                           before=query.get("before"), state=query.get("state"))
    return reply({"object": "list", "data": data, "has_more": has_more})


async def retry_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    await read_body(request, "empty")
    endpoint = await _visible(request, caller)
    raw = request.match_info["delivery_id"]
    delivery_id = _id(raw)
    store = request.app[STORE]
    found = None
    if delivery_id is not None:
        found = await store.read(lambda conn: get_delivery(conn, endpoint.id, delivery_id))
    if found is None:
        raise NotFound(f"No delivery with id {raw[:20]} for endpoint {endpoint.id}; "
                       f"GET /api/webhooks/{endpoint.id}/deliveries lists them.")
    _require_active(endpoint)
    now = now_of(request)
    await store.write(lambda conn: retry_delivery(conn, delivery_id, now))
    request.app[WEBHOOKS].deliverer.kick()
    return reply(await store.read(lambda conn: get_delivery(conn, endpoint.id, delivery_id)), status=202)


async def test_route(request: web.Request) -> web.Response:
    caller = await require_user(request)
    await read_body(request, "empty")
    endpoint = await _visible(request, caller)
    _require_active(endpoint)
    now = now_of(request)
    store = request.app[STORE]
    delivery_id = await store.write(lambda conn: emit_test(conn, endpoint.id, endpoint.account_id, now=now))
    request.app[WEBHOOKS].deliverer.kick()
    return reply(await store.read(lambda conn: get_delivery(conn, endpoint.id, delivery_id)), status=202)


def _require_active(endpoint: Endpoint) -> None:
    if not endpoint.active:
        raise Conflict(f"Endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); enable it with "
                       f"PATCH /api/webhooks/{endpoint.id} {{\"active\": true}} first.")

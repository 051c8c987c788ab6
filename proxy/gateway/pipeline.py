"""The one pipeline every route family runs:

    intake → admission → [cache] → forward (upstream/forward.py) → relay → accounting

The cache step (proxy/cache/step.py) runs only for a plan that enables the
cache; it wraps forward and relay, and may answer without them.

`handle` is the whole life of a request; `routes` turns family descriptions
into aiohttp routes. A failure anywhere becomes the family's error shape here,
and whatever was admitted is accounted exactly once, whatever happens.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from aiohttp import web

from .. import access_log
from ..appkeys import CONFIG, FORWARDER, REQUEST_IDS
from ..bodies import read_body
from ..cache import step as cache_step
from ..errors import GatewayError, UpstreamClientError
from .accounting import account
from .admission import admit
from .call import Call
from .families import Family
from .intake import parse_request
from .relay import complete, stream
from .scrub import scrub_client_error


def request_id_of(request: web.Request) -> str:
    return request.app[REQUEST_IDS].of(request.headers.get("x-request-id"))


async def handle(request: web.Request, family: Family) -> web.StreamResponse:
    app = request.app
    call = Call(app, app[CONFIG].current, family, request_id_of(request))
    try:
        return await _run(request, call)
    finally:
        # The middleware writes the one access line per request; these are the pipeline's fields.
        parsed = call.parsed
        access_log.note(request, id=call.request_id,
                        model=call.model.name if call.model else (parsed.model if parsed else None),
                        upstream=call.upstream)


async def _run(request: web.Request, call: Call) -> web.StreamResponse:
    family = call.family
    try:
        if family.intake is not None:
            call.parsed = await family.intake(request, call.snapshot.server, family)
        else:
            raw = await read_body(request, call.snapshot.server)
            call.parsed = parse_request(family, raw)
        await admit(request, call)
        if call.plan.cache.enabled:
            return await cache_step.serve(request, call, _answer)
        return await _answer(request, call)
    except GatewayError as exc:
        # The usage row and the access line name the upstream that answered, when one did.
        call.upstream = getattr(exc, "upstream", None) or call.upstream
        if isinstance(exc, UpstreamClientError):
            exc = scrub_client_error(exc, call.snapshot)
        account(call, exc.status, error_type=exc.code or exc.type)
        headers = {"x-request-id": call.request_id, **call.rl_headers}
        return family.error_response(exc, headers)
    except asyncio.CancelledError:
        account(call, 499, error_type="client_disconnected")
        raise
    except Exception:
        # A bug must not keep the key's reservation (concurrency, quotas) forever;
        # the middleware turns it into a 500 in OpenAI's shape.
        account(call, 500, error_type="internal_error")
        raise


async def _answer(request: web.Request, call: Call, tap=None) -> web.StreamResponse:
    """Steps 3 and 4: an upstream's answer, relayed; `tap` sees a stream's upstream bytes (the cache)."""
    family = call.family
    if family.forward is not None:
        reply = await family.forward(call)
    else:
        reply = await request.app[FORWARDER].send(call.snapshot, call.model, call.parsed, call.request_id, family)
    call.upstream = reply.upstream.name
    if call.parsed.stream:
        return await stream(request, call, reply, tap=tap)
    return complete(call, reply)


def endpoint(family: Family) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def run(request: web.Request) -> web.StreamResponse:
        return await handle(request, family)
    run.__name__ = run.__qualname__ = f"{family.name}_endpoint"
    return run


def routes(families: tuple[Family, ...], prefixes: tuple[str, ...]) -> list[web.RouteDef]:
    out = []
    for family in families:
        handler = endpoint(family)
        out.extend(web.route(family.method, prefix + path, handler)
                   for prefix in prefixes for path in family.paths)
    return out

"""The one pipeline every route family runs:

    intake → admission → [cache] → route (routing/rules.py) → forward (upstream/forward.py) → relay → accounting

The cache step (proxy/cache/step.py) runs only for a plan that enables the
cache; it wraps route, forward and relay, and may answer without them.

`handle` is the whole life of a request; `routes` turns family descriptions
into aiohttp routes. A failure anywhere becomes the family's error shape here,
and whatever was admitted is accounted exactly once, whatever happens.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from aiohttp import web

from .. import access_log
from ..appkeys import CONFIG, FORWARDER, REQUEST_IDS, TRACER
from ..bodies import read_body
from ..cache import step as cache_step
from ..errors import GatewayError, UpstreamClientError
from .accounting import account
from .admission import admit
from .call import Call
from .families import Family
from .intake import parse_request
from .relay import complete, stream
from .routing import route_facts
from .scrub import scrub_client_error
from ..capture.draft import start as start_capture


def request_id_of(request: web.Request) -> str:
    return request.app[REQUEST_IDS].of(request.headers.get("x-request-id"))


async def handle(request: web.Request, family: Family) -> web.StreamResponse:
    app = request.app
    call = Call(app, app[CONFIG].current, family, app[REQUEST_IDS].of(request.headers.get("x-request-id")))
    tracer = call.tracer = app[TRACER]
    if tracer is not None:
        return await _traced(request, call, tracer)
    try:
        return await _run(request, call)
    finally:
        _note(request, call)


async def _traced(request: web.Request, call: Call, tracer) -> web.StreamResponse:
    with tracer.request(request, call.route) as span:
        status = 500  # what the middleware answers for an exception that escapes
        try:
            response = await _run(request, call)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            tracer.finish_request(span, call, status)
            _note(request, call)


def _note(request: web.Request, call: Call) -> None:
    # The middleware writes the one access line per request; these are the pipeline's fields.
    # It reads the live snapshot when the request ends, and so does this: with the line off
    # (the default), nothing is gathered for it.
    server = call.app[CONFIG].current.server
    if not server.access_log:
        return
    parsed = call.parsed
    access_log.note(request, id=call.request_id,
                    model=call.model.name if call.model else (parsed.model if parsed else None),
                    upstream=call.upstream)
    if parsed is not None and call.model is not None and parsed.model != call.model.name:
        # The model that served differs from the one asked for (an alias, a rule, a fallback).
        access_log.note(request, requested_model=parsed.model)
    if server.log_format == "json":
        principal = call.principal
        tokens = call.tokens
        access_log.detail(request, route=call.route,
                          account_id=principal.user_id if principal is not None else None,
                          key_id=principal.key_id if principal is not None else None,
                          prompt_tokens=tokens[0] if tokens else None,
                          completion_tokens=tokens[1] if tokens else None)


async def _run(request: web.Request, call: Call) -> web.StreamResponse:
    family = call.family
    try:
        if call.parsed is not None:
            pass  # a replay: the captured body was parsed by the caller
        elif family.intake is not None:
            call.parsed = await family.intake(request, call.snapshot.server, family)
        else:
            raw = await read_body(request, call.snapshot.server)
            call.parsed = parse_request(family, raw)
        if call.tracer is None:
            await admit(request, call)
        else:
            with call.tracer.step("admission"):
                await admit(request, call)
        call.capture = start_capture(call)
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


async def replay(request: web.Request, family: Family, raw: bytes, principal, replay_of: int) -> web.StreamResponse:
    """Run a captured body through the whole pipeline again, as `principal`
    (its owner), with the new usage row marked `replay_of`. `request` carries
    the headers the pipeline reads (proxy/capture/replay.py sets them)."""
    app = request.app
    call = Call(app, app[CONFIG].current, family, app[REQUEST_IDS].of(None))
    call.principal = principal
    call.replay_of = replay_of
    try:
        call.parsed = parse_request(family, raw)
    except GatewayError as exc:
        return family.error_response(exc, {"x-request-id": call.request_id})
    return await _run(request, call)


async def _answer(request: web.Request, call: Call, tap=None) -> web.StreamResponse:
    """Route, forward and relay: an upstream's answer; `tap` sees a stream's upstream bytes (the cache)."""
    family = call.family
    if family.forward is not None:
        reply = await family.forward(call)
    else:
        forwarder = call.app[FORWARDER]
        route = forwarder.router.route(call.snapshot, call.model, route_facts(request, call))
        reply = await forwarder.send(call.snapshot, call.model, call.parsed, call.request_id, family,
                                     chain=route.chain, prompt_tokens=call.prompt_estimate)
    call.upstream = reply.upstream.name
    call.model = reply.model  # the model that served: priced, counted and logged as such
    if call.parsed.stream:
        if call.tracer is None:
            return await stream(request, call, reply, tap=tap)
        with call.tracer.step("stream"):
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

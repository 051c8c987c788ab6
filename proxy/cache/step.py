"""The pipeline's cache step: after admission, before an upstream is asked.

`serve` wraps the rest of the pipeline (`answer`: forward and relay). It
decides (policy.py) whether this request may read or write the cache; when it
may not, or a routing rule with a weighted split matches (routed.py), it calls
`answer` and costs a plan lookup. Otherwise:

- a live entry answers at once, whole or as a synthesized stream, with
  `x-bluesminds-cache: HIT` and `age`; it is accounted as a hit (0 upstream
  tokens, the plan's per-hit price, the cost it saved);
- an identical request already asking upstream is waited for (flight.py);
- a miss asks upstream through `answer`, tagged `x-bluesminds-cache: MISS`, and
  a 200 answer (a stream only when it completed) is stored for the plan's ttl.

Only successful answers are stored; errors never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

import orjson
from aiohttp import web

from ..appkeys import CACHE, CACHE_FLIGHTS, CLOCK
from ..gateway.accounting import account
from ..gateway.call import Call
from ..gateway.rewrite import tenant_view
from .assemble import assembler_for
from .keying import cache_key, scope_of
from .policy import HEADER, decide
from .replay import stream_bytes
from .routed import SPLIT, route_tag

Answer = Callable[..., Awaitable[web.StreamResponse]]  # (request, call, tap=None)


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What accounting needs to know of a hit."""

    price_nano: int  # billed: the plan's flat per-hit price
    saved_nano: int  # not billed: what the answer cost when it was bought


async def serve(request: web.Request, call: Call, answer: Answer) -> web.StreamResponse:
    plan_cache = call.plan.cache
    parsed = call.parsed
    decision = decide(family=call.family.name, body=parsed.body, plan=plan_cache,
                      key_setting=call.principal.cache, headers=request.headers)
    if not decision.write:
        return await answer(request, call)
    route = route_tag(request, call)
    if route is SPLIT:
        return await answer(request, call)
    scope = scope_of(user_id=call.principal.user_id, plan=call.plan.name, shared=plan_cache.shared)
    key = cache_key(family=call.family.name, model=call.model.name, body=parsed.body, scope=scope, route=route)
    if key is None:
        return await answer(request, call)
    app = request.app
    store = app[CACHE]
    if decision.read:
        entry = await store.get(key)
        if entry is not None:
            return await _hit(request, call, entry.body, age=app[CLOCK]() - entry.stored_at)
        flights = app[CACHE_FLIGHTS]
        flight, leads = flights.join(key)
        if not leads:
            await flight.done.wait()
            if flight.body is not None:
                return await _hit(request, call, flight.body, age=0.0)
            return await _miss(request, call, answer, key, None)
        return await _miss(request, call, answer, key, flight)
    return await _miss(request, call, answer, key, None)


async def _miss(request: web.Request, call: Call, answer: Answer, key: str, flight) -> web.StreamResponse:
    app = request.app
    snapshot = call.snapshot
    call.rl_headers[HEADER] = "MISS"
    body: bytes | None = None
    try:
        if call.parsed.stream:
            assembler = assembler_for(call.family.name, snapshot.cache.max_entry_bytes)
            response = await answer(request, call, tap=assembler)
            assembled = assembler.body() if assembler is not None else None
            if assembled is not None and response.status == 200:
                model = call.model
                body = tenant_view(model.upstream_model, model.name, events=False)(orjson.dumps(assembled))
        else:
            response = await answer(request, call)
            if response.status == 200 and isinstance(response, web.Response) and isinstance(response.body, bytes):
                body = response.body
        if body is not None:
            ttl = call.plan.cache.ttl_seconds or snapshot.cache.ttl_seconds
            if not await app[CACHE].put(key, body, ttl=ttl):
                body = None  # too large to keep: followers ask for themselves
        return response
    finally:
        if flight is not None:
            app[CACHE_FLIGHTS].finish(key, flight, body)


def _saved_nano(call: Call, body: bytes) -> int:
    family = call.family
    tokens = family.usage_tokens(family.usage_of(body))
    pricing = call.plan.price.pricing_for(call.model)
    if tokens is None or pricing is None:
        return 0
    return pricing.cost_nano(tokens[0], tokens[1], tokens[2] or 0)


async def _hit(request: web.Request, call: Call, body: bytes, *, age: float) -> web.StreamResponse:
    headers = call.rl_headers
    headers["x-request-id"] = call.request_id
    headers[HEADER] = "HIT"
    headers["age"] = str(max(0, int(age)))
    call.mark_first_byte()
    account(call, 200, tokens=(0, 0, None),
            hit=CacheHit(price_nano=call.plan.cache.price_per_hit_nano, saved_nano=_saved_nano(call, body)))
    if not call.parsed.stream:
        headers["Content-Type"] = "application/json"
        return web.Response(status=200, body=body, headers=headers)
    headers["Content-Type"] = "text/event-stream"
    headers["Cache-Control"] = "no-cache"
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(request)
    try:
        await response.write(stream_bytes(call.family.name, body, include_usage=call.parsed.include_usage))
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; the hit is accounted as served, as a sent non-stream answer is
    return response

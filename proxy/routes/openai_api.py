"""The OpenAI-compatible /v1 routes: one pipeline, four thin handlers.

Request life (DESIGN.md): bound and parse the body → authenticate the key →
resolve the model and check scope and allow-list → admit through the limiter
(RPM, TPM estimate, quotas, budget) → forward with failover → relay → settle the
limiter with the real usage and queue one usage row. The config snapshot is
read once, at the top, and used to the end of the request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time

import orjson
from aiohttp import web

from .. import access_log
from ..appkeys import CLOCK, CONFIG, HEALTH
from ..auth.authenticator import AUTHENTICATOR
from ..auth.client_address import client_address
from ..config.snapshot import ModelConfig, PlanConfig, Snapshot
from ..errors import GatewayError, ModelNotFound, PermissionDenied, error_response
from ..limits import LIMITER
from ..metrics import METRICS
from ..upstream.forward import FORWARDER, UpstreamReply
from ..bodies import read_body
from ..upstream.request import ROUTE_SCOPE, ParsedRequest, parse_request
from ..upstream.sse import SSERelay, error_event
from ..upstream.usage_bytes import extract_usage, usage_tokens
from ..usage.record import UsageRecord
from ..usage.recorder import USAGE
from ..usage.tokens import CHARS_PER_TOKEN, estimate_prompt_tokens

log = logging.getLogger("bluesminds.access")

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Generated ids: a random per-process prefix and a counter. Unique across
# restarts and processes without a syscall or a uuid per request.
_ID_PREFIX = "req_" + secrets.token_hex(6)
_id_counter = itertools.count(1)


def request_id_of(request: web.Request) -> str:
    """The client's x-request-id when it is short and plain, else a new one."""
    given = request.headers.get("x-request-id")
    if given and _SAFE_REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


class _Call:
    """What one /v1 request carries through the pipeline, for accounting at the end."""

    __slots__ = ("app", "snapshot", "route", "request_id", "started", "parsed", "principal",
                 "model", "plan", "reservation", "rl_headers", "upstream", "ttfb", "accounted",
                 "prompt_estimate")

    def __init__(self, app: web.Application, snapshot: Snapshot, route: str, request_id: str) -> None:
        self.app = app
        self.snapshot = snapshot
        self.route = route
        self.request_id = request_id
        self.started = time.perf_counter()
        self.parsed: ParsedRequest | None = None
        self.principal = None
        self.model: ModelConfig | None = None
        self.plan: PlanConfig | None = None
        self.reservation = None
        self.rl_headers: dict[str, str] = {}
        self.upstream: str | None = None
        self.ttfb: float | None = None
        self.accounted = False
        self.prompt_estimate = 0  # counted once at admission; reused when upstream reports no usage

    def account(self, status: int, *, tokens: tuple[int, int, int | None] | None = None,
                estimated: bool = False, partial: bool = False, error_type: str | None = None) -> None:
        """Settle the limiter and queue the usage row; runs exactly once per admitted request."""
        if self.accounted:
            return
        self.accounted = True
        app = self.app
        latency = time.perf_counter() - self.started
        model_name = self.model.name if self.model else (self.parsed.model if self.parsed else "")
        prompt = completion = 0
        cached = None
        if tokens is not None:
            prompt, completion, cached = tokens
        pricing = self.model.pricing if self.model else None
        cost = pricing.cost(prompt, completion, cached or 0) if pricing and tokens else 0.0
        if self.reservation is not None:
            limiter = app[LIMITER]
            if tokens is None:
                limiter.release(self.reservation)
            else:
                limiter.settle(self.reservation, tokens=prompt + completion, cost=cost)
        # Metrics labels only ever carry configured model names, never a client's string.
        metrics = app[METRICS]
        label = self.model.name if self.model else ""
        metrics.observe_request(self.route, status, label, self.upstream or "", latency)
        if tokens is not None:
            metrics.observe_tokens(label, prompt, completion)
        principal = self.principal
        if principal is not None:
            app[USAGE].record(UsageRecord(
                ts=app[CLOCK](), request_id=self.request_id, user_id=principal.user_id,
                key_id=principal.key_id, route=self.route,
                requested_model=self.parsed.model if self.parsed else "",
                served_model=model_name, upstream=self.upstream, status=status, error_type=error_type,
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                cached_tokens=cached, estimated=estimated, partial=partial, cost_usd=cost,
                latency_ms=latency * 1000.0,
                ttfb_ms=None if self.ttfb is None else self.ttfb * 1000.0,
                stream=bool(self.parsed and self.parsed.stream)))


async def _admit(request: web.Request, call: _Call) -> None:
    """Everything before forwarding: body, key, model, limits."""
    snapshot = call.snapshot
    raw = await read_body(request, snapshot.server)
    parsed = call.parsed = parse_request(call.route, raw)
    principal = call.principal = await request.app[AUTHENTICATOR].authenticate(
        request.headers.get("Authorization"), snapshot, client=client_address(request))
    scope = ROUTE_SCOPE[call.route]
    if scope not in principal.scopes:
        raise PermissionDenied(f"This API key lacks the '{scope}' scope; create a key that has it.",
                               code="insufficient_scope")
    model = snapshot.resolve_model(parsed.model)
    if model is None:
        raise ModelNotFound(parsed.model)
    call.model = model
    plan = snapshot.plans.get(principal.plan)
    if plan is None:
        raise PermissionDenied(f"Your plan '{principal.plan}' is not offered any more; ask the operator "
                               "to move your account to another plan.", code="plan_not_found")
    call.plan = plan
    if not principal.may_use_model(model.name, plan.models):
        raise PermissionDenied(f"This API key may not use the model `{model.name}`.", param="model",
                               code="model_not_allowed")
    prompt_estimate = call.prompt_estimate = estimate_prompt_tokens(call.route, parsed.body)
    completion_estimate = 0 if call.route == "embeddings" else (parsed.max_tokens or plan.default_max_tokens)
    cost_estimate = model.pricing.cost(prompt_estimate, completion_estimate) if model.pricing else 0.0
    limiter = request.app[LIMITER]
    try:
        call.reservation = limiter.admit(principal, plan, estimated_tokens=prompt_estimate + completion_estimate,
                                         estimated_cost=cost_estimate)
    except GatewayError as exc:
        request.app[METRICS].limiter_rejected(exc.type)
        raise
    call.rl_headers = limiter.headers(call.reservation)


async def _handle(request: web.Request, route: str) -> web.StreamResponse:
    app = request.app
    call = _Call(app, app[CONFIG].current, route, request_id_of(request))
    try:
        return await _run(request, call)
    finally:
        # The middleware writes the one access line per request; these are the /v1 fields.
        access_log.note(request, id=call.request_id,
                        model=call.model.name if call.model else (call.parsed.model if call.parsed else None),
                        upstream=call.upstream)


async def _run(request: web.Request, call: _Call) -> web.StreamResponse:
    app = request.app
    try:
        await _admit(request, call)
        reply = await app[FORWARDER].send(call.snapshot, call.model, call.parsed, call.request_id)
        call.upstream = reply.upstream.name
        if call.parsed.stream:
            return await _relay_stream(request, call, reply)
        return _complete(call, reply)
    except GatewayError as exc:
        call.account(exc.status, error_type=exc.code or exc.type)
        headers = {"x-request-id": call.request_id, **call.rl_headers}
        return error_response(exc, headers)
    except asyncio.CancelledError:
        call.account(499, error_type="client_disconnected")
        raise
    except Exception:
        # A bug must not keep the key's reservation (concurrency, quotas) forever;
        # the middleware turns it into a 500 in OpenAI's shape.
        call.account(500, error_type="internal_error")
        raise


def _complete(call: _Call, reply: UpstreamReply) -> web.Response:
    tokens = usage_tokens(extract_usage(reply.body))
    estimated = tokens is None
    if tokens is None:
        tokens = (call.prompt_estimate, _tokens_for_chars(_answer_chars(reply.body)), None)
    call.ttfb = time.perf_counter() - call.started
    call.account(reply.status, tokens=tokens, estimated=estimated)
    headers = call.rl_headers  # a fresh dict per request, ours to extend
    headers["Content-Type"] = "application/json"
    headers["x-request-id"] = call.request_id
    headers["x-bluesminds-upstream"] = reply.upstream.name
    return web.Response(status=reply.status, body=reply.body, headers=headers)


async def _relay_stream(request: web.Request, call: _Call, reply: UpstreamReply) -> web.StreamResponse:
    health = request.app[HEALTH]
    relay = SSERelay(strip_usage=not call.parsed.include_usage)
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "x-request-id": call.request_id, "x-bluesminds-upstream": reply.upstream.name, **call.rl_headers})
    timeouts = reply.upstream.timeouts
    deadline = reply.started + timeouts.total  # the whole answer, however it trickles
    outcome = "cut"
    try:
        await response.prepare(request)
        call.ttfb = time.perf_counter() - call.started
        chunk = reply.first_chunk
        upstream = reply.response
        while chunk:
            out = relay.feed(chunk)
            if out:
                await _write_to_client(response, out)
            if relay.done:
                break  # nothing after [DONE] matters, even if the upstream keeps the socket open
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError
            # first_byte is also the longest silence tolerated between chunks.
            chunk = await upstream.readany(min(timeouts.first_byte, remaining))
        if relay.saw_error:
            outcome = "upstream_error"  # the upstream reported it in-band; the client has it already
        elif relay.done:
            outcome = "done"
        else:
            await _write_to_client(response, error_event(
                "The upstream closed the stream before it finished; the answer is incomplete."))
    except asyncio.CancelledError:
        outcome = "client_left"
        raise
    except _ClientGone:
        outcome = "client_left"
    except Exception as exc:  # the upstream connection broke or timed out mid-stream
        log.warning("stream from %s interrupted: %s", reply.upstream.name, type(exc).__name__)
        try:
            await _write_to_client(response, error_event(
                "The upstream connection failed mid-stream; the answer is incomplete."))
        except _ClientGone:
            outcome = "client_left"
    finally:
        reply.close(health, ok=outcome in ("done", "upstream_error"),
                    reason="stream interrupted" if outcome == "cut" else "")
        _account_stream(call, relay, outcome)
    if outcome == "client_left":
        return response
    try:
        await response.write_eof()
    except ConnectionError:
        pass  # the client left after the last byte; the stream was complete
    return response


class _ClientGone(Exception):
    """Writing to the client failed: it went away."""


async def _write_to_client(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError as exc:
        raise _ClientGone() from exc


def _account_stream(call: _Call, relay: SSERelay, outcome: str) -> None:
    tokens = relay.tokens()
    estimated = tokens is None
    if tokens is None:
        # A partial stream is billed for what was delivered.
        tokens = (call.prompt_estimate, _tokens_for_chars(relay.content_chars), None)
    status = {"done": 200, "client_left": 499}.get(outcome, 502)
    call.account(status, tokens=tokens, estimated=estimated, partial=outcome != "done",
                 error_type=None if outcome == "done" else outcome)


def _tokens_for_chars(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _answer_chars(body: bytes) -> int:
    """Characters of generated text in a non-stream answer that came without usage."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    total = 0
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            if isinstance(text, str):
                total += len(text)
    return total


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "embeddings")


def _require_models_scope(principal) -> None:
    if "models" not in principal.scopes:
        raise PermissionDenied("This API key lacks the 'models' scope; create a key that has it.",
                               code="insufficient_scope")


async def list_models(request: web.Request) -> web.Response:
    snapshot = request.app[CONFIG].current
    request_id = request_id_of(request)
    principal = await request.app[AUTHENTICATOR].authenticate(
        request.headers.get("Authorization"), snapshot, client=client_address(request))
    _require_models_scope(principal)
    plan = snapshot.plans.get(principal.plan)
    allowed = plan.models if plan else ()
    data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in snapshot.models.values() if principal.may_use_model(m.name, allowed)]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}),
                        content_type="application/json", headers={"x-request-id": request_id})


async def retrieve_model(request: web.Request) -> web.Response:
    snapshot = request.app[CONFIG].current
    request_id = request_id_of(request)
    principal = await request.app[AUTHENTICATOR].authenticate(
        request.headers.get("Authorization"), snapshot, client=client_address(request))
    _require_models_scope(principal)
    name = request.match_info["model"]
    model = snapshot.resolve_model(name)
    plan = snapshot.plans.get(principal.plan)
    if model is None or plan is None or not principal.may_use_model(model.name, plan.models):
        raise ModelNotFound(name)
    return web.Response(body=orjson.dumps({"id": model.name, "object": "model", "created": model.created,
                                           "owned_by": model.owned_by}), content_type="application/json",
                        headers={"x-request-id": request_id})


def setup(app: web.Application) -> None:
    for prefix in ("/v1", "/api/v1"):
        app.router.add_post(prefix + "/chat/completions", chat_completions)
        app.router.add_post(prefix + "/completions", completions)
        app.router.add_post(prefix + "/embeddings", embeddings)
        app.router.add_get(prefix + "/models", list_models)
        app.router.add_get(prefix + "/models/{model}", retrieve_model)


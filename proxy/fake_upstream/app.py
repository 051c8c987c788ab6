"""The fake upstream's aiohttp app: API routes, health routes, control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from . import anthropic, media
from .faults import LANDING, _apply_fault, _drop, _error, parse_fault
from . import responses
from .payloads import (DEFAULT_MODELS, _BadRequest, _Builder, _chat, _completions, _embeddings, _models,
                       _precompute)
from .state import CONFIG_KEY, STATE_KEY, _State

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def _stream(
    request: web.Request, state: _State, delay: float, events: list[bytes], cut_after: int | None
) -> web.StreamResponse:
    response = web.StreamResponse(headers=_SSE_HEADERS)
    state.open_streams += 1
    try:
        await response.prepare(request)
        if cut_after is None and not delay:
            # Nothing to pace or cut: one write is far cheaper than one per event.
            await response.write(b"".join(events))
            return response
        for i, event in enumerate(events):
            if cut_after is not None and i >= cut_after:
                _drop(request, rst=False)
                return response
            if i and delay:
                await asyncio.sleep(delay)
            await response.write(event)
        return response
    except ConnectionError:  # the client left mid-stream
        state.cancelled += 1
        return response
    finally:
        state.open_streams -= 1


def _api(builder: _Builder, *, with_request: bool = False) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a body builder with accounting, latency, faults, auth and errors.
    `with_request`: the builder also needs the request (path ids, stored state)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        cfg = request.app[CONFIG_KEY]
        state = request.app[STATE_KEY]
        state.requests += 1
        state.by_path[request.path] = state.by_path.get(request.path, 0) + 1
        state.last_headers = {k.lower(): v for k, v in request.headers.items()}
        state.in_flight += 1
        try:
            raw = await request.read()
            body: Any = None
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = raw.decode(errors="replace")
            state.last_body = body

            fault = state.take_fault(health=False)
            delay = cfg.latency + (fault.latency if fault else 0.0)
            if delay:
                await asyncio.sleep(delay)
            if fault is not None:
                early = await _apply_fault(request, cfg, fault)
                if early is not None:
                    return early
            cut_after = fault.cut_after if fault else None

            result: bytes | list[bytes] | web.Response
            if cfg.auth is not None and request.headers.get("Authorization") != cfg.auth:
                result = _error(
                    401,
                    "Incorrect API key provided.",
                    type="invalid_request_error",
                    code="invalid_api_key",
                )
            elif request.method == "POST" and not isinstance(body, dict) and (raw or not with_request):
                # (a bodiless POST is how clients call /responses/{id}/cancel)
                result = _error(400, "request body must be a JSON object")
            else:
                try:
                    result = (builder(request, cfg, state, body or {}) if with_request
                              else builder(cfg, state, body or {}))
                except _BadRequest as exc:
                    result = _error(400, str(exc), param=exc.param)

            if isinstance(result, list):
                return await _stream(request, state, cfg.chunk_delay, result, cut_after)
            if cut_after is not None:
                return _drop(request, rst=False)
            if isinstance(result, bytes):
                return web.Response(body=result, content_type="application/json")
            return result
        except asyncio.CancelledError:  # the client left (or the server is stopping)
            state.cancelled += 1
            raise
        except ConnectionError:
            state.cancelled += 1
            return web.Response()
        finally:
            state.in_flight -= 1

    return handler


def _health(body: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        cfg = request.app[CONFIG_KEY]
        state = request.app[STATE_KEY]
        state.health_checks += 1
        fault = state.take_fault(health=True)
        if fault is not None:
            if fault.latency:
                await asyncio.sleep(fault.latency)
            try:
                early = await _apply_fault(request, cfg, fault)
                if early is not None:
                    return early
            except ConnectionError:
                return web.Response()
            if fault.cut_after is not None:
                return _drop(request, rst=False)
        return web.Response(body=body, content_type="application/json")

    return handler


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _get_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].snapshot())


async def _get_faults(request: web.Request) -> web.Response:
    fault = request.app[STATE_KEY].fault
    return _json({"fault": fault.as_dict() if fault else None})


async def _set_faults(request: web.Request) -> web.Response:
    try:
        fault = parse_fault(orjson.loads(await request.read()))
    except (ValueError, orjson.JSONDecodeError) as exc:
        return _error(400, f"bad fault plan: {exc}")
    request.app[STATE_KEY].fault = fault
    return _json({"fault": fault.as_dict()})


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].fault = None
    return _json({"fault": None})


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.reset()
    return _json(state.snapshot())


async def _landing(request: web.Request) -> web.Response:
    return _json("landed")


async def _tag_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["x-fake-upstream"] = request.app[CONFIG_KEY].name
    request_id = request.headers.get("x-request-id")
    if request_id is not None:
        response.headers["x-request-id"] = request_id


def create_fake_app(
    *,
    latency: float = 0.0,
    stream_chunks: int = 5,
    chunk_delay: float = 0.0,
    name: str = "fake",
    api_key: str | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
) -> web.Application:
    """Build the fake upstream app; all its state lives under STATE_KEY."""
    if stream_chunks < 1:
        raise ValueError("stream_chunks must be at least 1")
    if latency < 0 or chunk_delay < 0:
        raise ValueError("latency and chunk_delay must be non-negative")

    app = web.Application()
    cfg = _precompute(name, latency, stream_chunks, chunk_delay, api_key, models)
    app[CONFIG_KEY] = cfg
    app[STATE_KEY] = _State()
    app.on_response_prepare.append(_tag_response)

    chat, completions, embeddings, model_list = (
        _api(b) for b in (_chat, _completions, _embeddings, _models)
    )
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat)
        app.router.add_post(f"{prefix}/completions", completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_get(f"{prefix}/models", model_list)
    # Anthropic's Messages API and the media families (anthropic.py, media.py).
    uploads = media.upload_api()
    for path, builder in {**anthropic.BUILDERS, **media.BUILDERS}.items():
        handler = _api(builder)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}{path}", handler)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/audio/transcriptions", uploads)
        app.router.add_post(f"{prefix}/audio/translations", uploads)
    responses.add_routes(app, lambda builder: _api(builder, with_request=True))

    app.router.add_get("/health/liveliness", _health(orjson.dumps("I'm alive!")))
    app.router.add_get(
        "/health/readiness",
        _health(orjson.dumps({"status": "healthy", "db": "Not connected", "upstream": name})),
    )

    app.router.add_get(LANDING, _landing)
    app.router.add_get("/_fake/stats", _get_stats)
    app.router.add_get("/_fake/faults", _get_faults)
    app.router.add_post("/_fake/faults", _set_faults)
    app.router.add_delete("/_fake/faults", _clear_faults)
    app.router.add_post("/_fake/reset", _reset)
    return app

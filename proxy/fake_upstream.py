"""A fake OpenAI-compatible upstream that behaves like a LiteLLM proxy.

Tests, the demo and the benchmarks point the gateway at it. Every API route is
served both under `/v1` and without it, as LiteLLM does:

    POST /v1/chat/completions   non-stream and SSE stream
    POST /v1/completions        legacy text completions, stream too
    POST /v1/embeddings         float or base64 (little-endian float32) vectors
    GET  /v1/models             OpenAI list shape
    GET  /health/liveliness     200 "I'm alive!" (JSON string, like LiteLLM)
    GET  /health/readiness      200 {"status": "healthy", ...}

Answers are deterministic so tests can assert exact numbers:

    content            the pieces "<name>", " says", " hello", " from", ...
                       (the upstream name first, so tests see who answered)
    completion_tokens  pieces emitted = min(stream_chunks, max_tokens)
                       (finish_reason "length" when max_tokens cut it short)
    prompt_tokens      chat: whitespace-separated words of each message's
                       text + 1 per message; completions and embeddings:
                       words of each string, or length of each token array

A stream sends one chunk with the assistant role, one chunk per piece, one
chunk with finish_reason, then (with stream_options.include_usage) a chunk
with `"choices": []` and the usage, then `data: [DONE]`.

Control plane (not counted as API requests; last_headers has lower-case keys):

    GET    /_fake/stats    {"requests", "by_path", "in_flight", "open_streams",
                            "cancelled", "health_checks", "last_headers",
                            "last_body", "fault"}
    GET    /_fake/faults   the current plan (or null)
    POST   /_fake/faults   set the fault plan (see parse_fault)
    DELETE /_fake/faults   clear it
    POST   /_fake/reset    zero the counters (in_flight and open_streams are
                           live gauges and stay as they are)

Every response carries `x-fake-upstream: <name>` and echoes `x-request-id`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "FakeUpstream",
    "create_fake_app",
    "parse_fault",
    "run_fake_upstream",
    "start_fake_upstream",
]

DEFAULT_MODELS = ("fake-model", "fake-embedding")
DEFAULT_EMBEDDING_DIM = 8
MAX_EMBEDDING_DIM = 8192

_WORDS = ("says", "hello", "from", "the", "fake", "upstream")
_MODELS_CREATED = 1_700_000_000

# How long stop() lets in-flight handlers finish before cancelling them; a
# stopped upstream should look dead at once, not drain for aiohttp's 60 s.
_SHUTDOWN_TIMEOUT = 0.05
# How often a hung handler checks for a vanished client when the runner does
# not cancel handlers on disconnect (ours and aiohttp's TestServer do).
_HANG_POLL = 0.05

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_LINGER_RST = struct.pack("ii", 1, 0)


# ---------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class _Config:
    """Per-app settings plus everything the hot path can reuse verbatim."""

    name: str
    latency: float
    chunk_delay: float
    stream_chunks: int
    auth: str | None  # the exact Authorization header expected, if any
    id_prefix: str
    pieces: tuple[str, ...]
    full_content: str
    chat_role: bytes  # serialized `choices[0]` objects for stream chunks
    chat_pieces: tuple[bytes, ...]
    chat_finish: dict[str, bytes]
    text_pieces: tuple[bytes, ...]
    text_finish: dict[str, bytes]
    models_body: bytes


@dataclass(slots=True)
class _Fault:
    status: int | None = None
    hang: bool = False
    cut_after: int | None = None
    reset: bool = False
    latency: float = 0.0
    health: bool = False
    retry_after: float = 1
    remaining: int | None = None  # None: every request

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "hang": self.hang,
            "cut_after": self.cut_after,
            "reset": self.reset,
            "latency": self.latency,
            "health": self.health,
            "retry_after": self.retry_after,
            "count": self.remaining,
        }


@dataclass(slots=True)
class _State:
    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    open_streams: int = 0
    cancelled: int = 0
    health_checks: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    last_body: Any = None
    fault: _Fault | None = None
    ids: Iterator[int] = field(default_factory=itertools.count)  # response id suffixes

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "in_flight": self.in_flight,
            "open_streams": self.open_streams,
            "cancelled": self.cancelled,
            "health_checks": self.health_checks,
            "last_headers": dict(self.last_headers),
            "last_body": self.last_body,
            "fault": self.fault.as_dict() if self.fault else None,
        }

    def reset(self) -> None:
        self.requests = self.cancelled = self.health_checks = 0
        self.by_path = {}
        self.last_headers = {}
        self.last_body = None

    def take_fault(self, *, health: bool) -> _Fault | None:
        """The fault this request must suffer, consuming one from its count."""
        fault = self.fault
        if fault is None or (health and not fault.health):
            return None
        if fault.remaining is not None:
            if fault.remaining <= 0:
                return None
            fault.remaining -= 1
        return fault


CONFIG_KEY = web.AppKey("fake_upstream_config", _Config)
STATE_KEY = web.AppKey("fake_upstream_state", _State)


# ---------------------------------------------------------------- faults

_FAULT_ACTIONS = ("status", "hang", "cut_after", "reset")
_FAULT_KEYS = frozenset(_FAULT_ACTIONS) | {"latency", "count", "health", "retry_after"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_fault(plan: Any) -> _Fault:
    """Validate a fault plan; raise ValueError naming what is wrong.

    One action at most, optionally with extra latency:
        {"status": 500|429|..., "retry_after": s}  answer with that error
        {"hang": true}             never answer; wait for the client to leave
        {"cut_after": K}           streams: K SSE events then close, no [DONE];
                                   non-streams: close without any response
        {"reset": true}            drop the connection (TCP RST) at once
        {"latency": seconds}       extra delay before answering
    Common keys: "count": N affected requests (absent or null: all of them);
    "health": true to hit the health routes too.
    """
    if not isinstance(plan, dict):
        raise ValueError("fault plan must be a JSON object")
    unknown = set(plan) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys {sorted(unknown)}; known: {sorted(_FAULT_KEYS)}")
    # `is` checks: cut_after 0 is an action although 0 == False.
    actions = [k for k in _FAULT_ACTIONS if plan.get(k) is not None and plan.get(k) is not False]
    if len(actions) > 1:
        raise ValueError(f"pick one fault action, got {actions}")
    if not actions and not plan.get("latency"):
        raise ValueError(f"fault plan needs one of {list(_FAULT_ACTIONS)} or latency")

    status = plan.get("status")
    if status is not None and not (_is_int(status) and 400 <= status <= 599):
        raise ValueError("status must be an integer HTTP error code (400-599)")
    cut_after = plan.get("cut_after")
    if cut_after is not None and not (_is_int(cut_after) and cut_after >= 0):
        raise ValueError("cut_after must be a non-negative integer")
    count = plan.get("count")
    if count is not None and not (_is_int(count) and count >= 0):
        raise ValueError("count must be a non-negative integer or null")
    for key in ("latency", "retry_after"):
        if key in plan and not (_is_number(plan[key]) and plan[key] >= 0):
            raise ValueError(f"{key} must be a non-negative number of seconds")
    for key in ("hang", "reset", "health"):
        if key in plan and not isinstance(plan[key], bool):
            raise ValueError(f"{key} must be true or false")

    return _Fault(
        status=status,
        hang=plan.get("hang", False),
        cut_after=cut_after,
        reset=plan.get("reset", False),
        latency=float(plan.get("latency", 0.0)),
        health=plan.get("health", False),
        retry_after=plan.get("retry_after", 1),
        remaining=count,
    )


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error")


def _error(
    status: int,
    message: str,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "error": {
            "message": message,
            "type": type or _error_type(status),
            "param": param,
            "code": code,
        }
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _drop(request: web.BaseRequest, *, rst: bool) -> web.Response:
    """Close the connection without a (complete) response.

    rst=False flushes what was already written, then FIN: a stream looks cut
    short. rst=True discards everything and sends a TCP reset.
    """
    transport = request.transport
    if transport is not None:
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            transport.abort()
        else:
            transport.close()
    # aiohttp finds the transport closed when it tries to send this and gives
    # up quietly, which is what we want.
    return web.Response()


async def _wait_for_disconnect(request: web.BaseRequest) -> None:
    # With handler cancellation the sleep is cancelled as soon as the client
    # leaves; polling the transport covers runners without it.
    while (transport := request.transport) is not None and not transport.is_closing():
        await asyncio.sleep(_HANG_POLL)
    raise ConnectionResetError("client went away")


async def _apply_fault(
    request: web.BaseRequest, cfg: _Config, fault: _Fault
) -> web.StreamResponse | None:
    """Answer (or refuse to) per the fault; None lets the request through."""
    if fault.status is not None:
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.status == 429 else None
        return _error(
            fault.status,
            f"{cfg.name}: injected fault (HTTP {fault.status})",
            code="rate_limit_exceeded" if fault.status == 429 else None,
            headers=headers,
        )
    if fault.hang:
        await _wait_for_disconnect(request)
    if fault.reset:
        return _drop(request, rst=True)
    return None


# ---------------------------------------------------------------- API bodies


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model must be a non-empty string", "model")
    return model


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):  # content parts: only text parts count
        return sum(
            len(part["text"].split())
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def _prompt_items(value: Any, param: str) -> list[tuple[bytes, int]]:
    """Split a prompt/input into (key, tokens) items.

    Accepts a string, a list of strings, a token array, or a list of token
    arrays, as the OpenAI API does. The key seeds deterministic embeddings.
    """
    if isinstance(value, str):
        return [(value.encode(), len(value.split()))]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [(v.encode(), len(v.split())) for v in value]
        if all(_is_int(v) for v in value):
            return [(orjson.dumps(value), len(value))]
        if all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value):
            return [(orjson.dumps(v), len(v)) for v in value]
    raise _BadRequest(
        f"{param} must be a string, an array of strings, or token arrays", param
    )


def _completion_size(cfg: _Config, body: dict[str, Any]) -> tuple[int, str]:
    """How many pieces to emit and the resulting finish_reason."""
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    if cap is None:
        return cfg.stream_chunks, "stop"
    if not _is_int(cap) or cap < 0:
        raise _BadRequest("max_tokens must be a non-negative integer", "max_tokens")
    if cap < cfg.stream_chunks:
        return cap, "length"
    return cfg.stream_chunks, "stop"


def _content(cfg: _Config, n: int) -> str:
    return cfg.full_content if n == cfg.stream_chunks else "".join(cfg.pieces[:n])


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _stream_events(
    head: bytes,
    include_usage: bool,
    choices: Sequence[bytes],
    usage: dict[str, int],
) -> list[bytes]:
    """SSE events: `head` + each serialized choice, then usage and [DONE].

    `head` is everything up to and including `"choices":[`, shared by every
    chunk, so a chunk costs two concatenations instead of a JSON dump.
    """
    tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
    events = [head + choice + tail for choice in choices]
    if include_usage:
        events.append(head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n")
    events.append(_DONE)
    return events


def _stream_head(object_: bytes, cid: str, created: int, model: str) -> bytes:
    return b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[' % (
        cid.encode(),
        object_,
        created,
        orjson.dumps(model),
    )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chat(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes | list[bytes]:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages must be a non-empty array", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("each message must be an object", "messages")
    prompt = sum(_words(m.get("content")) + 1 for m in messages)
    n, finish = _completion_size(cfg, body)
    usage = _usage(prompt, n)
    cid = f"chatcmpl-{cfg.id_prefix}{next(state.ids):x}"
    created = int(time.time())

    if body.get("stream") is True:
        head = _stream_head(b"chat.completion.chunk", cid, created, model)
        choices = [cfg.chat_role, *cfg.chat_pieces[:n], cfg.chat_finish[finish]]
        return _stream_events(head, _include_usage(body), choices, usage)

    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _content(cfg, n)},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }
    )


def _completions(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes | list[bytes]:
    model = _model(body)
    prompt = sum(tokens for _, tokens in _prompt_items(body.get("prompt"), "prompt"))
    n, finish = _completion_size(cfg, body)
    usage = _usage(prompt, n)
    cid = f"cmpl-{cfg.id_prefix}{next(state.ids):x}"
    created = int(time.time())

    if body.get("stream") is True:
        head = _stream_head(b"text_completion", cid, created, model)
        choices = [*cfg.text_pieces[:n], cfg.text_finish[finish]]
        return _stream_events(head, _include_usage(body), choices, usage)

    return orjson.dumps(
        {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"text": _content(cfg, n), "index": 0, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }
    )


def _vector(key: bytes, dims: int) -> list[float]:
    """A deterministic pseudo-random vector seeded by the input.

    Values are multiples of 1/1024 in [-0.5, 0.5): exact in float32, so the
    float and base64 encodings decode to identical numbers.
    """
    x = zlib.crc32(key)
    out = []
    for _ in range(dims):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(((x >> 16) & 0x3FF) / 1024 - 0.5)
    return out


def _embeddings(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes:
    model = _model(body)
    items = _prompt_items(body.get("input"), "input")
    dims = body.get("dimensions", DEFAULT_EMBEDDING_DIM)
    if not _is_int(dims) or not 1 <= dims <= MAX_EMBEDDING_DIM:
        raise _BadRequest(f"dimensions must be an integer in 1..{MAX_EMBEDDING_DIM}", "dimensions")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise _BadRequest("encoding_format must be 'float' or 'base64'", "encoding_format")

    packer = struct.Struct(f"<{dims}f")  # OpenAI's base64 is little-endian float32
    data = []
    for index, (key, _) in enumerate(items):
        vector = _vector(key, dims)
        embedding: Any = vector if fmt == "float" else base64.b64encode(packer.pack(*vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt = sum(tokens for _, tokens in items)
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )


def _models(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes:
    return cfg.models_body


_Builder = Callable[[_Config, _State, dict[str, Any]], "bytes | list[bytes]"]


# ---------------------------------------------------------------- handlers


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


def _api(builder: _Builder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a body builder with accounting, latency, faults, auth and errors."""

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
            elif request.method == "POST" and not isinstance(body, dict):
                result = _error(400, "request body must be a JSON object")
            else:
                try:
                    result = builder(cfg, state, body or {})
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


async def _tag_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["x-fake-upstream"] = request.app[CONFIG_KEY].name
    request_id = request.headers.get("x-request-id")
    if request_id is not None:
        response.headers["x-request-id"] = request_id


# ---------------------------------------------------------------- app


def _precompute(
    name: str,
    latency: float,
    stream_chunks: int,
    chunk_delay: float,
    api_key: str | None,
    models: Sequence[str],
) -> _Config:
    pieces = tuple(
        name if i == 0 else " " + _WORDS[(i - 1) % len(_WORDS)] for i in range(stream_chunks)
    )

    def chat_choice(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return orjson.dumps(
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        )

    def text_choice(text: str, finish: str | None = None) -> bytes:
        return orjson.dumps({"text": text, "index": 0, "logprobs": None, "finish_reason": finish})

    model_list = {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": _MODELS_CREATED, "owned_by": name}
            for m in models
        ],
    }
    return _Config(
        name=name,
        latency=latency,
        chunk_delay=chunk_delay,
        stream_chunks=stream_chunks,
        auth=f"Bearer {api_key}" if api_key is not None else None,
        id_prefix=os.urandom(6).hex(),  # ids stay unique across upstreams and restarts
        pieces=pieces,
        full_content="".join(pieces),
        chat_role=chat_choice({"role": "assistant", "content": ""}),
        chat_pieces=tuple(chat_choice({"content": p}) for p in pieces),
        chat_finish={r: chat_choice({}, r) for r in ("stop", "length")},
        text_pieces=tuple(text_choice(p) for p in pieces),
        text_finish={r: text_choice("", r) for r in ("stop", "length")},
        models_body=orjson.dumps(model_list),
    )


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

    app.router.add_get("/health/liveliness", _health(orjson.dumps("I'm alive!")))
    app.router.add_get(
        "/health/readiness",
        _health(orjson.dumps({"status": "healthy", "db": "Not connected", "upstream": name})),
    )

    app.router.add_get("/_fake/stats", _get_stats)
    app.router.add_get("/_fake/faults", _get_faults)
    app.router.add_post("/_fake/faults", _set_faults)
    app.router.add_delete("/_fake/faults", _clear_faults)
    app.router.add_post("/_fake/reset", _reset)
    return app



# ---------------------------------------------------------------- running


class FakeUpstream:
    """An in-process fake upstream that tests can stop and revive.

    The first start() picks the port (0: a free one); later starts reuse it,
    and the counters and fault plan survive a restart.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **opts: Any) -> None:
        self.host = host
        self.port = port
        self.app = create_fake_app(**opts)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> _State:
        return self.app[STATE_KEY]

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> FakeUpstream:
        if self._runner is not None:
            return self
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,  # a client leaving cancels its handler
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Close the socket and every connection, as if the process died."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def set_fault(self, plan: dict[str, Any]) -> None:
        self.state.fault = parse_fault(plan)

    def clear_faults(self) -> None:
        self.state.fault = None

    def reset_stats(self) -> None:
        self.state.reset()

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_fake_upstream(host: str = "127.0.0.1", port: int = 0, **opts: Any) -> FakeUpstream:
    """Start a fake upstream in this event loop; `opts` go to create_fake_app."""
    return await FakeUpstream(host, port, **opts).start()


def run_fake_upstream(host: str, port: int, **opts: Any) -> None:
    """Serve a fake upstream until interrupted (the CLI entry point)."""

    def announce(_message: str) -> None:
        # run_app calls this once the socket is bound, so scripts can wait for it.
        print(f"fake upstream listening on http://{host}:{port}", flush=True)

    web.run_app(
        create_fake_app(**opts),
        host=host,
        port=port,
        print=announce,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )

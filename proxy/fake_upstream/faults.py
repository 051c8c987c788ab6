"""Faults a test injects into the fake upstream, and how each is served.

A plan is a JSON object (POST /_fake/faults, or `FakeUpstream.set_fault`),
validated by `parse_fault`. One action at most, optionally with extra latency:

    {"status": 500|429|..., "retry_after": s}
                         answer with that OpenAI-shaped error (400-599)
    {"hang": true}       never answer; wait for the client to leave
    {"cut_after": K}     streams: K SSE events then close, no [DONE];
                         non-streams: close without any response
    {"reset": true}      drop the connection (TCP RST) at once
    {"html": true}       200 text/html: a login page where JSON should be
    {"not_json": true}   200 labelled application/json whose body is not JSON
    {"json_body": V}     200 application/json with exactly the JSON value V
                         (a list, a string, an object of the wrong shape, ...)
    {"raw_status": S}    answer S as it is, no body: 101 (an upgrade, then the
                         connection closes), 204, or a redirect 301/302/303/307/308
                         to /_fake/landing, which answers 200 (so a client that
                         follows redirects looks healthy)
    {"sse_garbage": true}
                         200 text/event-stream of lines that are not OpenAI
                         events: broken JSON, unknown fields, no [DONE]
    {"huge": N}          200 application/json: a valid chat completion of exactly
                         N bytes (at least 300), sent with a Content-Length
    {"cut_body": K}      200 application/json without Content-Length (delimited
                         by the connection's end): K bytes of it, then a TCP RST
    {"echo_auth": true | 4xx}
                         a 4xx (400 unless given) whose message quotes the
                         Authorization header the request carried
    {"latency": seconds} extra delay before answering

Common keys: "count": N affected requests (absent or null: all of them);
"health": true to hit the health routes too.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from .state import _Config

# How often a hung handler checks for a vanished client when the runner does
# not cancel handlers on disconnect (ours and aiohttp's TestServer do).
_HANG_POLL = 0.05
_LINGER_RST = struct.pack("ii", 1, 0)
_UNSET: Any = object()  # json_body may legitimately be null

_HTML = (b"<!doctype html><html><head><title>Sign in</title></head>"
         b"<body><form action=/login>Sign in to continue</form></body></html>")
_SSE_GARBAGE = (b'data: {"id": "chatcmpl-1", "choices": [{"delta": \n\n'
                b"data: this is not json\n\n"
                b"event: surprise\ndata: {}\n\n"
                b": a comment and then nothing\n\n")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RAW_STATUSES = frozenset({101, 204}) | _REDIRECTS
LANDING = "/_fake/landing"
HUGE_MIN = 300  # the smallest padded chat completion is 265 bytes


@dataclass(slots=True)
class Fault:
    status: int | None = None
    hang: bool = False
    cut_after: int | None = None
    reset: bool = False
    latency: float = 0.0
    health: bool = False
    retry_after: float = 1
    remaining: int | None = None  # None: every request
    html: bool = False
    not_json: bool = False
    json_body: Any = _UNSET
    raw_status: int | None = None
    sse_garbage: bool = False
    huge: int | None = None
    cut_body: int | None = None
    echo_auth: int | None = None  # the 4xx status to answer with

    def as_dict(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "hang": self.hang,
            "cut_after": self.cut_after,
            "reset": self.reset,
            "latency": self.latency,
            "health": self.health,
            "retry_after": self.retry_after,
            "count": self.remaining,
        }
        # The newer actions show only when set, so the plan reads as it was given.
        for key in ("html", "not_json", "sse_garbage"):
            if getattr(self, key):
                out[key] = True
        for key in ("raw_status", "huge", "cut_body", "echo_auth"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.json_body is not _UNSET:
            out["json_body"] = self.json_body
        return out


_FAULT_ACTIONS = ("status", "hang", "cut_after", "reset", "html", "not_json", "json_body", "raw_status",
                  "sse_garbage", "huge", "cut_body", "echo_auth")
_FAULT_KEYS = frozenset(_FAULT_ACTIONS) | {"latency", "count", "health", "retry_after"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_fault(plan: Any) -> Fault:
    """Validate a fault plan (see the module docstring); raise ValueError naming what is wrong."""
    if not isinstance(plan, dict):
        raise ValueError("fault plan must be a JSON object")
    unknown = set(plan) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys {sorted(unknown)}; known: {sorted(_FAULT_KEYS)}")
    # `is` checks: cut_after 0 is an action although 0 == False; json_body null is one too.
    actions = [k for k in _FAULT_ACTIONS
               if k in plan and (k == "json_body" or (plan[k] is not None and plan[k] is not False))]
    if len(actions) > 1:
        raise ValueError(f"pick one fault action, got {actions}")
    if not actions and not plan.get("latency"):
        raise ValueError(f"fault plan needs one of {list(_FAULT_ACTIONS)} or latency")

    status = plan.get("status")
    if status is not None and not (_is_int(status) and 400 <= status <= 599):
        raise ValueError("status must be an integer HTTP error code (400-599)")
    raw_status = plan.get("raw_status")
    if raw_status is not None and raw_status not in _RAW_STATUSES:
        raise ValueError(f"raw_status must be one of {sorted(_RAW_STATUSES)}")
    for key in ("cut_after", "cut_body"):
        value = plan.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError(f"{key} must be a non-negative integer")
    huge = plan.get("huge")
    if huge is not None and not (_is_int(huge) and huge >= HUGE_MIN):
        raise ValueError(f"huge must be an integer number of bytes, at least {HUGE_MIN}")
    echo = plan.get("echo_auth")
    if echo is True:
        echo = 400
    elif echo is False:
        echo = None
    elif echo is not None and not (_is_int(echo) and 400 <= echo <= 499):
        raise ValueError("echo_auth must be true or a 4xx status")
    count = plan.get("count")
    if count is not None and not (_is_int(count) and count >= 0):
        raise ValueError("count must be a non-negative integer or null")
    for key in ("latency", "retry_after"):
        if key in plan and not (_is_number(plan[key]) and plan[key] >= 0):
            raise ValueError(f"{key} must be a non-negative number of seconds")
    for key in ("hang", "reset", "health", "html", "not_json", "sse_garbage"):
        if key in plan and not isinstance(plan[key], bool):
            raise ValueError(f"{key} must be true or false")

    return Fault(
        status=status,
        hang=plan.get("hang", False),
        cut_after=plan.get("cut_after"),
        reset=plan.get("reset", False),
        latency=float(plan.get("latency", 0.0)),
        health=plan.get("health", False),
        retry_after=plan.get("retry_after", 1),
        remaining=count,
        html=plan.get("html", False),
        not_json=plan.get("not_json", False),
        json_body=plan["json_body"] if "json_body" in plan else _UNSET,
        raw_status=raw_status,
        sse_garbage=plan.get("sse_garbage", False),
        huge=huge,
        cut_body=plan.get("cut_body"),
        echo_auth=echo,
    )


def huge_body(size: int) -> bytes:
    """A valid chat completion of exactly `size` bytes, padded in its content."""
    def build(pad: int) -> bytes:
        return orjson.dumps({
            "id": "chatcmpl-huge", "object": "chat.completion", "created": 1_700_000_000,
            "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * pad},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    body = build(size - len(build(0)))
    assert len(body) == size
    return body


def _raw_status(request: web.BaseRequest, status: int) -> web.Response:
    if status in _REDIRECTS:
        return web.Response(status=status, headers={"Location": LANDING})
    if status == 204:
        return web.Response(status=204)
    # aiohttp will not send a 101 without taking the connection over: write it by hand.
    transport = request.transport
    if transport is not None:
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n")
        transport.close()
    return web.Response()


def _cut_body(request: web.BaseRequest, size: int) -> web.Response:
    """A close-delimited body that the connection's reset cuts after `size` bytes."""
    transport = request.transport
    if transport is not None:
        body = huge_body(max(HUGE_MIN, size * 2))
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                        + body[:size])
        _reset_after_flush(transport)
    return web.Response()


def _reset_after_flush(transport: asyncio.Transport) -> None:
    # SO_LINGER 0 turns close() into an RST; closing lets asyncio flush what it
    # buffered first, so the peer gets the bytes and then the reset.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.close()


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
    request: web.BaseRequest, cfg: _Config, fault: Fault
) -> web.StreamResponse | None:
    """Answer (or refuse to) per the fault; None lets the request through."""
    if fault.echo_auth is not None:
        # Like a provider that quotes the key it refused: the gateway must scrub it.
        seen = request.headers.get("Authorization", "")
        return _error(fault.echo_auth, f"{cfg.name}: the key {seen!r} is not valid here")
    if fault.html:
        return web.Response(body=_HTML, content_type="text/html")
    if fault.not_json:
        return web.Response(body=b"upstream says: all good", content_type="application/json")
    if fault.json_body is not _UNSET:
        return web.Response(body=orjson.dumps(fault.json_body), content_type="application/json")
    if fault.raw_status is not None:
        return _raw_status(request, fault.raw_status)
    if fault.sse_garbage:
        return web.Response(body=_SSE_GARBAGE, headers={"Content-Type": "text/event-stream"})
    if fault.huge is not None:
        return web.Response(body=huge_body(fault.huge), content_type="application/json")
    if fault.cut_body is not None:
        return _cut_body(request, fault.cut_body)
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


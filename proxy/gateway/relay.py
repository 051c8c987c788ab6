"""Step 4: the upstream's answer to the client, whole or as a stream.

The upstream was chosen and asked by `upstream/forward.py`, which also checked
that the answer is what the family promises. Here it reaches the client; a
stream's end settles the upstream's health through its `Attempt`, the one
object that settles it for both kinds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from ..upstream.forward import UpstreamReply
from .accounting import account, answer_tokens, tokens_for_chars
from .call import Call
from .rewrite import tenant_view
from .scrub import scrub_bytes, secrets_of

log = logging.getLogger("bluesminds.access")


def complete(call: Call, reply: UpstreamReply) -> web.Response:
    tokens, estimated = answer_tokens(call, reply.body)
    call.mark_first_byte()
    body = tenant_view(reply.model.upstream_model, reply.model.name, events=False)(reply.body)
    if call.capture is not None:
        call.capture.answer(body)  # what the client receives, before the row is queued
    account(call, reply.status, tokens=tokens, estimated=estimated)
    if call.family.remember is not None:
        call.family.remember(call, call.family.answer_id(reply.body))
    headers = call.rl_headers  # a fresh dict per request, ours to extend
    headers["Content-Type"] = reply.content_type if call.family.passes_content_type else "application/json"
    headers["x-request-id"] = call.request_id
    headers["x-bluesminds-upstream"] = reply.upstream.name
    return web.Response(status=reply.status, body=body, headers=headers)


class _ClientGone(Exception):
    """Writing to the client failed: it went away."""


async def _write_to_client(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError as exc:
        raise _ClientGone() from exc


def _scrubber(call: Call):
    """Scrubs an in-band error event; the secrets are gathered only if one comes."""
    def scrub(event: bytes) -> bytes:
        return scrub_bytes(event, secrets_of(call.snapshot))
    return scrub


async def stream(request: web.Request, call: Call, reply: UpstreamReply, tap=None) -> web.StreamResponse:
    """`tap.feed` sees every upstream chunk as it arrives (the cache assembles the answer from them)."""
    framing = call.family.framing
    relay = framing.new_relay(strip_usage=not call.parsed.include_usage, scrub=_scrubber(call))
    view = None if framing.binary else tenant_view(reply.model.upstream_model, reply.model.name, events=True)
    response = web.StreamResponse(status=200, headers={
        "Content-Type": framing.content_type or reply.response.content_type, "Cache-Control": "no-cache",
        "x-request-id": call.request_id, "x-bluesminds-upstream": reply.upstream.name, **call.rl_headers})
    timeouts = reply.upstream.timeouts
    deadline = reply.started + timeouts.total  # the whole answer, however it trickles
    if reply.deadline is not None:
        deadline = min(deadline, reply.deadline)  # and the request's own deadline, fallbacks included
    outcome = "cut"
    try:
        await response.prepare(request)
        call.mark_first_byte()
        chunk = reply.first_chunk
        upstream = reply.response
        while chunk:
            if tap is not None:
                tap.feed(chunk)
            out = relay.feed(chunk)
            if out:
                if view is not None:
                    out = view(out)
                if call.capture is not None:
                    call.capture.stream(out)
                await _write_to_client(response, out)
            if relay.done:
                break  # nothing after the terminal event matters, even if the upstream keeps the socket open
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError
            # first_byte is also the longest silence tolerated between chunks.
            chunk = await upstream.readany(min(timeouts.first_byte, remaining))
        if framing.binary:
            relay.done = True  # the body ended cleanly: that is the whole answer
        if relay.saw_error:
            outcome = "upstream_error"  # the upstream reported it in-band; the client has it already
        elif relay.done:
            outcome = "done"
        else:
            await _write_to_client(response, framing.error_event(
                "The upstream closed the stream before it finished; the answer is incomplete."))
    except asyncio.CancelledError:
        outcome = "client_left"
        raise
    except _ClientGone:
        outcome = "client_left"
    except Exception as exc:  # the upstream connection broke or timed out mid-stream
        log.warning("stream from %s interrupted: %s", reply.upstream.name, type(exc).__name__)
        try:
            await _write_to_client(response, framing.error_event(
                "The upstream connection failed mid-stream; the answer is incomplete."))
        except _ClientGone:
            outcome = "client_left"
    finally:
        reply.close(ok=outcome in ("done", "upstream_error"),
                    reason="stream interrupted" if outcome == "cut" else "")
        _account_stream(call, relay, outcome)
        if call.family.remember is not None:
            call.family.remember(call, relay.answer_id)
    if outcome == "client_left":
        return response
    if outcome == "cut" and framing.binary and request.transport is not None:
        # Binary has no in-band error: a cut answer must not end like a whole one.
        request.transport.abort()
        return response
    try:
        await response.write_eof()
    except ConnectionError:
        pass  # the client left after the last byte; the stream was complete
    return response


def _account_stream(call: Call, relay, outcome: str) -> None:
    tokens = relay.tokens()
    estimated = tokens is None
    if tokens is None:
        # A partial stream is billed for what was delivered.
        tokens = (call.prompt_estimate, tokens_for_chars(relay.content_chars), None)
    status = {"done": 200, "client_left": 499}.get(outcome, 502)
    account(call, status, tokens=tokens, estimated=estimated, partial=outcome != "done",
            error_type=None if outcome == "done" else outcome)

"""Anthropic's Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`.

Claude Code and the Anthropic SDKs speak it; LiteLLM serves it. What differs
from OpenAI's families, and is described here as data for the one pipeline:

- The key comes as `x-api-key` (Authorization: Bearer works too).
- Errors are `{"type":"error","error":{"type","message"}}`, with Anthropic's
  type names per status (`error_type`), so the SDKs raise their own classes.
- `max_tokens` is required; the limiter charges it with the input's estimate.
- Streams are typed events: `message_start` (input usage) … `content_block_*`
  … `message_delta` (output usage) … `message_stop`. Only the two usage
  events are parsed; every event is forwarded as it completes. A stream cut
  before `message_stop` gets an in-band `event: error`.
- Usage: `input_tokens` excludes the cache, so the prompt billed is
  input + cache_read + cache_creation, with cache reads at the cached price.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson
from aiohttp import web

from ..errors import GatewayError, InvalidRequest
from ..usage.tokens import estimate_chat_tokens, estimate_text_tokens
from . import sse
from .families import Family, StreamFraming, Tokens
from .intake import ParsedRequest, missing, type_error

# https://docs.claude.com/en/api/errors: the type names the SDKs and Claude Code read.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def error_type(status: int) -> str:
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(message: str, status: int) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(status), "message": message}})


def error_response(exc: GatewayError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(exc.headers)
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(status=exc.status, body=error_body(exc.message, exc.status),
                        content_type="application/json", headers=headers)


def credentials(request: web.Request) -> str | None:
    """The Anthropic SDKs send `x-api-key`; a Bearer header is accepted as on every route."""
    key = request.headers.get("x-api-key")
    if key is not None and key.strip():
        return "Bearer " + key.strip()
    return request.headers.get("Authorization")


# -- the request ----------------------------------------------------------------


def _validate_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list) or not messages:
        raise type_error("messages", "a non-empty array of message objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise type_error(f"messages[{i}]", "an object with a string 'role'")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise type_error("system", "a string or an array of content blocks")


def _parse(family: Family, raw: bytes, body: dict[str, Any], *, needs_max_tokens: bool) -> ParsedRequest:
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise type_error("model", "a non-empty string")
    _validate_messages(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if needs_max_tokens:
            raise missing("max_tokens")
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise type_error("max_tokens", "an integer")
    elif max_tokens < 1:
        raise InvalidRequest("Invalid 'max_tokens': expected an integer of at least 1.", param="max_tokens",
                             code="integer_below_min_value")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise type_error("stream", "a boolean")
    if stream and family.framing is None:
        raise type_error("stream", "false: counting tokens does not stream")
    # Anthropic streams always carry their usage: there is nothing to ask for or strip.
    return ParsedRequest(route=family.name, raw=raw, body=body, model=model, stream=stream,
                         include_usage=True, max_tokens=max_tokens)


def parse_messages(family: Family, raw: bytes, body: dict[str, Any]) -> ParsedRequest:
    return _parse(family, raw, body, needs_max_tokens=True)


def parse_count_tokens(family: Family, raw: bytes, body: dict[str, Any]) -> ParsedRequest:
    return _parse(family, raw, body, needs_max_tokens=False)


def estimate_prompt(body: dict[str, Any]) -> int:
    """The messages as chat messages are counted, plus the top-level system prompt."""
    total = estimate_chat_tokens(body)
    system = body.get("system")
    if isinstance(system, str):
        total += estimate_text_tokens(system)
    elif isinstance(system, list):
        total += sum(estimate_text_tokens(block["text"]) for block in system
                     if isinstance(block, dict) and isinstance(block.get("text"), str))
    return total


# -- usage ------------------------------------------------------------------------


def usage_tokens(usage: dict[str, Any] | None) -> Tokens | None:
    """(prompt, completion, cached) from Anthropic's usage object."""
    if not usage:
        return None
    values = {name: usage.get(name) for name in _USAGE_FIELDS}
    if not isinstance(values["input_tokens"], int) or not isinstance(values["output_tokens"], int):
        return None
    read = values["cache_read_input_tokens"] if isinstance(values["cache_read_input_tokens"], int) else 0
    created = (values["cache_creation_input_tokens"]
               if isinstance(values["cache_creation_input_tokens"], int) else 0)
    return values["input_tokens"] + read + created, values["output_tokens"], read or None


def answer_chars(body: bytes) -> int:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    content = parsed.get("content") if isinstance(parsed, dict) else None
    return sum(len(block["text"]) for block in content if isinstance(block, dict)
               and isinstance(block.get("text"), str)) if isinstance(content, list) else 0


# -- the stream -------------------------------------------------------------------


def _event_name(event: bytes) -> bytes:
    if event.startswith(b"event:"):
        end = event.find(b"\n")
        return event[6:end if end > 0 else None].strip()
    return b""


def _data(event: bytes) -> Any:
    at = event.find(b"data:")
    if at < 0:
        return None
    end = event.find(b"\n", at)
    try:
        return orjson.loads(event[at + 5:end if end > 0 else None])
    except orjson.JSONDecodeError:
        return None


class AnthropicRelay:
    """Forwards each complete event as it is; parses only message_start and message_delta."""

    __slots__ = ("scrub", "buffer", "usage", "done", "content_chars", "saw_error", "final")

    def __init__(self, *, strip_usage: bool = False, scrub: Callable[[bytes], bytes] | None = None) -> None:
        self.scrub = scrub  # applied to in-band error events only
        self.buffer = b""
        self.usage: dict[str, Any] = {}
        self.done = False
        self.content_chars = 0
        self.saw_error = False
        self.final = False  # message_delta came: its output count is the answer's, not message_start's

    def feed(self, chunk: bytes) -> bytes:
        events, self.buffer = sse.complete_events(self.buffer, chunk)
        if events is None:
            return b""
        out = [self._event(event) for event in events if event]
        return b"\n\n".join(out) + b"\n\n" if out else b""

    def _event(self, event: bytes) -> bytes:
        name = _event_name(event)
        if name == b"content_block_delta":
            self._count(event)
        elif name in (b"message_start", b"message_delta"):
            payload = _data(event)
            if isinstance(payload, dict):
                inner = payload.get("message") if name == b"message_start" else payload
                usage = inner.get("usage") if isinstance(inner, dict) else None
                if isinstance(usage, dict):
                    self.final = self.final or name == b"message_delta"
                    # message_delta's counts are cumulative: the last one seen is the whole answer's.
                    self.usage.update({k: v for k, v in usage.items() if k in _USAGE_FIELDS and isinstance(v, int)})
        elif name == b"message_stop":
            self.done = True
        elif name == b"error":
            self.saw_error = True
            return self.scrub(event) if self.scrub is not None else event
        return event

    def _count(self, event: bytes) -> None:
        # Only a fallback for a stream cut before its usage: a cheap scan, no JSON parse.
        for key in (b'"text":"', b'"partial_json":"', b'"thinking":"'):
            at = event.find(key)
            if at >= 0:
                start = at + len(key)
                end = event.find(b'"', start)
                while end > 0 and event[end - 1] == 92:  # an escaped quote
                    end = event.find(b'"', end + 1)
                if end > start:
                    self.content_chars += end - start
                return

    def tokens(self) -> Tokens | None:
        if not self.final or "input_tokens" not in self.usage:
            return None  # cut before the output was counted: the caller bills what was delivered
        return usage_tokens(self.usage)


def error_event(message: str, *, type: str = "api_error", code: str | None = None) -> bytes:
    """Anthropic's in-band failure: the SDKs raise on an `error` event mid-stream."""
    return (b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": type, "message": message}})
            + b"\n\n")


ANTHROPIC_EVENTS = StreamFraming(
    name="anthropic-events", content_type="text/event-stream", new_relay=AnthropicRelay,
    accepts_content_type=sse.accepts_content_type, opens_validly=sse.opens_validly, error_event=error_event)

_SHARED = dict(scope="messages", estimate_prompt=estimate_prompt, usage_tokens=usage_tokens,
               answer_chars=answer_chars, credentials=credentials, error_response=error_response,
               validate=_validate_messages)

MESSAGES = Family(name="messages", title="Messages", paths=("/messages",), upstream_path=b"/v1/messages",
                  framing=ANTHROPIC_EVENTS, parse=parse_messages, **_SHARED)
# Counting costs no tokens: the request is counted, the limiter charged nothing.
COUNT_TOKENS = Family(name="messages_count_tokens", title="Counting tokens", paths=("/messages/count_tokens",),
                      upstream_path=b"/v1/messages/count_tokens", framing=None, completes=False,
                      parse=parse_count_tokens, **{**_SHARED, "estimate_prompt": lambda body: 0,
                                                   "usage_tokens": lambda usage: (0, 0, None)})

ANTHROPIC_FAMILIES: tuple[Family, ...] = (MESSAGES, COUNT_TOKENS)

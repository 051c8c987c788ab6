"""Typed SSE (the Responses API's streams): `event: <type>` + `data: <json>` events
ending with a terminal event, `response.completed`, `response.incomplete`,
`response.failed`, or `error`. There is no `[DONE]`: the gateway never adds
one and never waits for one.

Bytes go to the client as they arrive, event by event and unchanged (an
in-band error is scrubbed of secrets). Only two events are read: the first
one naming the response (its id is found by a byte scan, not a parse), and
the terminal one, whose JSON is parsed for usage. Delta events are counted by
a byte scan so a cut stream can be billed for what it delivered.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import orjson

from .sse import accepts_content_type, complete_events, opens_validly  # noqa: F401  (the same checks as data-only SSE)

TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed", b"error"})
FAILED = frozenset({b"response.failed", b"error"})
_DELTA = b"response.output_text.delta"
_TYPE = re.compile(rb'"type"\s*:\s*"([^"]{1,80})"')
_RESPONSE_ID = re.compile(rb'"response"\s*:\s*\{\s*"id"\s*:\s*"([^"\\]{1,200})"')


def _split(event: bytes) -> tuple[bytes | None, bytes]:
    """(the `event:` name or None, the data payload) of one event."""
    name = None
    data = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip())
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, b"\n".join(data)


def _kind(name: bytes | None, payload: bytes) -> bytes | None:
    if name is not None:
        return name
    # Some servers (LiteLLM among them) send data-only events; the type is the first field.
    match = _TYPE.search(payload, 0, 120)
    return match.group(1) if match else None


def response_usage_tokens(usage: dict[str, Any] | None) -> tuple[int, int, int | None, int | None] | None:
    """(input, output, cached, reasoning) from a Responses usage object; output includes reasoning."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("input_tokens")
    completion = usage.get("output_tokens", 0) or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    cached = reasoning = None
    details = usage.get("input_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        cached = details["cached_tokens"]
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        reasoning = details["reasoning_tokens"]
    return prompt, completion, cached, reasoning


class TypedSSERelay:
    __slots__ = ("scrub", "buffer", "usage", "done", "saw_error", "content_chars", "answer_id")

    def __init__(self, *, strip_usage: bool = False, scrub: Callable[[bytes], bytes] | None = None) -> None:
        del strip_usage  # Responses streams always carry their usage in the terminal event
        self.scrub = scrub
        self.buffer = b""
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.saw_error = False
        self.content_chars = 0
        self.answer_id: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""  # nothing after the terminal event reaches the client
        events, self.buffer = complete_events(self.buffer, chunk)
        if events is None:
            return b""
        out = []
        for event in events:
            if event:
                replaced = self._event(event)
                out.append(event if replaced is None else replaced)
                if self.done:
                    break  # nothing after the terminal event reaches the client
        return b"\n\n".join(out) + b"\n\n" if out else b""

    def _event(self, event: bytes) -> bytes | None:
        """Learn what is needed from one event; a replacement for it, or None to pass it as is."""
        if event.startswith(b":"):
            return None  # a comment (keep-alive)
        name, payload = _split(event)
        kind = _kind(name, payload)
        if kind == _DELTA:
            at = payload.find(b'"delta":"')
            if at >= 0:
                stop = payload.find(b'"', at + 9)
                while stop > 0 and payload[stop - 1] == 92:  # an escaped quote
                    stop = payload.find(b'"', stop + 1)
                if stop > at + 9:
                    self.content_chars += stop - at - 9
            return None
        if self.answer_id is None and kind is not None and kind.startswith(b"response."):
            match = _RESPONSE_ID.search(payload)
            if match:
                self.answer_id = match.group(1).decode("utf-8", "replace")
        if kind not in TERMINAL:
            return None
        self.done = True
        if kind in FAILED:
            self.saw_error = True
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = None
        response = parsed.get("response") if isinstance(parsed, dict) else None
        if isinstance(response, dict):
            if isinstance(response.get("usage"), dict):
                self.usage = response["usage"]
            if self.answer_id is None and isinstance(response.get("id"), str):
                self.answer_id = response["id"]
        if kind == b"error" and self.scrub is not None:
            return self.scrub(event)
        return None

    def tokens(self) -> tuple[int, int, int | None, int | None] | None:
        return response_usage_tokens(self.usage)


def error_event(message: str, *, type: str = "server_error", code: str = "upstream_stream_interrupted") -> bytes:
    """The Responses API's `error` event; the nested `error` object makes the
    OpenAI SDK raise, as it does for chat streams."""
    return b"event: error\ndata: " + orjson.dumps({
        "type": "error", "code": code, "message": message, "param": None,
        "error": {"message": message, "type": type, "param": None, "code": code}}) + b"\n\n"

"""Data-only SSE ending in `data: [DONE]` (chat and completions streams):
relay an upstream stream event by event, and learn its usage on the way.

The gateway always asks upstream for `include_usage` so it can bill exactly.
When the client did not ask for it, the usage-only chunk and the `"usage":null`
fields are removed, so the client sees what OpenAI would have sent. Events are
forwarded as soon as they are complete; nothing waits for the end.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from .usage_bytes import usage_tokens

DONE = b"data: [DONE]"
# The lines an event stream may start with (the SSE spec's fields and comments).
_FIELD_STARTS = (b"data:", b":", b"event:", b"id:", b"retry:")
_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')


def accepts_content_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def opens_validly(first_chunk: bytes) -> bool:
    """An HTML page or JSON error sent as an event stream is refused before the client sees it."""
    head = first_chunk.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
    # A first read may end inside the first field name.
    return head.startswith(_FIELD_STARTS) or any(f.startswith(head) for f in _FIELD_STARTS)



def complete_events(buffer: bytes, chunk: bytes) -> tuple[list[bytes] | None, bytes]:
    """The complete SSE events in what has arrived (None: none yet), and the rest to keep.

    Every relay frames the same way: events end with a blank line; a CRLF
    upstream is read as LF."""
    data = buffer + chunk if buffer else chunk
    if b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
    end = data.rfind(b"\n\n")
    if end < 0:
        return None, data
    return data[:end].split(b"\n\n"), data[end + 2:]

class SSERelay:
    __slots__ = ("strip_usage", "scrub", "buffer", "usage", "done", "content_chars", "saw_error")

    def __init__(self, *, strip_usage: bool, scrub: Callable[[bytes], bytes] | None = None) -> None:
        self.strip_usage = strip_usage
        self.scrub = scrub  # applied to in-band error events only
        self.buffer = b""
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.content_chars = 0  # delivered text, for an estimate when usage never comes
        self.saw_error = False

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send to the client now (possibly empty)."""
        events, self.buffer = complete_events(self.buffer, chunk)
        if events is None:
            return b""
        out = []
        for event in events:
            if event:
                kept = self._event(event)
                if kept is not None:
                    out.append(kept)
        return b"\n\n".join(out) + b"\n\n" if out else b""

    def _event(self, event: bytes) -> bytes | None:
        if not event.startswith(b"data:"):
            return event  # comments (keep-alives) and other fields pass through
        if event.startswith(DONE):
            self.done = True
            return event
        payload = event[5:].lstrip()
        if b'"usage"' in payload and b'"usage":null' not in payload and b'"usage": null' not in payload:
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return event
            usage = parsed.get("usage") if isinstance(parsed, dict) else None
            if not isinstance(usage, dict):
                self._count(parsed)
                return event
            self.usage = usage
            self._count(parsed)
            choices = parsed.get("choices") or []
            if all(_empty_choice(c) for c in choices):
                if self.strip_usage:
                    return None  # the usage-only chunk the client did not ask for
                if choices:
                    # LiteLLM puts an empty choice in the usage chunk; OpenAI sends none.
                    parsed["choices"] = []
                    return b"data: " + orjson.dumps(parsed)
                return event
            if self.strip_usage:
                del parsed["usage"]
                return b"data: " + orjson.dumps(parsed)
            return event
        if b'"error"' in payload[:12]:
            self.saw_error = True
            return self.scrub(event) if self.scrub is not None else event
        self._count_bytes(payload)
        if self.strip_usage:
            for pattern in _NULL_USAGE:
                if pattern in event:
                    return event.replace(pattern, b"", 1)
        return event

    def _count_bytes(self, payload: bytes) -> None:
        # Only a fallback for streams without usage: a cheap scan, no JSON parse.
        at = payload.find(b'"content":"')
        if at < 0:
            at = payload.find(b'"text":"')
            if at < 0:
                return
            start = at + 8
        else:
            start = at + 11
        end = payload.find(b'"', start)
        while end > 0 and payload[end - 1] == 92:  # an escaped quote
            end = payload.find(b'"', end + 1)
        if end > start:
            self.content_chars += end - start

    def _count(self, parsed: Any) -> None:
        if not isinstance(parsed, dict):
            return
        for choice in parsed.get("choices") or ():
            if isinstance(choice, dict):
                text = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
                if isinstance(text, str):
                    self.content_chars += len(text)

    def tokens(self) -> tuple[int, int, int | None] | None:
        return usage_tokens(self.usage)


def _empty_choice(choice: Any) -> bool:
    if not isinstance(choice, dict) or choice.get("finish_reason"):
        return False
    delta = choice.get("delta")
    return not delta and not choice.get("text")


def error_event(message: str, *, type: str = "server_error", code: str = "upstream_stream_interrupted") -> bytes:
    """An in-band error: the SDK raises when a data payload has an "error" key."""
    return b"data: " + orjson.dumps(
        {"error": {"message": message, "type": type, "param": None, "code": code}}) + b"\n\n"

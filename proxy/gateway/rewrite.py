"""What the tenant sees of an answer: the public model name, and none of the upstream's extras.

The upstream answers with the name the gateway sent it (`upstream_model`),
which is plumbing: the tenant asked for, and may only ask for, the public
name. That name is a known byte string, so it is replaced as bytes
(`"model":"<upstream>"`, with or without a space after the colon, as
serialisers differ), in whole bodies and in each relayed event alike; nothing
is parsed for it.

LiteLLM adds fields of its own to answers: `usage.cost` (its price, not the
gateway's) and `_hidden_params`. They are looked for as bytes first, and only
a body or event line that has them is parsed and written again without them.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

# Where a terminal event nests the answer: Responses events in `response`, Anthropic's message_start in `message`.
_NESTED = ("response", "message")


def model_rewriter(upstream: str, public: str) -> Callable[[bytes], bytes] | None:
    """Replaces the upstream's model name with the public one; None when they are the same."""
    if upstream == public:
        return None
    old, new = orjson.dumps(upstream), orjson.dumps(public)
    pairs = tuple((b'"model":' + gap + old, b'"model":' + gap + new) for gap in (b"", b" "))

    def rewrite(data: bytes) -> bytes:
        for before, after in pairs:
            if before in data:
                data = data.replace(before, after)
        return data
    return rewrite


def has_extras(data: bytes) -> bool:
    # Two plain tests, not any() over a tuple: no generator per body and per event.
    return b'"_hidden_params"' in data or b'"cost"' in data


def _clean(obj: dict[str, Any]) -> bool:
    """Drop the extras from an answer object (and the answer nested in an event); True if any were there."""
    changed = "_hidden_params" in obj
    obj.pop("_hidden_params", None)
    usage = obj.get("usage")
    if isinstance(usage, dict) and "cost" in usage:
        del usage["cost"]
        changed = True
    for key in _NESTED:
        inner = obj.get(key)
        if isinstance(inner, dict):
            changed = _clean(inner) or changed
    return changed


def strip_body(body: bytes) -> bytes:
    """A whole JSON answer without the upstream's extras."""
    if not has_extras(body):
        return body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict) or not _clean(parsed):
        return body
    return orjson.dumps(parsed)


def strip_events(data: bytes) -> bytes:
    """Complete SSE events without the upstream's extras: only `data:` lines that carry them are parsed."""
    if not has_extras(data):
        return data
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data:") and has_extras(line):
            try:
                parsed = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and _clean(parsed):
                lines[i] = b"data: " + orjson.dumps(parsed)
    return b"\n".join(lines)


def tenant_view(upstream: str, public: str, *, events: bool) -> Callable[[bytes], bytes]:
    """The one function a relay passes answer bytes through (whole bodies, or complete events)."""
    rename = model_rewriter(upstream, public)
    strip = strip_events if events else strip_body
    if rename is None:
        return strip
    return lambda data: rename(strip(data))

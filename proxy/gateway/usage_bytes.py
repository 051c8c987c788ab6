"""Read the `usage` object out of a response body without parsing the whole body.

An embeddings answer can be megabytes of base64; `usage` sits at its end in
every OpenAI-compatible server we forward to, so a reverse search and a parse
of just that object is enough. Falls back to a full parse when the quick read
does not find a well-formed object.
"""

from __future__ import annotations

from typing import Any

import orjson

_KEY = b'"usage"'


def extract_usage(body: bytes) -> dict[str, Any] | None:
    at = body.rfind(_KEY)
    if at < 0:
        return None
    start = body.find(b"{", at + len(_KEY))
    colon = body.find(b":", at + len(_KEY))
    if start < 0 or colon < 0 or body[colon + 1:start].strip():
        return None  # `"usage": null` or something that is not an object
    # The object ends at the first '}' after which the braces balance; usage
    # objects nest at most a level or two, so this is a few C-speed scans.
    end = body.find(b"}", start)
    while end > 0:
        segment = body[start:end + 1]
        if segment.count(b"{") == segment.count(b"}"):
            try:
                value = orjson.loads(segment)
            except orjson.JSONDecodeError:
                break
            return value if isinstance(value, dict) else None
        end = body.find(b"}", end + 1)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    return usage if isinstance(usage, dict) else None


def usage_tokens(usage: dict[str, Any] | None) -> tuple[int, int, int | None] | None:
    """(prompt, completion, cached) from an OpenAI usage object, or None if unusable."""
    if not usage:
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0) or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    cached = None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        cached = details["cached_tokens"]
    return prompt, completion, cached

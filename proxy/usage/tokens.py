"""Token estimates for when exact counts are not available.

Used twice: to charge the TPM bucket before a request is forwarded (the real
count is only known afterwards), and to account a response whose upstream sent
no `usage` (a stream without `include_usage`, or one cut short).

The heuristic is OpenAI's rule of thumb, one token per four characters of
English text, rounded up. It needs no tokenizer and costs a `len()`; it is
rough (code and non-English text can be far off), so rows counted this way
are marked `estimated` and nobody mistakes them for the upstream's figures. Bodies
are not validated here: anything of an unexpected shape counts as nothing
rather than raising, since validation happens elsewhere and an estimate must
never fail a request.
"""

from __future__ import annotations

from typing import Any

import orjson

CHARS_PER_TOKEN = 4
# Chat framing per message (role, separators) and the reply primer, as in
# OpenAI's cookbook count for gpt-3.5/4-class models.
MESSAGE_OVERHEAD = 3
REPLY_PRIMER = 3
# An image's smallest billed size (low detail); the real figure depends on the
# resolution, which is unknown without fetching it.
IMAGE_TOKENS = 85


def estimate_text_tokens(text: str) -> int:
    """ceil(len(text) / 4); 0 for the empty string."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_prompt_tokens(route: str, body: dict[str, Any]) -> int:
    """Prompt tokens of a request body for `route` ("chat", "completions", "embeddings")."""
    if route == "chat":
        return estimate_chat_tokens(body)
    if route == "completions":
        return estimate_input_tokens(body.get("prompt"))
    if route == "embeddings":
        return estimate_input_tokens(body.get("input"))
    return 0


def estimate_chat_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat body: its messages, their framing, and tool schemas."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    total = REPLY_PRIMER
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += estimate_text_tokens(name)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += _strings_tokens(function.get("name"), function.get("arguments"))
    tools = body.get("tools")
    if isinstance(tools, list):
        total += sum(_json_tokens(tool) for tool in tools)
    return total


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            total += estimate_text_tokens(part["text"])
        elif kind in ("image_url", "input_image"):
            total += IMAGE_TOKENS
    return total


def estimate_input_tokens(value: Any) -> int:
    """A prompt/input: a string, a list of strings, a token array or a list of token arrays."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if isinstance(item, str):
            total += estimate_text_tokens(item)
        elif isinstance(item, int):
            total += 1  # one element of a token array is one token
        elif isinstance(item, list):
            total += len(item)
    return total


def _strings_tokens(*values: Any) -> int:
    return sum(estimate_text_tokens(v) for v in values if isinstance(v, str))


def _json_tokens(value: Any) -> int:
    # Tool schemas reach the model as text; their JSON length is a fair proxy.
    try:
        return estimate_text_tokens(orjson.dumps(value).decode())
    except TypeError:
        return 0

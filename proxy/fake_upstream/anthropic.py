"""Anthropic's Messages API, as LiteLLM serves it: `/v1/messages` and `/v1/messages/count_tokens`.

Deterministic like the chat builder: the content is the upstream's pieces
("<name>", " says", …), one per output token, cut by `max_tokens`.

    input_tokens                 words of every message's text + 1 per message,
                                 plus the words of a plain-string system prompt
    cache_read_input_tokens      words of the system blocks that carry cache_control
    cache_creation_input_tokens  always 0
    output_tokens                pieces emitted

A stream is Anthropic's typed events: message_start (input usage),
content_block_start, ping, one content_block_delta per piece,
content_block_stop, message_delta (stop_reason, output usage), message_stop.
"""

from __future__ import annotations

from typing import Any

import orjson

from .payloads import _BadRequest, _is_int, _model, _words
from .state import _Config, _State


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _input_usage(body: dict[str, Any]) -> dict[str, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("messages: Input should be a non-empty list of message objects", "messages")
    tokens = sum(_words(m.get("content")) + 1 for m in messages)
    cached = 0
    system = body.get("system")
    if isinstance(system, str):
        tokens += _words(system)
    elif isinstance(system, list):
        for block in system:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                if block.get("cache_control"):
                    cached += _words(block["text"])
                else:
                    tokens += _words(block["text"])
    return {"input_tokens": tokens, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _messages(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes | list[bytes]:
    model = _model(body)
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _BadRequest("max_tokens: Field required (a positive integer)", "max_tokens")
    usage = _input_usage(body)
    n = min(cfg.stream_chunks, max_tokens)
    stop = "max_tokens" if max_tokens < cfg.stream_chunks else "end_turn"
    mid = f"msg_{cfg.id_prefix}{next(state.ids):x}"
    pieces = cfg.pieces[:n]
    if body.get("stream") is True:
        start = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        events = [_event("message_start", {"type": "message_start", "message": start}),
                  _event("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}}),
                  _event("ping", {"type": "ping"})]
        events += [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": p}}) for p in pieces]
        events += [_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   _event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": stop, "stop_sequence": None},
                                            "usage": {"output_tokens": n}}),
                   _event("message_stop", {"type": "message_stop"})]
        return events
    return orjson.dumps({
        "id": mid, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "".join(pieces)}],
        "stop_reason": stop, "stop_sequence": None, "usage": {**usage, "output_tokens": n},
    })


def _count_tokens(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes:
    _model(body)
    usage = _input_usage(body)
    return orjson.dumps({"input_tokens": usage["input_tokens"] + usage["cache_read_input_tokens"]})


BUILDERS = {"/messages": _messages, "/messages/count_tokens": _count_tokens}

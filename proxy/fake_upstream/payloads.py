"""Deterministic OpenAI-shaped bodies: chat, completions, embeddings, models.

Each builder takes (config, state, request body) and returns the JSON body,
or for a stream the list of SSE events; `_BadRequest` becomes a 400.
"""

from __future__ import annotations

import base64
import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .state import _Config, _State

DEFAULT_MODELS = ("fake-model", "fake-embedding")
DEFAULT_EMBEDDING_DIM = 8
MAX_EMBEDDING_DIM = 8192

_WORDS = ("says", "hello", "from", "the", "fake", "upstream")
_MODELS_CREATED = 1_700_000_000
_DONE = b"data: [DONE]\n\n"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

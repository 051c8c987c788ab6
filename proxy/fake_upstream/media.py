"""Moderations, images, audio and rerank, as LiteLLM answers them.

    POST /v1/moderations          {"results": [{"flagged": false, …}]}, no usage
    POST /v1/images/generations   `n` images as b64_json (a few bytes each); gpt-image models
                                  also report usage (input_tokens = prompt words, output_tokens = 100 per image)
    POST /v1/audio/speech         binary audio: SPEECH_BYTES_PER_CHAR bytes per input character
                                  (audio/mpeg, or audio/wav etc. per response_format)
    POST /v1/audio/transcriptions, /v1/audio/translations
                                  multipart/form-data read part by part; answers
                                  {"text": "<name> heard <N> bytes of <filename>"}, or that text
                                  alone for response_format text; `state.last_body` holds the
                                  text fields and `file_bytes`
    POST /v1/rerank               Cohere's shape: results by descending score, meta.billed_units
                                  {"search_units": 1} and meta.tokens {"input_tokens": words}

Faults and latency apply to all of them, as to chat (`app._api` for the JSON
ones, `upload_api` here for the multipart ones).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .faults import _apply_fault, _drop, _error
from .payloads import _BadRequest, _model, _words
from .state import CONFIG_KEY, STATE_KEY, _Config, _State

SPEECH_BYTES_PER_CHAR = 1024
_AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                "wav": "audio/wav", "pcm": "audio/pcm"}
_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


def speech_bytes(name: str, text: str) -> bytes:
    """The deterministic 'audio' for `text`: tests compare it byte for byte."""
    seed = hashlib.sha256(f"{name}:{text}".encode()).digest()
    size = max(1, len(text)) * SPEECH_BYTES_PER_CHAR
    return (seed * (size // len(seed) + 1))[:size]


def _moderations(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes:
    model = _model(body)
    value = body.get("input")
    items = value if isinstance(value, list) else [value]
    if value is None or not items:
        raise _BadRequest("input is required", "input")
    result = {"flagged": False, "categories": {c: False for c in _CATEGORIES},
              "category_scores": {c: 0.0 for c in _CATEGORIES}}
    return orjson.dumps({"id": f"modr-{cfg.id_prefix}{next(state.ids):x}", "model": model,
                         "results": [result for _ in items]})


def _images(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes:
    model = _model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _BadRequest("prompt is required", "prompt")
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 10:
        raise _BadRequest("n must be between 1 and 10", "n")
    image = base64.b64encode(f"{cfg.name} image of {prompt}".encode()).decode()
    answer: dict[str, Any] = {"created": 1_700_000_000, "data": [{"b64_json": image} for _ in range(n)]}
    if "gpt-image" in model:
        words = _words(prompt)
        answer["usage"] = {"input_tokens": words, "output_tokens": 100 * n, "total_tokens": words + 100 * n}
    return orjson.dumps(answer)


def _speech(cfg: _Config, state: _State, body: dict[str, Any]) -> web.Response:
    _model(body)
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise _BadRequest("input is required", "input")
    kind = _AUDIO_TYPES.get(body.get("response_format") or "mp3", "audio/mpeg")
    return web.Response(body=speech_bytes(cfg.name, text), content_type=kind)


def _rerank(cfg: _Config, state: _State, body: dict[str, Any]) -> bytes:
    _model(body)
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list) or not documents:
        raise _BadRequest("query and documents are required", "documents")
    texts = [d if isinstance(d, str) else str((d or {}).get("text", "")) for d in documents]
    query_words = set(query.lower().split())
    scores = [len(query_words & set(t.lower().split())) / (len(query_words) or 1) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        order = order[:top_n]
    words = _words(query) + sum(_words(t) for t in texts)
    return orjson.dumps({"id": f"rerank-{cfg.id_prefix}{next(state.ids):x}",
                         "results": [{"index": i, "relevance_score": scores[i]} for i in order],
                         "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": words,
                                                                                  "output_tokens": 0}}})


BUILDERS = {"/moderations": _moderations, "/images/generations": _images, "/audio/speech": _speech,
            "/rerank": _rerank}


async def _read_form(request: web.Request) -> dict[str, Any]:
    """The text fields and the file's size, reading the file part piece by piece."""
    fields: dict[str, Any] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if part.filename is not None:
            size = 0
            while chunk := await part.read_chunk(64 * 1024):
                size += len(chunk)
            fields["file_bytes"] = size
            fields["filename"] = part.filename
        else:
            fields[part.name or ""] = await part.text()
    return fields


def _transcript(cfg: _Config, fields: dict[str, Any]) -> web.Response:
    if not isinstance(fields.get("model"), str) or not fields["model"]:
        return _error(400, "model must be a non-empty string", param="model")
    if "file_bytes" not in fields:
        return _error(400, "file is required", param="file")
    text = f"{cfg.name} heard {fields['file_bytes']} bytes of {fields['filename']}"
    if fields.get("response_format") in ("text", "srt", "vtt"):
        return web.Response(text=text, content_type="text/plain")
    return web.Response(body=orjson.dumps({"text": text}), content_type="application/json")


def upload_api() -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Transcriptions and translations: accounting, latency and faults as `app._api` applies them."""

    async def handler(request: web.Request) -> web.StreamResponse:
        cfg = request.app[CONFIG_KEY]
        state = request.app[STATE_KEY]
        state.requests += 1
        state.by_path[request.path] = state.by_path.get(request.path, 0) + 1
        state.last_headers = {k.lower(): v for k, v in request.headers.items()}
        state.in_flight += 1
        try:
            try:
                fields = await _read_form(request)
            except (ValueError, AssertionError) as exc:
                return _error(400, f"bad multipart body: {exc}")
            state.last_body = fields
            fault = state.take_fault(health=False)
            delay = cfg.latency + (fault.latency if fault else 0.0)
            if delay:
                await asyncio.sleep(delay)
            if fault is not None:
                early = await _apply_fault(request, cfg, fault)
                if early is not None:
                    return early
                if fault.cut_after is not None:
                    return _drop(request, rst=False)
            if cfg.auth is not None and request.headers.get("Authorization") != cfg.auth:
                return _error(401, "Incorrect API key provided.", code="invalid_api_key")
            return _transcript(cfg, fields)
        except asyncio.CancelledError:
            state.cancelled += 1
            raise
        except ConnectionError:
            state.cancelled += 1
            return web.Response()
        finally:
            state.in_flight -= 1

    return handler

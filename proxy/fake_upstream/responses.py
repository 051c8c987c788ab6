"""The fake upstream's Responses API: deterministic, stateful, like OpenAI's.

    POST   /v1/responses                       non-stream, or typed SSE with `stream: true`
    GET    /v1/responses/{id}                  a stored response (404 when unknown)
    DELETE /v1/responses/{id}                  {"id", "object": "response", "deleted": true}
    POST   /v1/responses/{id}/cancel           background responses only (400 otherwise)
    GET    /v1/responses/{id}/input_items      {"object": "list", "data": [...], ...}
    POST   /v1/responses/compact               {"object": "response.compaction", "output": [...], "usage"}
    POST   /v1/responses/input_tokens          {"object": "response.input_tokens", "input_tokens": N}

Numbers tests can assert:

    input_tokens      words of `instructions` and of every input text, + 1 per input
                      message, + the whole previous chain's input and output tokens
    cached_tokens     the previous chain's tokens (what a prompt cache would hold)
    output_tokens     pieces emitted (as chat) + reasoning_tokens
    reasoning_tokens  3 when the body asks for `reasoning`, else 0

`previous_response_id` naming a response this upstream does not hold is a 400
with code `previous_response_not_found`, as OpenAI answers. `store: false`
keeps nothing. The typed stream is `event: <type>` + `data: <json>` ending in
`response.completed` (or `response.incomplete` when max_output_tokens cut it
short); there is no `[DONE]`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from .faults import _error
from .payloads import _BadRequest, _is_int, _model, _words
from .state import _Config, _State

REASONING_TOKENS = 3
MAX_STORED = 10_000  # the fake is long-running in demos: keep its memory bounded


class _Stored:
    __slots__ = ("response", "input_items", "tokens")

    def __init__(self, response: dict[str, Any], input_items: list[dict[str, Any]], tokens: int) -> None:
        self.response = response
        self.input_items = input_items
        self.tokens = tokens  # input + output tokens of the chain up to and including this response


STORE_KEY = web.AppKey("fake_upstream_responses", OrderedDict)


def _store(request: web.Request) -> "OrderedDict[str, _Stored]":
    return request.app[STORE_KEY]


def _input_items(cfg: _Config, state: _State, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise _BadRequest("input must be a string or an array of input items", "input")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _BadRequest(f"input[{i}] must be an object", f"input[{i}]")
        item = dict(item)
        item.setdefault("type", "message")
        item.setdefault("id", f"msg_{cfg.id_prefix}{next(state.ids):x}")
        items.append(item)
    return items


def _input_tokens(body: dict[str, Any], items: list[dict[str, Any]]) -> int:
    tokens = _words(body.get("instructions"))
    for item in items:
        if item.get("type") == "message":
            tokens += _words(item.get("content")) + 1
        else:
            tokens += _words(item.get("output")) + _words(item.get("arguments")) + 1
    return tokens


def _usage(input_tokens: int, cached: int, output: int, reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output,
    }


def _previous(request: web.Request, body: dict[str, Any]) -> _Stored | None:
    previous = body.get("previous_response_id")
    if previous is None:
        return None
    if not isinstance(previous, str):
        raise _BadRequest("previous_response_id must be a string", "previous_response_id")
    stored = _store(request).get(previous)
    if stored is None:
        raise _NotFoundPrevious(previous)
    return stored


class _NotFoundPrevious(Exception):
    pass


def _event(kind: str, seq: int, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, "sequence_number": seq, **data}))


def create_response(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]) -> bytes | list[bytes]:
    model = _model(body)
    previous = _previous(request, body)
    items = _input_items(cfg, state, body.get("input"))
    if not items and previous is None:
        raise _BadRequest("Missing required parameter: 'input'.", "input")
    cap = body.get("max_output_tokens")
    if cap is not None and (not _is_int(cap) or cap < 1):
        raise _BadRequest("max_output_tokens must be a positive integer", "max_output_tokens")
    reasoning = REASONING_TOKENS if body.get("reasoning") else 0
    pieces = cfg.stream_chunks
    status, incomplete = "completed", None
    if cap is not None and cap < pieces + reasoning:
        pieces, status, incomplete = max(0, cap - reasoning), "incomplete", {"reason": "max_output_tokens"}
    cached = previous.tokens if previous else 0
    input_tokens = _input_tokens(body, items) + cached
    usage = _usage(input_tokens, cached, pieces + reasoning, reasoning)
    rid = f"resp_{cfg.id_prefix}{next(state.ids):x}"
    mid = f"msg_{cfg.id_prefix}{next(state.ids):x}"
    text = "".join(cfg.pieces[:pieces])
    message = {"type": "message", "id": mid, "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]}
    background = body.get("background") is True
    response = {
        "id": rid, "object": "response", "created_at": int(time.time()),
        "status": "queued" if background else status, "background": background,
        "error": None, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "max_output_tokens": cap, "model": model,
        "output": [] if background else [message], "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True) is not False, "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": body.get("tools") or [],
        "top_p": 1.0, "truncation": "disabled", "usage": None if background else usage,
        "metadata": body.get("metadata") or {},
    }
    if response["store"]:
        stored = _store(request)
        stored[rid] = _Stored(response, (previous.input_items if previous else []) + items,
                              input_tokens + usage["output_tokens"])
        while len(stored) > MAX_STORED:
            stored.popitem(last=False)
    if body.get("stream") is not True:
        return orjson.dumps(response)
    opening = {**response, "status": "in_progress", "output": [], "usage": None}
    seq = iter(range(1_000_000))
    events = [_event("response.created", next(seq), {"response": opening}),
              _event("response.in_progress", next(seq), {"response": opening}),
              _event("response.output_item.added", next(seq), {
                  "output_index": 0, "item": {**message, "status": "in_progress", "content": []}}),
              _event("response.content_part.added", next(seq), {
                  "item_id": mid, "output_index": 0, "content_index": 0,
                  "part": {"type": "output_text", "text": "", "annotations": []}})]
    for piece in cfg.pieces[:pieces]:
        events.append(_event("response.output_text.delta", next(seq), {
            "item_id": mid, "output_index": 0, "content_index": 0, "delta": piece}))
    events += [_event("response.output_text.done", next(seq), {
                   "item_id": mid, "output_index": 0, "content_index": 0, "text": text}),
               _event("response.content_part.done", next(seq), {
                   "item_id": mid, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": text, "annotations": []}}),
               _event("response.output_item.done", next(seq), {"output_index": 0, "item": message}),
               _event(f"response.{status}", next(seq), {"response": response})]
    return events


def _not_found(rid: str) -> web.Response:
    return _error(404, f"Response with id '{rid}' not found.", type="invalid_request_error")


def _stored_or_404(request: web.Request) -> _Stored | web.Response:
    rid = request.match_info["response_id"]
    stored = _store(request).get(rid)
    return _not_found(rid) if stored is None else stored


def get_response(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
    stored = _stored_or_404(request)
    return stored if isinstance(stored, web.Response) else orjson.dumps(stored.response)


def delete_response(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
    rid = request.match_info["response_id"]
    if _store(request).pop(rid, None) is None:
        return _not_found(rid)
    return orjson.dumps({"id": rid, "object": "response", "deleted": True})


def cancel_response(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
    stored = _stored_or_404(request)
    if isinstance(stored, web.Response):
        return stored
    if not stored.response.get("background"):
        return _error(400, "Only responses created with background=true can be cancelled.",
                      type="invalid_request_error")
    stored.response["status"] = "cancelled"
    return orjson.dumps(stored.response)


def input_items(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
    stored = _stored_or_404(request)
    if isinstance(stored, web.Response):
        return stored
    data = list(stored.input_items)
    if request.query.get("order", "desc") == "desc":
        data.reverse()
    return orjson.dumps({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": False})


def compact(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
    _model(body)
    previous = _previous(request, body)
    items = (previous.input_items if previous else []) + _input_items(cfg, state, body.get("input"))
    input_tokens = _input_tokens(body, items)
    summary = {"type": "compaction", "id": f"cmp_{cfg.id_prefix}{next(state.ids):x}",
               "encrypted_content": f"compacted:{len(items)}"}
    return orjson.dumps({"id": f"resp_{cfg.id_prefix}{next(state.ids):x}", "object": "response.compaction",
                         "created_at": int(time.time()), "output": [summary],
                         "usage": _usage(input_tokens, 0, 1, 0)})


def input_tokens(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
    _model(body)
    previous = _previous(request, body)
    tokens = _input_tokens(body, _input_items(cfg, state, body.get("input")))
    return orjson.dumps({"object": "response.input_tokens",
                         "input_tokens": tokens + (previous.tokens if previous else 0)})


def guarded(builder):
    """An unknown previous_response_id is the 400 OpenAI answers."""
    def run(request: web.Request, cfg: _Config, state: _State, body: dict[str, Any]):
        try:
            return builder(request, cfg, state, body)
        except _NotFoundPrevious as exc:
            return _error(400, f"Previous response with id '{exc.args[0]}' not found.",
                          type="invalid_request_error", param="previous_response_id",
                          code="previous_response_not_found")
    return run


def add_routes(app: web.Application, api) -> None:
    """`api` is app.py's wrapper (accounting, latency, faults, auth) for request-aware builders."""
    app[STORE_KEY] = OrderedDict()
    for prefix in ("/v1", ""):
        base = f"{prefix}/responses"
        app.router.add_post(base, api(guarded(create_response)))
        app.router.add_post(f"{base}/compact", api(guarded(compact)))
        app.router.add_post(f"{base}/input_tokens", api(guarded(input_tokens)))
        app.router.add_get(base + "/{response_id}", api(get_response))
        app.router.add_delete(base + "/{response_id}", api(delete_response))
        app.router.add_post(base + "/{response_id}/cancel", api(cancel_response))
        app.router.add_get(base + "/{response_id}/input_items", api(input_items))

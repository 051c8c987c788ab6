"""A stored answer served again: the body as JSON, or written back as the family's stream.

The stream is synthesized from the canonical body in one write, the shape
OpenAI sends, so any SDK parses it as it parses a live one:

- chat: per choice, a chunk with the role, one with the content (and tool
  calls), one with `finish_reason`; every chunk carries the answer's `id`,
  `created` and `model`; with `stream_options.include_usage` every chunk has
  `"usage": null` and a last chunk `choices: []` carries the usage; then
  `data: [DONE]`.
- completions: a `text_completion` chunk per choice with its text, then one
  with its `finish_reason`, usage as above, `data: [DONE]`.
- responses: the typed events from `response.created` to `response.completed`
  (output items, content parts, one text delta per part), numbered by
  `sequence_number`; no `[DONE]`.
"""

from __future__ import annotations

from typing import Any

import orjson


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk_stream(body: dict[str, Any], *, chat: bool, include_usage: bool) -> bytes:
    head = {"id": body.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": body.get("created"), "model": body.get("model")}
    if body.get("system_fingerprint") is not None:
        head["system_fingerprint"] = body["system_fingerprint"]
    if include_usage:
        head["usage"] = None
    out = []
    for choice in body.get("choices") or ():
        index = choice.get("index", 0)
        finish = {"index": index, "finish_reason": choice.get("finish_reason"), "logprobs": None}
        if chat:
            message = choice.get("message") or {}
            out.append(_data({**head, "choices": [{"index": index, "logprobs": None, "finish_reason": None,
                                                   "delta": {"role": message.get("role", "assistant"),
                                                             "content": ""}}]}))
            delta: dict[str, Any] = {}
            if message.get("content"):
                delta["content"] = message["content"]
            if message.get("refusal"):
                delta["refusal"] = message["refusal"]
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            if delta:
                out.append(_data({**head, "choices": [{"index": index, "logprobs": None, "finish_reason": None,
                                                       "delta": delta}]}))
            out.append(_data({**head, "choices": [{**finish, "delta": {}}]}))
        else:
            out.append(_data({**head, "choices": [{"index": index, "text": choice.get("text") or "",
                                                   "logprobs": None, "finish_reason": None}]}))
            out.append(_data({**head, "choices": [{**finish, "text": ""}]}))
    if include_usage and isinstance(body.get("usage"), dict):
        out.append(_data({**head, "choices": [], "usage": body["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _responses_stream(response: dict[str, Any]) -> bytes:
    seq = 0
    out = []

    def event(kind: str, data: dict[str, Any]) -> None:
        nonlocal seq
        out.append(b"event: %s\ndata: %s\n\n" % (
            kind.encode(), orjson.dumps({"type": kind, "sequence_number": seq, **data})))
        seq += 1

    opening = {**response, "status": "in_progress", "output": [], "usage": None}
    event("response.created", {"response": opening})
    event("response.in_progress", {"response": opening})
    for index, item in enumerate(response.get("output") or ()):
        if not isinstance(item, dict):
            continue
        parts = item.get("content") if item.get("type") == "message" else None
        event("response.output_item.added", {"output_index": index, "item": {
            **item, "status": "in_progress", **({"content": []} if parts is not None else {})}})
        for part_index, part in enumerate(parts or ()):
            where = {"item_id": item.get("id"), "output_index": index, "content_index": part_index}
            text = part.get("text") if isinstance(part, dict) else None
            if part.get("type") == "output_text" and isinstance(text, str):
                event("response.content_part.added", {**where, "part": {**part, "text": ""}})
                event("response.output_text.delta", {**where, "delta": text})
                event("response.output_text.done", {**where, "text": text})
            else:
                event("response.content_part.added", {**where, "part": part})
            event("response.content_part.done", {**where, "part": part})
        event("response.output_item.done", {"output_index": index, "item": item})
    event("response.completed", {"response": response})
    return b"".join(out)


def stream_bytes(family: str, body: bytes, *, include_usage: bool) -> bytes:
    """The whole stream of a stored answer, for `family`."""
    parsed = orjson.loads(body)
    if family == "responses":
        return _responses_stream(parsed)
    return _chunk_stream(parsed, chat=family == "chat", include_usage=include_usage)

"""Request bodies of the OpenAI-compatible routes, as the gateway checks them.

/v1 bodies pass through to the upstream: the gateway checks only the fields
below (families.py) and refuses the fields that would steer LiteLLM
(intake.DESTINATION_FIELDS and DESTINATION_PREFIXES); every other field is
the upstream API's own, so these schemas allow additional properties.
"""

from __future__ import annotations

from typing import Any

from ..gateway.intake import DESTINATION_FIELDS, DESTINATION_PREFIXES

_PASSES = ("Other fields pass through to the upstream unchanged, except these, which are refused "
           "with 400: " + ", ".join(sorted(DESTINATION_FIELDS)) + ", and any field starting with "
           + ", ".join(DESTINATION_PREFIXES) + ".")

MODEL = {"type": "string", "minLength": 1, "description": "a model name or alias this gateway serves (GET /v1/models)"}
STREAM = {"type": "boolean", "description": "answer as a server-sent event stream"}


def _body(title: str, required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    return {"title": title, "description": _PASSES, "type": "object", "required": list(required),
            "properties": properties, "additionalProperties": True}


_MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string"}, "content": {"type": ["string", "array", "null"]}}}
_TEXT_OR_LIST = {"type": ["string", "array"], "minItems": 1}

V1_SCHEMAS: dict[str, dict[str, Any]] = {
    "chat": _body("Chat completion request", ("model", "messages"), model=MODEL,
                  messages={"type": "array", "minItems": 1, "items": _MESSAGE}, stream=STREAM,
                  max_tokens={"type": "integer", "minimum": 1}, temperature={"type": "number"}),
    "completions": _body("Completion request", ("model", "prompt"), model=MODEL, prompt=_TEXT_OR_LIST,
                         stream=STREAM, max_tokens={"type": "integer", "minimum": 1}),
    "embeddings": _body("Embeddings request", ("model", "input"), model=MODEL, input=_TEXT_OR_LIST),
    "responses": _body("Responses API request", ("model",), model=MODEL,
                       input={"type": ["string", "array"]}, stream=STREAM,
                       previous_response_id={"type": "string"}, instructions={"type": "string"}),
    "responses_compact": _body("Response compaction request", ("model",), model=MODEL,
                               input={"type": ["string", "array"]}),
    "responses_input_tokens": _body("Input token count request", ("model",), model=MODEL,
                                    input={"type": ["string", "array"]}),
    "messages": _body("Anthropic Messages request", ("model",), model=MODEL,
                      messages={"type": "array", "minItems": 1, "items": _MESSAGE},
                      max_tokens={"type": "integer", "minimum": 1}, stream=STREAM, system={}),
    "messages_count_tokens": _body("Anthropic token count request", ("model",), model=MODEL,
                                   messages={"type": "array", "minItems": 1, "items": _MESSAGE}),
    "moderations": _body("Moderation request", ("model",), model=MODEL, input=_TEXT_OR_LIST),
    "images": _body("Image generation request", ("model",), model=MODEL, prompt={"type": "string"},
                    n={"type": "integer", "minimum": 1}, size={"type": "string"}),
    "rerank": _body("Rerank request", ("model",), model=MODEL, query={"type": "string"},
                    documents={"type": "array", "minItems": 1}, top_n={"type": "integer", "minimum": 1}),
    "audio_speech": _body("Speech request", ("model",), model=MODEL,
                          input={"type": "string"}, voice={"type": "string"},
                          response_format={"type": "string"}),
    "audio_upload": {"title": "Audio upload (multipart/form-data)", "type": "object",
                     "required": ["model"], "additionalProperties": True,
                     "properties": {"model": MODEL, "file": {"type": "string", "contentMediaType": "audio/*"},
                                    "response_format": {"type": "string"}}},
}

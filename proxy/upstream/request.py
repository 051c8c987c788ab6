"""Parse and bound a /v1 request body before anything else looks at it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..errors import BodyTooLarge, InvalidRequest

# Fields that would let a client choose where the gateway sends the request
# (LiteLLM honours several of them). The gateway alone picks the destination.
DESTINATION_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "azure_endpoint", "custom_llm_provider",
    "litellm_params", "deployment_id", "organization", "aws_region_name", "vertex_project",
    "vertex_location", "mock_response", "metadata_url", "user_config",
    # LiteLLM's client-side fallbacks and retries would let a body pick other
    # models (outside the key's allow-list) or multiply upstream load.
    "fallbacks", "context_window_fallback_dict", "mock_testing_fallbacks", "model_list",
    "num_retries", "max_retries",
})

ROUTE_SCOPE = {"chat": "chat", "completions": "completions", "embeddings": "embeddings"}
UPSTREAM_PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
                 "embeddings": "/v1/embeddings"}


@dataclass(slots=True)
class ParsedRequest:
    route: str  # chat | completions | embeddings
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    max_tokens: int | None


async def read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        if length > limit:
            raise BodyTooLarge(f"Request body is {length} bytes; the limit is {limit} bytes.")
        return await request.read()  # bounded by the declared length just checked
    # Read in bounded steps so a body without Content-Length cannot exceed the limit either.
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _type_error(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}.", param=param,
                          code="invalid_type")


def parse_request(route: str, raw: bytes) -> ParsedRequest:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.",
                             code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    for name in DESTINATION_FIELDS.intersection(body):
        raise InvalidRequest(f"Unrecognized request argument supplied: {name}. The gateway chooses "
                             "the upstream; remove this field.", param=name, code="unknown_parameter")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _type_error("model", "a non-empty string")
    if route == "chat":
        messages = body.get("messages")
        if messages is None:
            raise InvalidRequest("Missing required parameter: 'messages'.", param="messages",
                                 code="missing_required_parameter")
        if not isinstance(messages, list) or not messages:
            raise _type_error("messages", "a non-empty array of message objects")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(f"Invalid value for 'messages[{i}]': each message needs a string 'role'.",
                                     param=f"messages[{i}]", code="invalid_value")
    elif route == "completions":
        prompt = body.get("prompt")
        if prompt is None:
            raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt",
                                 code="missing_required_parameter")
        if not isinstance(prompt, (str, list)):
            raise _type_error("prompt", "a string or an array")
    elif route == "embeddings":
        value = body.get("input")
        if value is None:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
        if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
            raise _type_error("input", "a string or a non-empty array")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _type_error("stream", "a boolean")
    if stream and route == "embeddings":
        raise InvalidRequest("Embeddings cannot be streamed.", param="stream", code="invalid_value")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _type_error("stream_options", "an object")
        if not stream:
            raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                 param="stream_options", code="invalid_value")
        flag = options.get("include_usage", False)
        if not isinstance(flag, bool):
            raise _type_error("stream_options.include_usage", "a boolean")
        include_usage = flag
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _type_error(param, "an integer")
        if max_tokens < 1:
            raise InvalidRequest(f"Invalid '{param}': integer below minimum value. Expected a value >= 1, "
                                 f"but got {max_tokens} instead.", param=param, code="integer_below_min_value")
    return ParsedRequest(route=route, raw=raw, body=body, model=model, stream=stream,
                         include_usage=include_usage, max_tokens=max_tokens)


def upstream_body(parsed: ParsedRequest, upstream_model: str) -> bytes:
    """The body sent upstream: the upstream's model name, and usage always asked for in streams."""
    needs_usage = parsed.stream and not parsed.include_usage
    if not needs_usage and upstream_model == parsed.model:
        return parsed.raw  # unchanged: no re-serialisation on the common path
    body = dict(parsed.body)
    body["model"] = upstream_model
    if needs_usage:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return orjson.dumps(body)

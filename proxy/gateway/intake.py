"""Step 1: parse the client's body for its family (proxy/bodies.py read it within bounds).

Nothing here knows who is calling; a body that fails here is never forwarded.

What is forwarded: the body passes through as the client sent it, except
fields that would let the client choose where or how the gateway's upstream
sends it on. That is a deny-list on purpose: an allow-list would refuse every
new OpenAI parameter (they arrive monthly) until the gateway learns it, and
the gateway's promise is pass-through. LiteLLM acts on a small, recognisable
set of names and name prefixes (`api_*`, `aws_*`, `vertex_*`, `azure_*`,
`litellm_*`, `mock_*`, …) for credentials, destinations, routing, retries,
caching and guardrails; those are refused by name and by prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest

if TYPE_CHECKING:
    from .families import Family

DESTINATION_FIELDS = frozenset({
    "base_url", "custom_llm_provider", "deployment_id", "organization", "metadata_url", "user_config",
    "model_list", "region_name", "extra_headers", "headers", "tags",
    # LiteLLM's client-side fallbacks and retries would let a body pick other
    # models (outside the key's allow-list) or multiply upstream load.
    "fallbacks", "context_window_fallback_dict", "num_retries", "max_retries",
    # Proxy-side features the operator configures, not the tenant.
    "guardrails", "caching", "cache", "no-log", "no_log",
})
DESTINATION_PREFIXES = ("api_", "aws_", "vertex_", "azure_", "litellm_", "mock_", "watsonx_", "bedrock_")


@dataclass(slots=True)
class ParsedRequest:
    route: str  # the family's name: chat | completions | embeddings
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    max_tokens: int | None
    upload: Any = None  # a multipart upload still streaming from the client (gateway/multipart.py)


def type_error(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}.", param=param,
                          code="invalid_type")


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                          code="missing_required_parameter")


def decode_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.",
                             code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def refuse_destination_fields(body: dict[str, Any]) -> None:
    for name in body:
        if name in DESTINATION_FIELDS or name.startswith(DESTINATION_PREFIXES):
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}. The gateway chooses "
                                 "the upstream; remove this field.", param=name, code="unknown_parameter")


def parse_request(family: "Family", raw: bytes) -> ParsedRequest:
    body = decode_object(raw)
    refuse_destination_fields(body)
    return family.parse(family, raw, body)


def parse_openai(family: "Family", raw: bytes, body: dict[str, Any]) -> ParsedRequest:
    """The fields every OpenAI family shares, with the family's own checks in between."""
    model = body.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise type_error("model", "a non-empty string")
    family.validate(body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise type_error("stream", "a boolean")
    if stream and family.framing is None:
        raise InvalidRequest(f"{family.title} cannot be streamed.", param="stream", code="invalid_value")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise type_error("stream_options", "an object")
        if not stream:
            raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                 param="stream_options", code="invalid_value")
        flag = options.get("include_usage", False)
        if not isinstance(flag, bool):
            raise type_error("stream_options.include_usage", "a boolean")
        include_usage = flag
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise type_error(param, "an integer")
        if max_tokens < 1:
            raise InvalidRequest(f"Invalid '{param}': integer below minimum value. Expected a value >= 1, "
                                 f"but got {max_tokens} instead.", param=param, code="integer_below_min_value")
    return ParsedRequest(route=family.name, raw=raw, body=body, model=model, stream=stream,
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
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # orjson reads 1024 levels but writes only 254: only a re-written body meets that.
        raise InvalidRequest("The request body nests JSON too deeply (more than 254 levels) for the gateway "
                             "to rewrite it; flatten it.", code="invalid_json") from None

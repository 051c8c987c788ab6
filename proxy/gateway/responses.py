"""What the Responses API families (`POST /v1/responses`, `/compact`,
`/input_tokens`) need beyond the shared pipeline: their body, their token
estimate, their answer's id and usage, and statefulness.

A request carrying `previous_response_id` continues a response that lives on
one upstream only, so it is sent there (`forward`), never balanced elsewhere.
An id the gateway did not relay, or relayed for another account, gets the
400 OpenAI gives an unknown id: nobody learns whether someone else's id exists.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..appkeys import CLOCK, FORWARDER, RESPONSE_IDS
from ..errors import InvalidRequest, NoHealthyUpstream
from ..upstream.forward import UpstreamReply
from ..usage.tokens import IMAGE_TOKENS, MESSAGE_OVERHEAD, estimate_text_tokens
from .call import Call
from .intake import ParsedRequest, type_error
from .response_ids import ResponseOwner

_TOP_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*"([^"\\]{1,200})"')


def parse(family, raw: bytes, body: dict[str, Any]) -> ParsedRequest:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise type_error("model", "a non-empty string")
    value = body.get("input")
    if value is not None and not isinstance(value, (str, list)):
        raise type_error("input", "a string or an array of input items")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise type_error("previous_response_id", "a non-empty string")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise type_error("stream", "a boolean")
    if stream and family.framing is None:
        raise InvalidRequest(f"{family.title} cannot be streamed.", param="stream", code="invalid_value")
    cap = body.get("max_output_tokens")
    if cap is not None:
        if not isinstance(cap, int) or isinstance(cap, bool):
            raise type_error("max_output_tokens", "an integer")
        if cap < 1:
            raise InvalidRequest("Invalid 'max_output_tokens': integer below minimum value. Expected a value "
                                 f">= 1, but got {cap} instead.", param="max_output_tokens",
                                 code="integer_below_min_value")
    return ParsedRequest(route=family.name, raw=raw, body=body, model=model, stream=stream,
                         include_usage=False, max_tokens=cap)


def upstream_body(parsed: ParsedRequest, upstream_model: str) -> bytes:
    """Only the model name changes; a Responses stream carries its usage without being asked."""
    if upstream_model == parsed.model:
        return parsed.raw
    body = dict(parsed.body)
    body["model"] = upstream_model
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequest("The request body nests JSON too deeply (more than 254 levels) for the gateway "
                             "to rewrite it; flatten it.", code="invalid_json") from None


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                total += estimate_text_tokens(part["text"])
            elif part.get("type") in ("input_image", "input_file"):
                total += IMAGE_TOKENS
    return total


def _json_tokens(value: Any) -> int:
    try:
        return estimate_text_tokens(orjson.dumps(value).decode())
    except TypeError:
        return 0


def estimate_prompt(body: dict[str, Any]) -> int:
    """Input tokens of a Responses body: instructions, input items and tool schemas.
    (A previous response's tokens are the upstream's to count; the settlement corrects it.)"""
    total = 0
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += estimate_text_tokens(instructions)
    value = body.get("input")
    if isinstance(value, str):
        total += MESSAGE_OVERHEAD + estimate_text_tokens(value)
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            continue
        if "content" in item:
            total += MESSAGE_OVERHEAD + _content_tokens(item["content"])
        else:  # function calls, their outputs, reasoning items: their JSON is what the model reads
            total += _json_tokens(item)
    tools = body.get("tools")
    if isinstance(tools, list):
        total += sum(_json_tokens(tool) for tool in tools)
    return total


def estimate_count_only(body: dict[str, Any]) -> int:
    return 0  # counting tokens generates none and is not billed


def answer_id(body: bytes) -> str | None:
    """The `id` of a non-stream answer: OpenAI and LiteLLM put it first; otherwise parse."""
    match = _TOP_ID.match(body)
    if match:
        return match.group(1).decode("utf-8", "replace")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = parsed.get("id") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


def answer_chars(body: bytes) -> int:
    """Characters of output text in a non-stream answer that came without usage."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    output = parsed.get("output") if isinstance(parsed, dict) else None
    total = 0
    for item in output if isinstance(output, list) else ():
        for part in (item.get("content") or ()) if isinstance(item, dict) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
    return total


def no_charge(usage: dict[str, Any] | None) -> tuple[int, int, None]:
    return 0, 0, None


def remember(call: Call, response_id: str | None) -> None:
    """Record who owns a response the gateway relayed and where it lives."""
    if not response_id or call.principal is None or call.upstream is None or call.model is None:
        return
    principal = call.principal
    call.app[RESPONSE_IDS].remember(response_id, ResponseOwner(
        user_id=principal.user_id, key_id=principal.key_id, upstream=call.upstream,
        model=call.model.name, created=call.app[CLOCK]()))


async def owned(call: Call, response_id: str) -> ResponseOwner | None:
    """The record of `response_id` if the caller's account owns it; None for unknown and foreign alike."""
    owner = await call.app[RESPONSE_IDS].find(response_id)
    if owner is None or owner.user_id != call.principal.user_id:
        return None
    return owner


def holder(call: Call, owner: ResponseOwner, response_id: str):
    upstream = call.snapshot.upstream_by_name.get(owner.upstream)
    if upstream is None:
        raise NoHealthyUpstream(
            f"The upstream that holds response {response_id} ({owner.upstream}) is no longer configured; "
            "no other upstream has it. Start a new response without previous_response_id.",
            code="pinned_upstream_unavailable")
    return upstream


async def forward(call: Call) -> UpstreamReply:
    """Balanced like any request, unless it continues a response: then to the upstream holding it."""
    parsed = call.parsed
    forwarder = call.app[FORWARDER]
    previous = parsed.body.get("previous_response_id")
    if previous is None:
        return await forwarder.send(call.snapshot, call.model, parsed, call.request_id, call.family)
    owner = await owned(call, previous)
    if owner is None:
        raise InvalidRequest(f"Previous response with id '{previous}' not found.", param="previous_response_id",
                             code="previous_response_not_found")
    upstream = holder(call, owner, previous)
    return await forwarder.send_to(
        upstream, call.model, call.family.upstream_path, call.family.upstream_body(parsed, call.model.upstream_model),
        stream=parsed.stream, request_id=call.request_id, family=call.family,
        holds=f"response {previous}")

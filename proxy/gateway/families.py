"""Route families as data: what differs between chat, completions, embeddings, …

One pipeline (`pipeline.py`) runs every family; a family is a description of
the few things that differ, so a new API (the Responses API with its typed
events and terminal event, Anthropic's Messages with `x-api-key` and its own
error shape, multipart audio uploads) is a new description, not a copy of the
pipeline:

    paths             where clients call it, under each API prefix
    scope             the key scope it needs
    upstream_path     where it goes upstream
    parse / validate  the body: shared fields (`parse`) and the family's own (`validate`)
    estimate_prompt   the token estimate the limiter charges before forwarding
    framing           how its stream is framed on the wire; None: it cannot stream
    accepts_answer    what a good non-stream answer looks like
    usage_of, usage_tokens, answer_chars
                      where usage sits in an answer, and the fallback when it is absent
    credentials       which header carries the client's key
    error_response    which error shape the client gets
    method            POST today; follow-up GET/DELETE routes (a stored response, a
                      file) will add how to find the upstream the object lives on
    forward           how it reaches an upstream when not simply balanced (a follow-up
                      goes to the upstream holding the object); None: the forwarder's send
    remember, answer_id
                      record the id of what was created, and who owns it (stateful APIs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import orjson
from aiohttp import web

from ..errors import GatewayError, InvalidRequest, error_response
from ..usage.tokens import estimate_chat_tokens, estimate_input_tokens
from . import responses, sse, typed_sse
from .intake import ParsedRequest, missing, parse_openai, type_error, upstream_body
from .usage_bytes import extract_usage, usage_tokens

if TYPE_CHECKING:
    from ..upstream.forward import UpstreamReply
    from .call import Call

Tokens = tuple[int, int, "int | None"]

# Bodies at most this large are parsed whole to prove they are a JSON object;
# larger ones (batch embeddings) are checked at both ends, which costs nothing.
FULL_CHECK_LIMIT = 64 * 1024


class StreamRelay(Protocol):
    """Turns upstream stream bytes into client bytes, learning usage on the way."""

    done: bool  # the terminal event was seen
    saw_error: bool  # the upstream reported a failure in-band
    content_chars: int  # delivered text, for an estimate when usage never comes

    def feed(self, chunk: bytes) -> bytes: ...

    def tokens(self) -> Tokens | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFraming:
    name: str
    content_type: str
    new_relay: Callable[..., StreamRelay]  # (strip_usage=, scrub=)
    accepts_content_type: Callable[[str], bool]
    opens_validly: Callable[[bytes], bool]  # the first chunk, before anything reaches the client
    error_event: Callable[..., bytes]  # (message, code=) an in-band failure after the first byte
    # Binary answers (audio): the upstream's content type, bytes untouched, and the
    # end of the body is the end of the answer; a cut one is cut on the wire too.
    binary: bool = False


# OpenAI's data-only SSE: `data: <json>` events, the last one `data: [DONE]`.
SSE_WITH_DONE = StreamFraming(
    name="sse-done", content_type="text/event-stream", new_relay=sse.SSERelay,
    accepts_content_type=sse.accepts_content_type, opens_validly=sse.opens_validly,
    error_event=sse.error_event)


def is_json_object(content_type: str, body: bytes) -> bool:
    """A non-stream OpenAI answer: JSON by its header, and an object by its bytes."""
    if "json" not in content_type.lower():
        return False
    if len(body) <= FULL_CHECK_LIMIT:
        try:
            return isinstance(orjson.loads(body), dict)
        except orjson.JSONDecodeError:
            return False
    return body.lstrip()[:1] == b"{" and body.rstrip()[-1:] == b"}"


def bearer_token(request: web.Request) -> str | None:
    return request.headers.get("Authorization")


def openai_answer_chars(body: bytes) -> int:
    """Characters of generated text in a non-stream answer that came without usage."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    total = 0
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            if isinstance(text, str):
                total += len(text)
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    name: str  # the route label in metrics, usage rows and the access log
    title: str  # for messages: "Embeddings cannot be streamed."
    paths: tuple[str, ...]
    scope: str
    upstream_path: bytes
    validate: Callable[[dict[str, Any]], None]
    estimate_prompt: Callable[[dict[str, Any]], int]
    completes: bool = True  # produces completion tokens (embeddings do not)
    framing: StreamFraming | None = SSE_WITH_DONE
    method: str = "POST"
    parse: Callable[["Family", bytes, dict[str, Any]], ParsedRequest] = parse_openai
    upstream_body: Callable[[ParsedRequest, str], bytes] = upstream_body
    accepts_answer: Callable[[str, bytes], bool] = is_json_object
    usage_of: Callable[[bytes], dict[str, Any] | None] = extract_usage
    usage_tokens: Callable[[dict[str, Any] | None], Tokens | None] = usage_tokens
    answer_chars: Callable[[bytes], int] = openai_answer_chars
    credentials: Callable[[web.Request], str | None] = bearer_token
    error_response: Callable[[GatewayError, dict[str, str] | None], web.Response] = error_response
    # Reads and parses the request itself (multipart uploads, streamed); None: a JSON body.
    intake: Callable[[web.Request, Any, "Family"], Awaitable[ParsedRequest]] | None = None
    passes_content_type: bool = False  # a non-stream answer keeps the upstream's type (text transcripts)
    forward: "Callable[[Call], Awaitable[UpstreamReply]] | None" = None
    remember: "Callable[[Call, str | None], None] | None" = None
    answer_id: Callable[[bytes], str | None] = lambda body: None


def _chat_body(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list) or not messages:
        raise type_error("messages", "a non-empty array of message objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"Invalid value for 'messages[{i}]': each message needs a string 'role'.",
                                 param=f"messages[{i}]", code="invalid_value")


def _completions_body(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise missing("prompt")
    if not isinstance(prompt, (str, list)):
        raise type_error("prompt", "a string or an array")


def _embeddings_body(body: dict[str, Any]) -> None:
    value = body.get("input")
    if value is None:
        raise missing("input")
    if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
        raise type_error("input", "a string or a non-empty array")


CHAT = Family(name="chat", title="Chat completions", paths=("/chat/completions",), scope="chat",
              upstream_path=b"/v1/chat/completions", validate=_chat_body, estimate_prompt=estimate_chat_tokens)
COMPLETIONS = Family(name="completions", title="Completions", paths=("/completions",), scope="completions",
                     upstream_path=b"/v1/completions", validate=_completions_body,
                     estimate_prompt=lambda body: estimate_input_tokens(body.get("prompt")))
EMBEDDINGS = Family(name="embeddings", title="Embeddings", paths=("/embeddings",), scope="embeddings",
                    upstream_path=b"/v1/embeddings", validate=_embeddings_body,
                    estimate_prompt=lambda body: estimate_input_tokens(body.get("input")),
                    completes=False, framing=None)

FAMILIES: tuple[Family, ...] = (CHAT, COMPLETIONS, EMBEDDINGS)

# -- the Responses API ---------------------------------------------------------
# Typed events (`event:` + `data:`) ending in a terminal event; never a [DONE].
TYPED_SSE = StreamFraming(
    name="typed-sse", content_type="text/event-stream", new_relay=typed_sse.TypedSSERelay,
    accepts_content_type=typed_sse.accepts_content_type, opens_validly=typed_sse.opens_validly,
    error_event=typed_sse.error_event)

RESPONSES = Family(name="responses", title="Responses", paths=("/responses",), scope="responses",
                   upstream_path=b"/v1/responses", validate=lambda body: None,
                   estimate_prompt=responses.estimate_prompt, framing=TYPED_SSE, parse=responses.parse,
                   upstream_body=responses.upstream_body, usage_tokens=typed_sse.response_usage_tokens,
                   answer_chars=responses.answer_chars, forward=responses.forward,
                   remember=responses.remember, answer_id=responses.answer_id)
RESPONSES_COMPACT = Family(name="responses_compact", title="Response compaction", paths=("/responses/compact",),
                           scope="responses", upstream_path=b"/v1/responses/compact", validate=lambda body: None,
                           estimate_prompt=responses.estimate_prompt, framing=None, parse=responses.parse,
                           upstream_body=responses.upstream_body, usage_tokens=typed_sse.response_usage_tokens,
                           answer_chars=responses.answer_chars, forward=responses.forward)
RESPONSES_INPUT_TOKENS = Family(name="responses_input_tokens", title="Input token counts",
                                paths=("/responses/input_tokens",), scope="responses",
                                upstream_path=b"/v1/responses/input_tokens", validate=lambda body: None,
                                estimate_prompt=responses.estimate_count_only, completes=False, framing=None,
                                parse=responses.parse, upstream_body=responses.upstream_body,
                                usage_tokens=responses.no_charge, forward=responses.forward)

FAMILIES += (RESPONSES, RESPONSES_COMPACT, RESPONSES_INPUT_TOKENS)

# -- the wider surface: Anthropic's Messages API and the pass-through families --------
# (imported last: they are built from the classes above)
from .anthropic import ANTHROPIC_FAMILIES  # noqa: E402
from .passthrough import PASSTHROUGH_FAMILIES  # noqa: E402

FAMILIES += ANTHROPIC_FAMILIES + PASSTHROUGH_FAMILIES

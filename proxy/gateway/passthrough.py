"""The pass-through families: moderations, images, audio and rerank.

Each is a `Family` the one pipeline runs (auth, scope, limits, balancing,
retries before the first byte, accounting); what is particular to them:

    moderations, images/generations, rerank
                    JSON in, JSON out, not streamed
    audio/speech    JSON in, binary audio out, relayed as it arrives (`BINARY`:
                    the upstream's content type, no event framing, the end of
                    the body is the end of the answer)
    audio/transcriptions, audio/translations
                    multipart uploads streamed to the upstream (multipart.py);
                    JSON or text out (`response_format` text, srt, vtt)

Usage, where the upstream reports it: images (gpt-image-1) and transcriptions
(gpt-4o-transcribe) carry `usage.input_tokens`/`output_tokens`; LiteLLM's
rerank carries `meta.tokens` or `meta.billed_units.total_tokens` (Cohere's
shape; `search_units` has no token figure). Moderations, whisper and dall-e
report none: the request is counted with no tokens. Speech reports none
either; it is billed by the input text's estimate, marked estimated.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..usage.tokens import estimate_input_tokens, estimate_text_tokens
from .families import Family, StreamFraming, Tokens, is_json_object
from .intake import ParsedRequest, missing, parse_openai, refuse_destination_fields, type_error, upstream_body
from .multipart import read_upload


def _require_text(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        raise missing(name)
    if not isinstance(value, str) or not value:
        raise type_error(name, "a non-empty string")


def _moderations_body(body: dict[str, Any]) -> None:
    value = body.get("input")
    if value is None:
        raise missing("input")
    if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
        raise type_error("input", "a string or a non-empty array")


def _rerank_body(body: dict[str, Any]) -> None:
    _require_text(body, "query")
    documents = body.get("documents")
    if documents is None:
        raise missing("documents")
    if not isinstance(documents, list) or not documents:
        raise type_error("documents", "a non-empty array of strings or objects")


def _rerank_estimate(body: dict[str, Any]) -> int:
    documents = body.get("documents")
    total = estimate_input_tokens(body.get("query"))
    for doc in documents if isinstance(documents, list) else ():
        total += estimate_text_tokens(doc) if isinstance(doc, str) else estimate_input_tokens(
            doc.get("text") if isinstance(doc, dict) else None)
    return total


# -- usage ------------------------------------------------------------------------


def io_tokens(usage: dict[str, Any] | None) -> Tokens:
    """`input_tokens`/`output_tokens` when reported; else the request counts with no tokens."""
    if isinstance(usage, dict):
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens", 0)
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt, completion, None
    return 0, 0, None


def rerank_usage(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    meta = parsed.get("meta") if isinstance(parsed, dict) else None
    if not isinstance(meta, dict):
        return None
    tokens = meta.get("tokens")
    if isinstance(tokens, dict) and isinstance(tokens.get("input_tokens"), int):
        return {"input_tokens": tokens["input_tokens"], "output_tokens": tokens.get("output_tokens") or 0}
    billed = meta.get("billed_units")
    if isinstance(billed, dict) and isinstance(billed.get("total_tokens"), int):
        return {"input_tokens": billed["total_tokens"], "output_tokens": 0}
    return None


def json_or_text(content_type: str, body: bytes) -> bool:
    """Transcriptions answer JSON, or plain text for response_format text, srt and vtt."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind.startswith("text/") and kind != "text/html":
        return True
    return is_json_object(content_type, body)


# -- audio out ---------------------------------------------------------------------


class BinaryRelay:
    """Audio bytes pass through untouched; the end of the upstream's body is the end of the answer."""

    __slots__ = ("done", "saw_error", "content_chars")

    def __init__(self, *, strip_usage: bool = False, scrub=None) -> None:
        self.done = False
        self.saw_error = False
        self.content_chars = 0

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def tokens(self) -> Tokens | None:
        return None


def _is_audio(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    # A JSON or HTML 200 where audio belongs is an error page, not speech.
    return bool(kind) and "json" not in kind and kind != "text/html"


BINARY = StreamFraming(
    name="binary", content_type="", new_relay=BinaryRelay, accepts_content_type=_is_audio,
    opens_validly=lambda first: True, error_event=lambda message, **_: b"", binary=True)


def parse_speech(family: Family, raw: bytes, body: dict[str, Any]) -> ParsedRequest:
    parsed = parse_openai(family, raw, body)
    parsed.stream = True  # the answer is always relayed as it arrives
    parsed.include_usage = True  # nothing to ask the upstream for, nothing to strip
    return parsed


async def read_multipart(request, server, family: Family) -> ParsedRequest:
    upload = await read_upload(request, server)
    fields = upload.fields
    model = fields["model"]
    if not model:
        raise type_error("model", "a non-empty string")
    if fields.get("stream", "false").lower() == "true":
        raise type_error("stream", "false: the gateway does not stream transcriptions")
    family.validate(fields)
    return ParsedRequest(route=family.name, raw=b"", body=fields, model=model, stream=False,
                         include_usage=False, max_tokens=None, upload=upload)


def upload_body(parsed: ParsedRequest, upstream_model: str):
    return parsed.upload.body_for(upstream_model)


_QUIET = dict(completes=False, framing=None, usage_tokens=io_tokens, answer_chars=lambda body: 0)

MODERATIONS = Family(name="moderations", title="Moderations", paths=("/moderations",), scope="moderations",
                     upstream_path=b"/v1/moderations", validate=_moderations_body,
                     estimate_prompt=lambda body: estimate_input_tokens(body.get("input")), **_QUIET)
IMAGES = Family(name="images", title="Image generations", paths=("/images/generations",), scope="images",
                upstream_path=b"/v1/images/generations", validate=lambda body: _require_text(body, "prompt"),
                estimate_prompt=lambda body: estimate_input_tokens(body.get("prompt")), **_QUIET)
RERANK = Family(name="rerank", title="Rerank", paths=("/rerank",), scope="rerank", upstream_path=b"/v1/rerank",
                validate=_rerank_body, estimate_prompt=_rerank_estimate, usage_of=rerank_usage, **_QUIET)
SPEECH = Family(name="audio_speech", title="Speech", paths=("/audio/speech",), scope="audio",
                upstream_path=b"/v1/audio/speech", validate=lambda body: _require_text(body, "input"),
                estimate_prompt=lambda body: estimate_input_tokens(body.get("input")), completes=False,
                framing=BINARY, parse=parse_speech, upstream_body=upstream_body)
_UPLOADS = dict(scope="audio", validate=refuse_destination_fields, estimate_prompt=lambda body: 0,
                intake=read_multipart, upstream_body=upload_body, accepts_answer=json_or_text,
                passes_content_type=True, **_QUIET)
TRANSCRIPTIONS = Family(name="audio_transcriptions", title="Transcriptions", paths=("/audio/transcriptions",),
                        upstream_path=b"/v1/audio/transcriptions", **_UPLOADS)
TRANSLATIONS = Family(name="audio_translations", title="Translations", paths=("/audio/translations",),
                      upstream_path=b"/v1/audio/translations", **_UPLOADS)

PASSTHROUGH_FAMILIES: tuple[Family, ...] = (MODERATIONS, IMAGES, RERANK, SPEECH, TRANSCRIPTIONS, TRANSLATIONS)

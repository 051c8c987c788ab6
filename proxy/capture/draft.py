"""One request's capture while it is in flight, and its redacted, bounded result.

`start` decides once per request whether it is captured (one set lookup when
it is not); everything else runs only for captured requests. A stream is
captured as its assembled text, collected up to the byte cap (plus a margin,
so a secret that straddles the cut is still whole when the patterns run), never
as a second copy of the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from . import record
from .record import Captured, truncate
from .redact import redact_json, redact_text
from .settings import CaptureSettings

if TYPE_CHECKING:
    from ..gateway.call import Call

# Collected beyond the cap before redaction, then cut: a secret up to this long
# that crosses the cap is redacted whole rather than kept in part.
MARGIN = 512


class Draft:
    __slots__ = ("settings", "body", "response_kind", "response", "pieces", "held", "overflow")

    def __init__(self, settings: CaptureSettings, body: dict[str, Any]) -> None:
        self.settings = settings
        self.body = body
        self.response_kind = record.NONE
        self.response: Any = None
        self.pieces: list[str] = []
        self.held = 0
        self.overflow = False

    def answer(self, body: bytes) -> None:
        """A non-stream answer, as the client received it."""
        try:
            self.response = orjson.loads(body)
        except orjson.JSONDecodeError:
            return  # not JSON (binary audio): nothing readable to keep
        self.response_kind = record.JSON

    def stream(self, events: bytes) -> None:
        """Complete SSE events relayed to the client; keeps only their text."""
        self.response_kind = record.STREAM_TEXT
        if self.overflow:
            return
        for line in events.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload.startswith(b"{"):
                continue
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            for text in _texts(event):
                self.held += len(text)  # characters: at most 4 bytes each, checked at the end
                self.pieces.append(text)
                if self.held > self.settings.max_body_bytes + MARGIN:
                    self.overflow = True
                    return

    def finish(self, captured_at: int) -> Captured:
        rules = self.settings.redact
        limit = self.settings.max_body_bytes
        request, request_cut = truncate(orjson.dumps(redact_json(self.body, rules)).decode(), limit)
        if self.response_kind == record.JSON:
            text = orjson.dumps(redact_json(self.response, rules)).decode()
            response, response_cut = truncate(text, limit)
        elif self.response_kind == record.STREAM_TEXT:
            response, response_cut = truncate(redact_text("".join(self.pieces), rules), limit)
            response_cut = response_cut or self.overflow
        else:
            response, response_cut = "", False
        return Captured(captured_at=captured_at, request_body=request, request_truncated=request_cut,
                        response_kind=self.response_kind, response_body=response,
                        response_truncated=response_cut)


def start(call: "Call") -> Draft | None:
    """A draft when this request is captured: its plan or its key opted in."""
    settings = call.snapshot.capture
    principal = call.principal
    if not (principal.capture or call.plan.name in settings.plans):
        return None
    if call.family.intake is not None or not isinstance(call.parsed.body, dict):
        return None  # uploads stream past the gateway; there is no JSON body to keep
    return Draft(settings, call.parsed.body)


def _texts(event: Any) -> list[str]:
    """The text an event adds, in each family's stream shape."""
    if not isinstance(event, dict):
        return []
    kind = event.get("type")
    if kind == "response.output_text.delta":  # the Responses API
        delta = event.get("delta")
        return [delta] if isinstance(delta, str) else []
    if kind == "content_block_delta":  # Anthropic's Messages
        delta = event.get("delta") or {}
        text = delta.get("text") if isinstance(delta, dict) else None
        return [text] if isinstance(text, str) else []
    out = []
    for choice in event.get("choices") or ():  # chat and completions
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str):
            out.append(text)
    return out

"""A captured pair of bodies, already redacted and bounded: what rides with its usage row."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# What `response_body` holds.
JSON = "json"  # the answer's JSON body, as the client received it
STREAM_TEXT = "stream_text"  # a stream's assembled text, not its events
NONE = "none"  # no answer body: an error, or a body that is not JSON (audio)


@dataclass(frozen=True, slots=True)
class Captured:
    captured_at: int  # epoch seconds, from the app's clock
    request_body: str
    request_truncated: bool
    response_kind: str
    response_body: str
    response_truncated: bool

    @property
    def bytes(self) -> int:
        return len(self.request_body.encode()) + len(self.response_body.encode())

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> "Captured | None":
        """From a spill line; None when the value is not a capture."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(**value)
        except TypeError:
            return None


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` UTF-8 bytes of `text`, never half a character."""
    data = text.encode()
    if len(data) <= limit:
        return text, False
    return data[:limit].decode(errors="ignore"), True

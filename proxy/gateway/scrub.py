"""Configured secrets never leave the gateway inside a relayed error.

An upstream may echo its key (or ours) in an error message; whatever is
relayed from an upstream's error is scrubbed of every upstream API key and the
admin key. Only error bodies pay for it: successful answers are not scanned.
"""

from __future__ import annotations

from ..config.snapshot import Snapshot
from ..errors import UpstreamClientError

REDACTED = "[redacted]"
# Shorter strings would redact ordinary words; no real key is this short.
MIN_SECRET = 8


def secrets_of(snapshot: Snapshot) -> tuple[str, ...]:
    found = {u.api_key for u in snapshot.upstreams if u.api_key}
    if snapshot.admin.key:
        found.add(snapshot.admin.key)
    # Longest first, so a key that contains another is replaced whole.
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True))


def scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_bytes(data: bytes, secrets: tuple[str, ...]) -> bytes:
    for secret in secrets:
        raw = secret.encode()
        if raw in data:
            data = data.replace(raw, REDACTED.encode())
    return data


def scrub_client_error(exc: UpstreamClientError, snapshot: Snapshot) -> UpstreamClientError:
    secrets = secrets_of(snapshot)
    fields = (exc.message, exc.type, exc.code, exc.param)
    if not any(f and secret in f for f in fields for secret in secrets):
        return exc
    return UpstreamClientError(
        exc.status, scrub_text(exc.message, secrets), type=scrub_text(exc.type, secrets),
        code=None if exc.code is None else scrub_text(exc.code, secrets),
        param=None if exc.param is None else scrub_text(exc.param, secrets), upstream=exc.upstream)

"""One access line per request, through the `bluesminds.access` logger, when
`server.access_log` is on (read from the live snapshot; off writes nothing).

    access method=POST path=/v1/chat/completions status=200 ms=12.3 client=127.0.0.1 id=req_… model=gpt-4o-mini upstream=a

The middleware in app.py writes the line; a handler adds fields of its own
(model, upstream) with `note`. Every value is escaped and bounded: a path or a
model name comes from the client, and a CR/LF in it must not forge a line, nor
a 4 MiB name flood the log.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

log = logging.getLogger("bluesminds.access")

NOTES: web.RequestKey[dict[str, str | None]] = web.RequestKey("bluesminds.access_notes", dict)
MAX_VALUE = 200
_PLAIN = re.compile(r'[!#-\[\]-~]*')  # printable ASCII without space, quote or backslash


def note(request: web.Request, **fields: str | None) -> None:
    """Add fields to this request's access line."""
    notes = request.get(NOTES)
    if notes is None:
        request[NOTES] = fields
    else:
        notes.update(fields)


def write(request: web.Request, status: int, seconds: float, request_id: str | None) -> None:
    """`request_id` is the answer's x-request-id; a noted `id` wins (an answer
    that never came, as when the client left, still has one)."""
    if not log.isEnabledFor(logging.INFO):
        return  # nothing would be written: skip the formatting too
    notes = request.get(NOTES) or {}
    request_id = notes.get("id") or request_id
    parts = [f"access method={_value(request.method)} path={_value(request.rel_url.raw_path)} "
             f"status={status} ms={seconds * 1000.0:.1f} client={_value(request.remote or '-')} "
             f"id={_value(request_id or '-')}"]
    for name, value in notes.items():
        if name != "id":
            parts.append(f" {name}={_value(value or '-')}")
    log.info("".join(parts))


def _value(text: str) -> str:
    extra = len(text) - MAX_VALUE
    if extra > 0:
        text = text[:MAX_VALUE]
    if _PLAIN.fullmatch(text):
        out = text
    else:
        out = '"' + "".join(c if _PLAIN.fullmatch(c) or c == " " else _escape(c) for c in text) + '"'
    return out + (f"...(+{extra} chars)" if extra > 0 else "")


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

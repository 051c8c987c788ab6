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

from .appkeys import CONFIG
from .observability.logs import FIELDS_ATTR

log = logging.getLogger("bluesminds.access")

NOTES: web.RequestKey[dict[str, object]] = web.RequestKey("bluesminds.access_notes", dict)
# Fields only the JSON line carries (route, tokens, account): the text line stays
# the shape its readers already parse.
DETAILS: web.RequestKey[dict[str, object]] = web.RequestKey("bluesminds.access_details", dict)
MAX_VALUE = 200
_PLAIN = re.compile(r'[!#-\[\]-~]*')  # printable ASCII without space, quote or backslash


def note(request: web.Request, **fields: object) -> None:
    """Add fields to this request's access line (a string, a number or None)."""
    notes = request.get(NOTES)
    if notes is None:
        request[NOTES] = fields
    else:
        notes.update(fields)


def detail(request: web.Request, **fields: object) -> None:
    """Add fields to this request's JSON access line only."""
    details = request.get(DETAILS)
    if details is None:
        request[DETAILS] = fields
    else:
        details.update(fields)


def write(request: web.Request, status: int, seconds: float, request_id: str | None) -> None:
    """`request_id` is the answer's x-request-id; a noted `id` wins (an answer
    that never came, as when the client left, still has one). Text or JSON as
    `server.log_format` says."""
    if not log.isEnabledFor(logging.INFO):
        return  # nothing would be written: skip the formatting too
    notes = request.get(NOTES) or {}
    request_id = notes.get("id") or request_id
    if request.app[CONFIG].current.server.log_format == "json":
        _write_json(request, status, seconds, request_id, notes)
        return
    parts = [f"access method={_value(request.method)} path={_value(request.rel_url.raw_path)} "
             f"status={status} ms={seconds * 1000.0:.1f} client={_value(request.remote or '-')} "
             f"id={_value(request_id or '-')}"]
    for name, value in notes.items():
        if name != "id":
            parts.append(f" {name}={_value(str(value) if value not in (None, '') else '-')}")
    log.info("".join(parts))


def _write_json(request: web.Request, status: int, seconds: float, request_id: str | None,
                notes: dict[str, str | None]) -> None:
    """The same line as fields of one JSON object (proxy/observability/logs.py writes
    it): JSON escapes what the text format quotes; the bound is the same."""
    fields: dict[str, object] = {
        "method": _bounded(request.method), "path": _bounded(request.rel_url.raw_path), "status": status,
        "latency_ms": round(seconds * 1000.0, 1), "client": _bounded(request.remote or ""),
        "request_id": _bounded(request_id) if request_id else None}
    for name, value in notes.items():
        if name != "id":
            fields[name] = _bounded(value) if isinstance(value, str) else value
    for name, value in (request.get(DETAILS) or {}).items():
        fields[name] = _bounded(value) if isinstance(value, str) else value
    log.info("access", extra={FIELDS_ATTR: fields})


def _bounded(text: str) -> str:
    extra = len(text) - MAX_VALUE
    return text if extra <= 0 else text[:MAX_VALUE] + f"...(+{extra} chars)"


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

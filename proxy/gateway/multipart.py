"""multipart/form-data uploads (audio transcriptions and translations), streamed, never held whole.

The gateway needs one thing from the form: its `model` field, to route and
check the request. Clients put the text fields before the file (the `openai`
SDK does, as httpx writes `data` before `files`), so only the form's first
parts are read, at most `HEAD_LIMIT` bytes; the file that follows is relayed
to the upstream as it arrives, with back-pressure, and counted against
`server.max_body`. The model field is swapped for the upstream's name in the
bytes already read; nothing else is touched.

    upload = await read_upload(request, server)      # the fields before the file
    upload.fields["model"]
    body = upload.body_for("whisper-1")                # what the transport sends
    body.content_type, body.length                      # length None: sent chunked
    async for piece in body.chunks(): ...               # the head, then the rest as it comes

A streamed body can be sent once: if an upstream fails after the first bytes
of the file were taken from the client, the request cannot move to another
upstream, and says so.
"""

from __future__ import annotations

import re
from typing import AsyncIterator

from aiohttp import web

from ..bodies import _next_chunk, content_encoding
from ..config.snapshot import ServerSettings
from ..errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType, UpstreamError

# The text fields before the file: a model name, a prompt, a language; never near this.
HEAD_LIMIT = 64 * 1024
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,200})"|([^;\s]{1,200}))', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb'\bfilename\*?=', re.IGNORECASE)


def _bad_form(why: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"The multipart/form-data body is malformed: {why}.", param=param, code="invalid_body")


class Upload:
    """The form's text fields, the bytes read to find them, and the client's stream for the rest."""

    __slots__ = ("fields", "content_type", "head", "model_span", "content", "length", "limit", "timeout",
                 "received", "rest_taken")

    def __init__(self, *, fields: dict[str, str], content_type: str, head: bytes, model_span: tuple[int, int],
                 content, length: int | None, limit: int, timeout: float) -> None:
        self.fields = fields
        self.content_type = content_type
        self.head = head
        self.model_span = model_span
        self.content = content
        self.length = length
        self.limit = limit
        self.timeout = timeout
        self.received = len(head)
        self.rest_taken = False  # bytes past the head left the client's stream: no replay

    def body_for(self, upstream_model: str) -> "StreamedBody":
        start, end = self.model_span
        name = upstream_model.encode()
        head = self.head[:start] + name + self.head[end:]
        length = None if self.length is None else self.length - (end - start) + len(name)
        return StreamedBody(self, head, length)


class StreamedBody:
    """One upstream's view of an upload: its head with that upstream's model name, then the rest."""

    __slots__ = ("upload", "head", "length")

    def __init__(self, upload: Upload, head: bytes, length: int | None) -> None:
        self.upload = upload
        self.head = head
        self.length = length

    @property
    def content_type(self) -> str:
        return self.upload.content_type

    async def chunks(self) -> AsyncIterator[bytes]:
        upload = self.upload
        if upload.rest_taken:
            raise UpstreamError("The upstream failed while the upload was being sent to it, and an upload "
                                "cannot be sent twice; send the request again.", code="upstream_upload_failed")
        yield self.head
        while True:
            chunk = await _next_chunk(upload.content, upload.timeout)
            if not chunk:
                return
            upload.rest_taken = True
            upload.received += len(chunk)
            if upload.received > upload.limit:
                raise BodyTooLarge(f"Request body exceeds the limit of {upload.limit} bytes.")
            yield chunk


def boundary_of(content_type: str) -> bytes:
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise InvalidRequest("This route takes a multipart/form-data body (a file upload); "
                             f"got Content-Type {content_type or 'none'!r}.", code="invalid_content_type")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise _bad_form("its Content-Type names no boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


async def read_upload(request: web.Request, server: ServerSettings) -> Upload:
    """Read the form up to its first file part; the file itself is left in the client's stream."""
    limit = server.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"Request body is {length} bytes; the limit is {limit} bytes.")
    if content_encoding(request, server) is not None:
        raise UnsupportedMediaType("Uploads must be sent uncompressed (audio is compressed already); "
                                   "drop the Content-Encoding.")
    delimiter = b"--" + boundary_of(request.headers.get("Content-Type", ""))
    content = request.content
    buffer = b""

    async def more() -> None:
        nonlocal buffer
        if len(buffer) > HEAD_LIMIT:
            raise _bad_form(f"its text fields before the file are over {HEAD_LIMIT} bytes")
        chunk = await _next_chunk(content, server.timeouts.body)
        if not chunk:
            raise _bad_form("it ends before its last boundary")
        buffer += chunk
        if len(buffer) > limit:
            raise BodyTooLarge(f"Request body exceeds the limit of {limit} bytes.")

    while (at := buffer.find(delimiter)) < 0:
        await more()
    pos = at + len(delimiter)
    fields: dict[str, str] = {}
    model_span: tuple[int, int] | None = None
    saw_file = False
    while True:
        while len(buffer) < pos + 2:
            await more()
        if buffer[pos:pos + 2] == b"--":
            break  # the closing boundary: a form without a file
        while (head_end := buffer.find(b"\r\n\r\n", pos)) < 0:
            await more()
        headers = buffer[pos:head_end]
        name_match = _NAME.search(headers)
        if name_match is None:
            raise _bad_form("a part has no Content-Disposition name")
        if _FILENAME.search(headers):
            saw_file = True
            break
        value_start = head_end + 4
        while (value_end := buffer.find(b"\r\n" + delimiter, value_start)) < 0:
            await more()
        name = name_match.group(1).decode("utf-8", "replace")
        try:
            fields[name] = buffer[value_start:value_end].decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_form(f"the field {name!r} is not UTF-8 text", name) from None
        if name == "model":
            model_span = (value_start, value_end)
        pos = value_end + 2 + len(delimiter)
    if model_span is None:
        if saw_file:
            raise InvalidRequest("You must provide a model parameter, as a form field before the file.",
                                 param="model", code="missing_required_parameter")
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not saw_file:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    return Upload(fields=fields, content_type=request.headers["Content-Type"], head=buffer,
                  model_span=model_span, content=content, length=length, limit=limit,
                  timeout=server.timeouts.body)

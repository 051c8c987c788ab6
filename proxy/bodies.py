"""The one reader of request bodies: bounded, timed, and inflated only when allowed.

Every route that reads a body (/v1 and the management API) goes through
`read_body`, with the `server` section of the request's snapshot:

- Size. `server.max_body_bytes` is enforced here, from the live snapshot, so a
  reload that raises it takes effect at once (aiohttp's `client_max_size` is
  fixed at start and set to a ceiling). The bound applies to the bytes as
  received and, for a compressed body, to the inflated bytes as well.
- Content-Encoding. Refused with 415 unless `server.request_encodings` lists it:
  inflating is work an unauthenticated client can demand. The server runs with
  aiohttp's own decompression off (proxy/server.py), so `request.content`
  holds the bytes as sent and the bound is on what we actually inflate.
- Inflating. Incremental zlib with `max_length`: never more than limit + 1
  bytes are produced, in steps, yielding to the event loop between them, so a
  1 MB body that would inflate to 1 GiB costs a few milliseconds and a 413.
  Corrupt or truncated data is a 400.
- Time. A pause longer than `server.timeouts.body` between two reads is a 408
  (nginx's client_body_timeout), so a client cannot hold a handler open by
  trickling.

A body refused before it was read to the end is never inflated further nor
parsed: the answer closes the connection (proxy/app.py, proxy/server.py).
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

from .config.snapshot import ServerSettings
from .errors import BodyTooLarge, InvalidRequest, RequestTimeout, UnsupportedMediaType

# Inflated bytes produced per step before the loop gets a turn.
_STEP = 256 * 1024
_ALIASES = {"x-gzip": "gzip"}
_GZIP_MAGIC = b"\x1f\x8b"


async def read_body(request: web.Request, server: ServerSettings, *, limit: int | None = None) -> bytes:
    """The request body as the client meant it (inflated if it was compressed).

    `limit` narrows `server.max_body_bytes` for routes with smaller bodies."""
    limit = server.max_body_bytes if limit is None else min(limit, server.max_body_bytes)
    encoding = content_encoding(request, server)
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"Request body is {length} bytes; the limit is {limit} bytes.")
    inflater = None if encoding is None else _Inflater(encoding, limit)
    chunks: list[bytes] = []
    size = 0
    content = request.content
    while True:
        chunk = await _next_chunk(content, server.timeouts.body)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        if inflater is None:
            chunks.append(chunk)
            if content.at_eof():
                break  # the usual body, whole in the buffer: no second read to learn it ended
        else:
            await inflater.feed(chunk, chunks)
    if inflater is not None:
        inflater.finish()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def content_encoding(request: web.Request, server: ServerSettings) -> str | None:
    """The body's one Content-Encoding (None for identity), if the config accepts it; else 415."""
    header = request.headers.get("Content-Encoding")
    if header is None:
        return None
    codings = [_ALIASES.get(c, c) for c in (part.strip().lower() for part in header.split(","))
               if c and c != "identity"]
    if not codings:
        return None
    allowed = server.request_encodings
    if len(codings) == 1 and codings[0] in allowed:
        return codings[0]
    what = "Content-Encoding: " + ", ".join(codings)
    if len(codings) > 1:
        reason = f"{what} stacks {len(codings)} encodings; send at most one."
    elif allowed:
        reason = (f"Request bodies with {what} are not accepted; use one of: {', '.join(allowed)} "
                  "(server.request_encodings), or send the body uncompressed.")
    else:
        reason = (f"Request bodies with {what} are not accepted; send the body uncompressed, or ask "
                  "the operator to allow it in server.request_encodings.")
    # RFC 7694: a 415 for a content coding lists the codings that are accepted.
    raise UnsupportedMediaType(reason, headers={"Accept-Encoding": ", ".join(allowed) or "identity"})


async def _next_chunk(content: StreamReader, timeout: float) -> bytes:
    """What has arrived, or the next part within `timeout`; b"" at the end."""
    try:
        chunk = content.read_nowait()
        if chunk or content.at_eof():
            return chunk  # the common case, a body already in the buffer: no timer at all
        async with asyncio.timeout(timeout):
            return await content.readany()
    except TimeoutError:
        raise RequestTimeout(f"The request body stopped arriving for {timeout:g}s "
                             "(server.timeouts.body); send it without pauses.") from None
    except RequestPayloadError as exc:
        raise InvalidRequest(f"The request body is malformed: {exc}.", code="invalid_body") from None


class _Inflater:
    """One gzip or deflate stream (gzip may hold several members), inflated in
    bounded steps; raises once the output passes `limit`."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._size = 0
        self._z: zlib._Decompress | None = None
        self._started = False

    def _decompressor(self, first: int) -> zlib._Decompress:
        if self._encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is zlib-wrapped by the RFC, but clients send raw deflate too.
        return zlib.decompressobj(zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS)

    async def feed(self, data: bytes, out: list[bytes]) -> None:
        while data:
            z = self._z
            if z is None or z.eof:
                if z is not None and not (self._encoding == "gzip" and data.startswith(_GZIP_MAGIC)):
                    raise self._corrupt("data follows the end of the compressed stream")
                z = self._z = self._decompressor(data[0])
            try:
                piece = z.decompress(data, min(_STEP, self._limit + 1 - self._size))
            except zlib.error:
                raise self._corrupt("it does not decode") from None
            self._size += len(piece)
            if self._size > self._limit:
                raise BodyTooLarge(f"The request body inflates to more than the limit of {self._limit} bytes.")
            if piece:
                out.append(piece)
            data = z.unused_data if z.eof else z.unconsumed_tail
            if data:
                await asyncio.sleep(0)  # between steps, other requests run

    def finish(self) -> None:
        if self._z is not None and not self._z.eof:
            raise self._corrupt("it ends before the compressed stream does")

    def _corrupt(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"The request body is not valid {self._encoding} data: {why}.",
                              code="invalid_compressed_body")

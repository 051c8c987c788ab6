"""The seam between the gateway and the wire to its upstreams.

Shaped like httpx's `AsyncBaseTransport`: one method sends a request and
returns once the response headers are in, plus `aclose()`. The /v1 relay and
the health probes both talk through it, so a probe exercises exactly the code
that serves traffic, and tests and the benchmark can swap the implementation.

    transport.send(TransportRequest(...), connect_timeout=..., read_timeout=...)
        -> UpstreamResponse
    response.status, response.content_type, response.header(name)
    await response.read()              # the whole body, at most the transport's body cap
    await response.read_bounded(n)     # at most n bytes; the rest is dropped with the connection
    await response.readany()           # the next piece of a stream, b"" at the end
    response.release()                 # reuse the connection if the body was read to its end
    response.close()                   # drop the connection

Exceptions:

    OSError
    └── UpstreamConnectionError    connect failed, or the connection broke or spoke
                                   garbage before the response was complete: the
                                   upstream's fault, retryable before bytes reach a client
    asyncio.TimeoutError           a wait for bytes ran past its bound
    ResponseTooLarge               the body is bigger than the cap: not the upstream's
                                   health problem, the caller answers 502
                                   `upstream_response_too_large`

`ResponseTooLarge` is deliberately not an OSError, so code that counts OSErrors
against an upstream's health does not eject a healthy server for a big answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class UpstreamConnectionError(OSError):
    """The connection failed or broke before the response was complete.

    `reason` is a short description with no host or URL in it, safe to show in
    health reasons that reach tenants."""

    def __init__(self, message: str, reason: str = "connection error") -> None:
        super().__init__(message)
        self.reason = reason


class ResponseTooLarge(Exception):
    """The upstream's body exceeds the cap the transport was given."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        seen = f" (Content-Length {size})" if size is not None else ""
        super().__init__(f"upstream response body is larger than {limit} bytes{seen}")
        self.limit = limit
        self.size = size


@dataclass(frozen=True, slots=True)
class TransportRequest:
    """One request to an upstream. `url` is the upstream's base URL as configured;
    `path` is appended to its path. `headers` are pre-encoded header lines, each
    ending in CRLF and free of CR/LF inside (see `header_lines`)."""

    method: bytes
    url: str
    path: bytes
    headers: bytes = b""
    body: bytes = b""


class UpstreamResponse(Protocol):
    status: int
    content_type: str

    def header(self, name: str) -> str | None: ...

    async def read(self, timeout: float | None = None, deadline: float | None = None) -> bytes: ...

    async def read_bounded(self, limit: int, timeout: float | None = None,
                           deadline: float | None = None) -> bytes: ...

    async def readany(self, timeout: float | None = None) -> bytes: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: TransportRequest, *, connect_timeout: float,
                   read_timeout: float | None) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def header_lines(pairs) -> bytes:
    """Header lines for a TransportRequest; values must already be free of CR and LF."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in pairs)

"""A lean, pooled HTTP/1.1 client: the gateway's `Transport` (see transport.py).

Every /v1 request costs one upstream POST, and a general-purpose client spends
more CPU on that POST than the rest of the pipeline together (URL objects,
header multidicts, tracing hooks, timer contexts). This client does only what
forwarding and health probes need: keep-alive connections pooled per upstream,
a request written as one buffer, the response parsed by llhttp (through
httptools), bodies by Content-Length, chunked or read-to-close, and
back-pressure for slow stream readers.

    pool = ConnectionPool(keepalive_expiry=5.0, max_body=128 * 1024 * 1024)
    response = await pool.send(TransportRequest(b"POST", url, b"/chat/completions", headers, body),
                               connect_timeout=5, read_timeout=60)
    await response.read()              # the whole body, bounded by max_body
    await response.read_bounded(n)     # at most n bytes (error bodies)
    await response.readany()           # the next piece of a stream, b"" at the end
    response.release()                 # back to the pool if the body was read to its end
    response.close()                   # drop the connection (client left, error)

`pool.request(target, path, headers, body, ...)` is the same POST with a
pre-parsed `Target`. A `body` that is not bytes is a streamed upload (an object
with `content_type`, `length` (None: sent chunked) and `chunks()`), written as
it arrives, waiting while the upstream's socket buffer is full.

Rules that keep a pooled connection honest:
- Back-pressure (pausing the socket) applies to stream reads only; a whole-body
  read resumes the socket and is bounded by `max_body` instead, and a
  connection goes back to the pool only unpaused.
- A body delimited by the connection's end is whole only on a clean close; a
  reset is an error.
- Bytes after a complete message mean the connection is out of step: it is
  closed, never reused.
- A request written to a connection is never sent again (the upstream may
  have run it). Instead, a pooled connection is checked before writing: one
  idle past `keepalive_expiry`, or with anything to read (the server's close,
  stray bytes), is dropped for another. Go's transport retries only in that
  case too ("server closed idle connection", nothing written).
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl as ssl_module
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import httptools

from .transport import ResponseTooLarge, TransportRequest, UpstreamConnectionError, header_lines

__all__ = ["ConnectionPool", "Response", "ResponseTooLarge", "Target", "UpstreamConnectionError",
           "header_lines"]

# Pause reading from an upstream once this much of a stream waits for a slow client.
HIGH_WATER = 256 * 1024
MAX_IDLE_PER_TARGET = 512
KEEPALIVE_EXPIRY = 5.0  # seconds, as httpcore: shorter than most servers' idle timeouts
# Far above any real answer (2,048 embeddings of 3,072 floats is about 120 MB of
# JSON), yet a runaway upstream cannot take the gateway's memory with it.
MAX_BODY = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    """Where one upstream lives, parsed once from its URL."""

    host: str
    port: int
    tls: bool
    base_path: bytes  # the URL's path prefix, e.g. b"/litellm", or b""
    host_header: bytes

    @classmethod
    def from_url(cls, url: str) -> "Target":
        """Raise ValueError naming what is wrong with an unusable URL."""
        parts = urlsplit(url)  # ValueError for an unclosed "[" already
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"upstream URL {url!r} must start with http:// or https://")
        if not parts.hostname:
            raise ValueError(f"upstream URL {url!r} has no host")
        try:
            explicit = parts.port
        except ValueError:
            raise ValueError(f"upstream URL {url!r} has a port outside 1-65535") from None
        if explicit == 0:
            raise ValueError(f"upstream URL {url!r} has a port outside 1-65535")
        tls = parts.scheme == "https"
        port = explicit or (443 if tls else 80)
        host = parts.hostname
        # RFC 9110 §7.2: an IPv6 literal in Host keeps its brackets.
        shown = f"[{host}]" if ":" in host else host
        default = (tls and port == 443) or (not tls and port == 80)
        host_header = shown if default else f"{shown}:{port}"
        return cls(host=host, port=port, tls=tls,
                   base_path=parts.path.rstrip("/").encode(), host_header=host_header.encode())


class _OutOfStep(Exception):
    """Raised inside the parser when a second message starts on a finished response."""


class _Connection(asyncio.Protocol):
    __slots__ = ("pool", "target", "transport", "parser", "response", "lost", "reused", "paused",
                 "reusable", "idle_since", "poller", "writable")

    def __init__(self, pool: "ConnectionPool", target: Target) -> None:
        self.pool = pool
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.lost = False
        self.reused = False
        self.paused = False
        self.reusable = True
        self.idle_since = 0.0
        self.poller: select.poll | None = None  # this socket alone, registered once: stale() is one call
        self.writable: asyncio.Future | None = None  # set while the socket's send buffer is full

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.complete:
            # Bytes after the message (or nobody asked): the connection is out of step.
            self._discard()
            return
        response.bytes_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._discard()  # a 101: the rest of the connection is not HTTP any more
        except httptools.HttpParserError as exc:
            if not response.complete:
                response._fail(UpstreamConnectionError(f"malformed response from upstream: {exc}",
                                                       "malformed response"))
            self._discard()

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self.writable = self.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while the upstream reads a streamed request body slower than it arrives."""
        if self.lost:
            raise UpstreamConnectionError("upstream closed the connection during the request body",
                                          "closed mid-request")
        waiter = self.writable
        if waiter is not None:
            await waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter, self.writable = self.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamConnectionError("upstream closed the connection during the request body",
                                                         "closed mid-request"))
        response = self.response
        if response is not None and not response.complete and response.error is None:
            if exc is None and response.headers_done and response.until_close:
                response._finish()  # a body delimited by a clean end of the connection
            elif exc is not None:
                response._fail(UpstreamConnectionError(
                    f"upstream connection broke mid-response: {type(exc).__name__}", "connection reset"))
            else:
                response._fail(UpstreamConnectionError("upstream closed the connection mid-response",
                                                       "closed mid-response"))
        self.pool._forget(self)

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        if self.response.complete:
            raise _OutOfStep  # stops the parser; data_received drops the connection

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if not response.headers_done:  # trailers arrive here too; nobody reads them
            response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: the real answer follows on the same message stream.
            response.raw_headers.clear()
            response.informational = True
            return
        response.status = status
        response.keep_alive = self.parser.should_keep_alive()
        for name, value in response.raw_headers:
            lower = name.lower()
            if lower == b"content-type":
                response.content_type = value.decode("latin-1")
            elif lower == b"content-length":
                response.until_close = False
                try:
                    response.declared_length = int(value)
                except ValueError:
                    pass  # llhttp rejects it on its own
            elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                response.until_close = False
        response.headers_done = True
        response._wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        response.chunks.append(body)
        response.buffered += len(body)
        if response.buffered > response.pause_at and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        if response.informational:
            response.informational = False
            return
        response._finish()

    # -- used by the response and the pool ---------------------------------

    def resume(self) -> None:
        if self.paused and not self.lost:
            self.paused = False
            self.transport.resume_reading()

    def _discard(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def stale(self) -> bool:
        """Anything to read on an idle connection means it is closed or out of step."""
        poller = self.poller
        return poller is not None and bool(poller.poll(0))


class Response:
    __slots__ = ("conn", "status", "content_type", "raw_headers", "headers_done", "keep_alive",
                 "until_close", "chunks", "buffered", "complete", "error", "_waiter", "bytes_received",
                 "_done", "pause_at", "declared_length", "informational")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.status = 0
        self.content_type = "application/json"
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.until_close = True
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self.bytes_received = 0
        self._done = False  # released or closed
        self.pause_at = HIGH_WATER
        self.declared_length: int | None = None
        self.informational = False

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    # -- called by the connection ------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- used by the caller ------------------------------------------------

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def _headers(self, timeout: float | None) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    async def readany(self, timeout: float | None = None) -> bytes:
        """The next piece of the body as it arrives; b"" once the body is complete."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait(timeout)
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.buffered <= HIGH_WATER // 2:
            self.conn.resume()
        return data

    async def read(self, timeout: float | None = None, deadline: float | None = None) -> bytes:
        """The whole body; `timeout` bounds each wait for more bytes, `deadline`
        (event-loop time) the whole read however slowly the bytes trickle.
        Raises ResponseTooLarge past the pool's `max_body`."""
        limit = self.conn.pool.max_body
        if self.declared_length is not None and self.declared_length > limit:
            self.conn.reusable = False
            raise ResponseTooLarge(limit, self.declared_length)
        await self._collect(limit, timeout, deadline)
        if self.buffered > limit:
            self.conn.reusable = False
            raise ResponseTooLarge(limit)
        return self._take(self.buffered)

    async def read_bounded(self, limit: int, timeout: float | None = None,
                           deadline: float | None = None) -> bytes:
        """At most `limit` bytes of the body. A longer body is cut there and its
        connection dropped on release, since the rest was never read."""
        await self._collect(limit, timeout, deadline)
        if self.buffered > limit or not self.complete:
            self.conn.reusable = False
        return self._take(limit)

    async def _collect(self, limit: int, timeout: float | None, deadline: float | None) -> None:
        # A whole-body read consumes as fast as bytes come: stream back-pressure
        # must not stall it, so the socket pauses only past the cap.
        self.pause_at = limit
        self.conn.resume()
        loop = asyncio.get_running_loop()
        while not self.complete and self.buffered <= limit:
            if self.error is not None:
                raise self.error
            wait = timeout
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise asyncio.TimeoutError
                wait = left if wait is None else min(wait, left)
            await self._wait(wait)
        if self.error is not None:
            raise self.error

    def _take(self, limit: int) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data if len(data) <= limit else data[:limit]

    def release(self) -> None:
        """Give the connection back if this response was read to its end, else drop it."""
        if self._done:
            return
        self._done = True
        conn = self.conn
        conn.response = None
        if (self.complete and self.error is None and self.keep_alive and conn.reusable
                and not conn.lost and not self.chunks and not conn.transport.is_closing()):
            conn.resume()
            conn.pool._give_back(conn)
        else:
            conn._discard()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self.conn.response = None
        self.conn._discard()


async def _write_streamed(conn: _Connection, body) -> None:
    """`body.chunks()` to the socket, waiting whenever its send buffer is full."""
    chunked = body.length is None
    async for piece in body.chunks():
        if not piece:
            continue
        await conn.drain()
        conn.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
    await conn.drain()
    if chunked:
        conn.transport.write(b"0\r\n\r\n")


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


def _connect_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, ssl_module.SSLError):
        return "TLS handshake failed"
    return (exc.strerror or type(exc).__name__).lower()


class ConnectionPool:
    """Keep-alive connections per upstream; implements `Transport`."""

    def __init__(self, *, max_idle_per_target: int = MAX_IDLE_PER_TARGET,
                 keepalive_expiry: float = KEEPALIVE_EXPIRY, max_body: int = MAX_BODY,
                 clock: Callable[[], float] | None = None) -> None:
        self._idle: dict[Target, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._max_idle = max_idle_per_target
        self._ssl: ssl_module.SSLContext | None = None
        self._targets: dict[str, Target] = {}
        self._clock = clock  # None: the event loop's clock
        self._sweeper: asyncio.TimerHandle | None = None
        self.keepalive_expiry = keepalive_expiry
        self.max_body = max_body

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.from_url(url)
        return target

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def _connect(self, target: Target, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        if target.tls and self._ssl is None:
            self._ssl = ssl_module.create_default_context()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self, target), target.host, target.port,
                ssl=self._ssl if target.tls else None), timeout)
        except asyncio.TimeoutError:
            raise
        except OSError as exc:
            reason = _connect_reason(exc)
            raise UpstreamConnectionError(f"cannot connect to {target.host}:{target.port}: {reason}",
                                          reason) from None
        self._all.add(conn)
        return conn

    def _acquire_idle(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target)
        if not idle:
            return None
        now = self._now()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            if (conn.lost or conn.transport.is_closing() or now - conn.idle_since > self.keepalive_expiry
                    or conn.stale()):
                conn._discard()
                continue
            conn.reused = True
            return conn
        return None

    def _give_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.target, [])
        if len(idle) >= self._max_idle:
            conn._discard()
            return
        conn.idle_since = self._now()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_expiry, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the expiry, even for upstreams nobody calls now."""
        self._sweeper = None
        now = self._now()
        left = 0
        for idle in self._idle.values():
            # Oldest first: each list is in the order connections came back.
            while idle and now - idle[0].idle_since > self.keepalive_expiry:
                idle.pop(0)._discard()
            left += len(idle)
        if left:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_expiry, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.target)
        if idle and conn in idle:
            idle.remove(conn)

    async def send(self, request: TransportRequest, *, connect_timeout: float,
                   read_timeout: float | None) -> Response:
        """Send `request` and wait for the response headers (`read_timeout` bounds that wait)."""
        return await self._send(self.target(request.url), request.method, request.path, request.headers,
                                request.body, connect_timeout, read_timeout)

    async def request(self, target: Target, path: bytes, headers: bytes, body: bytes, *,
                      connect_timeout: float, read_timeout: float | None, method: bytes = b"POST") -> Response:
        """POST (or `method`) `body` to a pre-parsed target; see `send`."""
        return await self._send(target, method, path, headers, body, connect_timeout, read_timeout)

    async def _send(self, target: Target, method: bytes, path: bytes, headers: bytes, body: bytes,
                    connect_timeout: float, read_timeout: float | None) -> Response:
        head = method + b" " + target.base_path + path + b" HTTP/1.1\r\nHost: " + target.host_header + b"\r\n"
        streamed = not isinstance(body, (bytes, bytearray))
        if streamed:
            # An upload relayed as it arrives: its length if the client sent one, else chunked.
            head += (b"Transfer-Encoding: chunked\r\n" if body.length is None
                     else b"Content-Length: " + str(body.length).encode() + b"\r\n")
        elif body or method == b"POST":
            head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        head += headers + b"\r\n"
        conn = self._acquire_idle(target)
        if conn is None:
            conn = await self._connect(target, connect_timeout)
        response = Response(conn)
        conn.response = response
        try:
            # Once written, never re-sent: the upstream may already be running it.
            try:
                if streamed:
                    conn.transport.write(head)
                    await _write_streamed(conn, body)
                else:
                    conn.transport.write(head + body)
            except RuntimeError as exc:
                # The event loop had already closed the socket (the upstream died a moment
                # ago) and refused the write: nothing was sent, so it is a connection
                # failure like a refused connect, which the forwarder may move elsewhere.
                raise UpstreamConnectionError(f"upstream connection closed before the request was written: {exc}",
                                              "closed before writing") from None
            await response._headers(read_timeout)
        except BaseException:
            response.close()  # failed, timed out or cancelled: the connection's state is unknown
            raise
        return response

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks

    close = aclose  # the name the forwarder and the app's teardown use

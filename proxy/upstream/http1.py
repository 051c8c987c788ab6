"""A lean, pooled HTTP/1.1 client for the one request shape the gateway sends.

Every /v1 request costs one upstream POST, and a general-purpose client spends
more CPU on that POST than the rest of the pipeline together (URL objects,
header multidicts, tracing hooks, timer contexts). This client does only what
forwarding needs: keep-alive connections pooled per upstream, a request
written as one buffer, the response parsed by llhttp (through httptools),
bodies by Content-Length, chunked or read-to-close, and back-pressure for slow
stream readers.

    pool = ConnectionPool()
    response = await pool.request(target, path, headers, body, connect_timeout=5, read_timeout=60)
    response.status, response.content_type
    await response.read()          # the whole body
    await response.readany()       # the next piece of a stream, b"" at the end
    response.release()             # back to the pool if the body was read to the end
    response.close()               # drop the connection (client left, error)

Failures raise `UpstreamConnectionError` (an OSError, like every socket error)
or `asyncio.TimeoutError`, which the forwarder treats as retryable.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

# Pause reading from an upstream once this much of a stream waits for a slow client.
HIGH_WATER = 256 * 1024
MAX_IDLE_PER_TARGET = 512


class UpstreamConnectionError(OSError):
    """The connection failed or broke before the response was complete."""


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
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        default = (tls and port == 443) or (not tls and port == 80)
        host_header = parts.hostname if default else f"{parts.hostname}:{port}"
        return cls(host=parts.hostname or "", port=port, tls=tls,
                   base_path=parts.path.rstrip("/").encode(), host_header=host_header.encode())


class _Connection(asyncio.Protocol):
    __slots__ = ("pool", "target", "transport", "parser", "response", "lost", "reused", "paused")

    def __init__(self, pool: "ConnectionPool", target: Target) -> None:
        self.pool = pool
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.lost = False
        self.reused = False
        self.paused = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.transport.close()
            return
        response.bytes_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(UpstreamConnectionError(f"malformed response from upstream: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None and not response.complete:
            if response.headers_done and response.until_close:
                response._finish()  # a body delimited by the end of the connection
            else:
                response._fail(UpstreamConnectionError("upstream closed the connection mid-response"))
        self.pool._forget(self)

    # -- httptools callbacks -----------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        response.status = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        for name, value in response.raw_headers:
            lower = name.lower()
            if lower == b"content-type":
                response.content_type = value.decode("latin-1")
            elif lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                response.until_close = False
        response.headers_done = True
        waiter = response._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        response.chunks.append(body)
        response.buffered += len(body)
        if response.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        self.response._finish()

    def resume(self) -> None:
        if self.paused and not self.lost:
            self.paused = False
            self.transport.resume_reading()


class Response:
    __slots__ = ("conn", "status", "content_type", "raw_headers", "headers_done", "keep_alive",
                 "until_close", "chunks", "buffered", "complete", "error", "_waiter", "bytes_received",
                 "_done")

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

    # -- used by the forwarder ---------------------------------------------

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
        (event-loop time) the whole read however slowly the bytes trickle."""
        loop = asyncio.get_running_loop()
        while not self.complete:
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
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data

    def release(self) -> None:
        """Give the connection back if this response was read to its end, else drop it."""
        if self._done:
            return
        self._done = True
        conn = self.conn
        conn.response = None
        if self.complete and self.error is None and self.keep_alive and not conn.lost and not self.chunks:
            conn.pool._give_back(conn)
        else:
            conn.transport.close()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self.conn.response = None
        if self.conn.transport is not None:
            self.conn.transport.close()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class ConnectionPool:
    def __init__(self, *, max_idle_per_target: int = MAX_IDLE_PER_TARGET) -> None:
        self._idle: dict[Target, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._max_idle = max_idle_per_target
        self._ssl: ssl_module.SSLContext | None = None
        self._targets: dict[str, Target] = {}

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.from_url(url)
        return target

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
            raise UpstreamConnectionError(f"cannot connect to {target.host}:{target.port}: "
                                          f"{exc.strerror or type(exc).__name__}") from None
        self._all.add(conn)
        return conn

    def _acquire_idle(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target)
        while idle:
            conn = idle.pop()
            if not conn.lost and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    def _give_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.target, [])
        if len(idle) >= self._max_idle:
            conn.transport.close()
        else:
            idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.target)
        if idle and conn in idle:
            idle.remove(conn)

    async def request(self, target: Target, path: bytes, headers: bytes, body: bytes, *,
                      connect_timeout: float, read_timeout: float | None) -> Response:
        """POST `body` and wait for the response headers. `headers` are extra header
        lines, each ending in CRLF. `read_timeout` bounds the wait for the headers."""
        head = (b"POST " + target.base_path + path + b" HTTP/1.1\r\nHost: " + target.host_header
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + headers + b"\r\n")
        conn = self._acquire_idle(target)
        for attempt in (0, 1):
            if conn is None:
                conn = await self._connect(target, connect_timeout)
            response = Response(conn)
            conn.response = response
            conn.transport.write(head + body)
            try:
                await response._headers(read_timeout)
                return response
            except UpstreamConnectionError:
                response.close()
                # A kept-alive connection the upstream had already closed: the request
                # never reached it, so one more try on a fresh connection is safe.
                if attempt == 0 and conn.reused and response.bytes_received == 0:
                    conn = None
                    continue
                raise
            except BaseException:
                response.close()  # timed out or cancelled: the connection is in an unknown state
                raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks


def header_lines(pairs: Any) -> bytes:
    """Header lines for `request`; values must already be free of CR and LF."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in pairs)

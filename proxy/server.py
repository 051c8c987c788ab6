"""Running the app: the runner options `serve`, `demo` and the tests share.

- handler_cancellation: a client that disconnects cancels its handler, which
  closes the upstream request at once instead of letting it run on.
- Requests that aiohttp's HTTP parser rejects (a bare CR in a header, a
  malformed request line) never reach the app; their 400 would be plain text.
  `_GatewayHandler` answers them in OpenAI's JSON error shape too.
- Hostile clients: aiohttp's own decompression is off (proxy/bodies.py bounds
  and inflates bodies itself, from the raw bytes); after an answer to a
  request whose body was not read to the end the connection is closed (the
  app marks the answer `Connection: close`), and at most LINGERING_S of the
  rest is discarded, raw, first. Closing with unread bytes in the socket makes
  the kernel send a reset, and the client would lose the 413 it was sent.
  Connections have the timeouts nginx has (server.timeouts): header and
  keep-alive here, body in proxy/bodies.py.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .appkeys import CONFIG
from .config.snapshot import ServerSettings
from .errors import PortInUse, error_body

log = logging.getLogger("bluesminds")

# nginx's lingering close, shorter: a client still sending gets time to finish
# its window and read the answer; a refused upload cannot hold the connection.
LINGERING_S = 2.0

_MESSAGES = {
    400: "The HTTP request is malformed (bad request line or header); it was not processed.",
    413: "The request headers are too large.",
    431: "The request headers are too large.",
}


class _GatewayHandler(RequestHandler):
    """One connection. Adds to aiohttp's handler: errors in OpenAI's JSON shape
    and a header timeout, which aiohttp lacks (its keep-alive timer closes only
    a connection with nothing received; a client trickling a header kept it open).
    Timeouts are read from the live config when the connection opens."""

    def __init__(self, manager: web.Server, *, settings: Callable[[], ServerSettings], **kwargs) -> None:
        timeouts = settings().timeouts
        super().__init__(manager, keepalive_timeout=timeouts.keepalive, **kwargs)
        self._header_timeout = timeouts.header
        self._header_timer: asyncio.TimerHandle | None = None
        # Loop time the pending request header began at; None while none is pending.
        # One timer per connection reads it when it fires, rather than a timer armed
        # and cancelled for every request on a kept-alive connection.
        self._header_since: float | None = None
        self._last_body = None  # payload of the last request whose headers arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_started()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._header_since = None  # a header is complete
            if self._messages:
                self._last_body = self._messages[-1][1]
        elif data and self._header_since is None and not self._receiving_body():
            self._header_started()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._header_since = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _receiving_body(self) -> bool:
        return self._last_body is not None and not self._last_body.is_eof()

    def _header_started(self) -> None:
        self._header_since = self._loop.time()
        if self._header_timer is None:
            self._header_timer = self._loop.call_later(self._header_timeout, self._header_check)

    def _header_check(self) -> None:
        self._header_timer = None
        since = self._header_since
        if since is None:
            return  # no header pending: the next one to start arms the timer again
        left = since + self._header_timeout - self._loop.time()
        if left > 0:
            # This header began after the timer was armed (for an earlier one): its own full period.
            self._header_timer = self._loop.call_later(left, self._header_check)
            return
        if self._current_request is not None:
            # A pipelined header started while an answer is still being produced:
            # the answer is not cut for it; the header gets another full period.
            self._header_started()
            return
        log.debug("closing a connection whose request header did not arrive within %gs", self._header_timeout)
        self.force_close()

    def handle_error(self, request, status=500, exc=None, message=None):  # type: ignore[override]
        if status >= 500:
            return super().handle_error(request, status, exc, message)  # keeps aiohttp's logging
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        log.info("rejected malformed HTTP request from %s: %s", request.remote,
                 str(exc).splitlines()[0] if exc else status)
        text = _MESSAGES.get(status, "The HTTP request is malformed; it was not processed.")
        response = web.Response(status=status, content_type="application/json",
                                body=error_body(text, type="invalid_request_error", code="malformed_request"))
        response.force_close()
        return response


class _GatewayServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _GatewayHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    def __init__(self, app: web.Application) -> None:
        holder = app[CONFIG]
        # The access log is the app's own (proxy/access_log.py), so aiohttp's is off.
        super().__init__(app, handler_cancellation=True, access_log=None, auto_decompress=False,
                         lingering_time=LINGERING_S, settings=lambda: holder.current.server)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GatewayServer  # same object, JSON errors from the parser too
        return server


async def start(app: web.Application, host: str, port: int, *,
                reuse_port: bool = False) -> tuple[GatewayRunner, int]:
    """Start serving `app`; returns the runner and the bound port (port 0 picks a free one).
    `reuse_port`: SO_REUSEPORT, so the workers of `serve --workers N` share one
    port and the kernel spreads connections among them."""
    runner = GatewayRunner(app)
    try:
        await runner.setup()  # the app's start-up, the metrics listener's bind included
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True,
                           reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port, "--port (or server.port)") from None
            raise
    except BaseException:
        await runner.cleanup()  # what did start (the database, the probes) stops again
        raise
    bound = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    return runner, bound


async def serve_until_signal(app: web.Application, host: str, port: int,
                             ready: Callable[[int], Awaitable[None]] | None = None, *,
                             reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully: stop accepting, let
    in-flight requests finish, and run cleanup (usage flush) before returning."""
    runner, bound = await start(app, host, port, reuse_port=reuse_port)
    # Everything built at start-up (config, schemas, modules, caches) lives as
    # long as the process: keep it out of every future garbage collection pass.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on http://%s:%s", host, bound)
    if ready is not None:
        await ready(bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()

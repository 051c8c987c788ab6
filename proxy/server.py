"""Running the app: the runner options `serve`, `demo` and the tests share.

- handler_cancellation: a client that disconnects cancels its handler, which
  closes the upstream request at once instead of letting it run on.
- Requests that aiohttp's HTTP parser rejects (a bare CR in a header, a
  malformed request line) never reach the app; their 400 would be plain text.
  `_OpenAIErrorHandler` answers them in OpenAI's JSON error shape too.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .errors import error_body

log = logging.getLogger("bluesminds")

_MESSAGES = {
    400: "The HTTP request is malformed (bad request line or header); it was not processed.",
    413: "The request headers are too large.",
    431: "The request headers are too large.",
}


class _OpenAIErrorHandler(RequestHandler):
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
        return _OpenAIErrorHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    def __init__(self, app: web.Application) -> None:
        super().__init__(app, handler_cancellation=True, access_log=None)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GatewayServer  # same object, JSON errors from the parser too
        return server


async def start(app: web.Application, host: str, port: int) -> tuple[GatewayRunner, int]:
    """Start serving `app`; returns the runner and the bound port (port 0 picks a free one)."""
    runner = GatewayRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    return runner, bound


async def serve_until_signal(app: web.Application, host: str, port: int,
                             ready: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully: stop accepting, let
    in-flight requests finish, and run cleanup (usage flush) before returning."""
    runner, bound = await start(app, host, port)
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

"""The floor for any aiohttp gateway: forward the body, return the upstream's.

No auth, no limits, no accounting, no JSON parsing. One pooled ClientSession;
an SSE answer is relayed chunk by chunk as it arrives (iter_any), like the
gateway relays streams. Whatever the gateway costs beyond this process is
what its features cost.

    python -m bench.bare_proxy --port 9000 --upstream http://127.0.0.1:8091
"""

from __future__ import annotations

import argparse
import asyncio
from typing import AsyncIterator

import aiohttp
from aiohttp import web

UPSTREAM_URL: web.AppKey[str] = web.AppKey("upstream_url", str)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)

# Only what an OpenAI-compatible upstream needs to understand the request.
_FORWARDED = ("Content-Type", "Accept")


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    headers["Authorization"] = "Bearer x"
    url = request.app[UPSTREAM_URL] + request.path_qs
    session = request.app[SESSION]
    async with session.request(request.method, url, data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            return web.Response(status=upstream.status, body=await upstream.read(),
                                headers={"Content-Type": content_type})
        response = web.StreamResponse(status=upstream.status,
                                      headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    # The same pool shape the gateway uses: unbounded, keep-alive, no cookies.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    app[SESSION] = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                         auto_decompress=False)
    yield
    await app[SESSION].close()


def create_bare_app(upstream_url: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM_URL] = upstream_url.rstrip("/")
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Base URL, e.g. http://127.0.0.1:8091")
    args = parser.parse_args()
    try:
        import uvloop  # the gateway's `serve` runs on uvloop too; same loop, fair floor
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(create_bare_app(args.upstream), host=args.host, port=args.port, access_log=None,
                handler_cancellation=True, print=lambda _: print("bare proxy listening", flush=True))


if __name__ == "__main__":
    main()

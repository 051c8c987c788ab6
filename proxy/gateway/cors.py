"""CORS for browser clients (`server.cors`), off by default.

When the live config has it on:
- a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
  from an allowed origin answers 204 with the allowed methods and headers,
  before routing, authentication or limits (a preflight carries no key);
  from any other origin, 403 in OpenAI's shape;
- every answer to a request from an allowed origin, streams included, carries
  `Access-Control-Allow-Origin` with that origin, `Vary: Origin`, and the
  headers page scripts may read (`x-request-id`, `x-ratelimit-*`).

Off (no `server.cors`), nothing here adds a header or answers anything: an
`OPTIONS` is routed as before.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CONFIG
from ..config.snapshot import CorsSettings
from ..errors import PermissionDenied


def allows(policy: CorsSettings, origin: str) -> bool:
    return origin in policy.allow_origins or "*" in policy.allow_origins


def preflight(request: web.Request) -> web.Response | None:
    """The answer to a CORS preflight, or None when this is not one (or CORS is off)."""
    policy = request.app[CONFIG].current.server.cors
    origin = request.headers.get("Origin")
    if policy is None or origin is None or "Access-Control-Request-Method" not in request.headers:
        return None
    if not allows(policy, origin):
        raise PermissionDenied(f"The origin {origin[:200]!r} may not call this gateway from a browser; the "
                               "operator lists allowed origins in server.cors.allow_origins.",
                               code="cors_origin_not_allowed")
    if "*" in policy.allow_headers:
        allowed_headers = request.headers.get("Access-Control-Request-Headers", "")
    else:
        allowed_headers = ", ".join(policy.allow_headers)
    headers = {"Access-Control-Allow-Methods": ", ".join(policy.allow_methods),
               "Access-Control-Max-Age": str(policy.max_age)}
    if allowed_headers:
        headers["Access-Control-Allow-Headers"] = allowed_headers
    # The origin is added by on_prepare, as for every other answer.
    return web.Response(status=204, headers=headers)


async def on_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """aiohttp's on_response_prepare: runs for every answer, whole or streamed, just before its headers go out."""
    policy = request.app[CONFIG].current.server.cors
    if policy is None:
        return
    origin = request.headers.get("Origin")
    headers = response.headers
    headers.add("Vary", "Origin")
    if origin is None or not allows(policy, origin):
        return
    headers["Access-Control-Allow-Origin"] = origin
    if policy.expose_headers and request.method != "OPTIONS":
        headers["Access-Control-Expose-Headers"] = ", ".join(policy.expose_headers)


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(on_prepare)

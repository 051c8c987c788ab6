"""The management API, called in-process: a page is a view of the API's answers.

`get(request, handler, path, params)` runs the API's own route handler on a
copy of the page's request with the API's path and query, so the caller, the
config snapshot and every check (validation, authorization) are the API's;
an error is raised as the API would raise it.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from yarl import URL

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def get(request: web.Request, handler: Route, path: str,
              params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    query = {k: str(v) for k, v in (params or {}).items() if v is not None and v != ""}
    sub = request.clone(method="GET", rel_url=URL(path).with_query(query))
    # The API's own route match, as aiohttp's dispatcher would set it: its handler reads
    # its path parameters ({id}) from the API path, not from the page's route.
    match = await request.app.router.resolve(sub)
    match.add_app(request.app)
    match.freeze()
    sub._match_info = match  # noqa: SLF001 - what web.Application._handle assigns
    response = await handler(sub)
    return orjson.loads(response.body)


def clean(params: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    """The page's filters that the API takes, without empty fields an HTML form sends."""
    return {name: params[name] for name in allowed if params.get(name)}

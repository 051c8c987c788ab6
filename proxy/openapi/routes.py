"""GET /api/openapi.json and the reference page /dashboard/api.

The page is rendered on the server from the same document, with the
dashboard's base template: no viewer to vendor, no script, nothing from a
CDN, and the routes, fields and examples are plain HTML a screen reader
and a text search can use.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..dashboard.render import page, render
from .document import ROUTES, build_document, encode, errors_of
from .entry import AUTH, Route
from .schemas import resolve

DOCUMENT: web.AppKey[tuple[bytes, str, dict[str, Any]]] = web.AppKey("bluesminds.openapi", tuple)


def setup(app: web.Application) -> None:
    document = build_document(version=_version())
    body, etag = encode(document)
    app[DOCUMENT] = (body, etag, document)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/dashboard/api", page(reference_page))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("bluesminds")
    except PackageNotFoundError:
        return "0"


async def openapi_json(request: web.Request) -> web.Response:
    body, etag, _ = request.app[DOCUMENT]
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def _fields(components: dict[str, Any], name: str | None) -> list[dict[str, Any]]:
    if name is None:
        return []
    schema = resolve(components, name)
    required = set(schema.get("required", ()))
    out = []
    for field, spec in schema.get("properties", {}).items():
        if "$ref" in spec:
            component, _, pointer = spec["$ref"].removeprefix("#/components/schemas/").partition("/")
            spec = {**resolve(components, f"{component}#/{pointer}"), **spec}
        kind = spec.get("type") or ("one of " + ", ".join(map(str, spec["enum"])) if "enum" in spec else "")
        out.append({"name": field, "type": " | ".join(kind) if isinstance(kind, list) else kind,
                    "required": field in required,
                    "about": spec.get("description") or spec.get("title") or ""})
    return out


def view(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    query = _fields(components, route.query) + [
        {"name": n, "type": k, "required": False, "about": t} for n, k, t in route.query_params]
    return {
        "route": route, "anchor": (route.method + route.path).lower().replace("/", "-").strip("-")
        .replace("{", "").replace("}", ""),
        "auth": AUTH[route.auth], "fields": _fields(components, route.body), "query": query,
        "errors": errors_of(route),
        "example_request": None if route.example_request is None else
        orjson.dumps(route.example_request, option=orjson.OPT_INDENT_2).decode(),
        "example_response": None if route.example_response is None else
        (route.example_response if isinstance(route.example_response, str) else
         orjson.dumps(route.example_response, option=orjson.OPT_INDENT_2).decode()),
    }


async def reference_page(request: web.Request, caller) -> web.Response:
    components = request.app[DOCUMENT][2]["components"]["schemas"]
    families: dict[str, list[dict[str, Any]]] = {}
    for route in ROUTES:
        families.setdefault(route.family, []).append(view(route, components))
    return render(request, "api_reference.html", caller=caller, title="API reference", families=families)

"""The OpenAPI 3.1 document: the route tables joined with the request schemas."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import orjson

from .entry import AUTH, Error, Route
from .schemas import load_components, ref_of, resolve
from . import table_api, table_billing, table_site, table_v1

ROUTES: tuple[Route, ...] = table_v1.ROUTES + table_api.ROUTES + table_billing.ROUTES + table_site.ROUTES

HEADERS = {
    "x-request-id": "The request's id (the client's own if it sent a sane one); also in the usage log.",
    "x-bluesminds-upstream": "The name of the upstream server that answered.",
    "x-ratelimit-limit-requests": "The caller's requests-per-minute limit.",
    "x-ratelimit-remaining-requests": "Requests left in the current minute.",
    "x-ratelimit-reset-requests": "Time until the request bucket is full again, e.g. `1s`.",
    "x-ratelimit-limit-tokens": "The caller's tokens-per-minute limit.",
    "x-ratelimit-remaining-tokens": "Tokens left in the current minute.",
    "x-ratelimit-reset-tokens": "Time until the token bucket is full again.",
    "retry-after": "On 429 and 503: whole seconds to wait (also `retry-after-ms`).",
    "etag": "The version of what was answered; send it back in `If-None-Match` or `If-Match`.",
}
_SECURITY = {
    "api_key": [{"apiKey": []}],
    "user": [{"adminKey": []}, {"sessionToken": []}, {"sessionCookie": []}],
    "account": [{"sessionToken": []}, {"sessionCookie": []}],
    "admin": [{"adminKey": []}, {"sessionToken": []}, {"sessionCookie": []}],
    "metrics": [{}, {"adminKey": []}],
    "browser": [{"sessionCookie": []}],
    "none": [],
    "signature": [],
}
# Errors every route of an auth kind can answer, so each entry lists only its own.
_AUTH_ERRORS = {
    "user": (Error(401, "not_authenticated", "no credentials, or an expired session (`invalid_session`)"),
             Error(403, "csrf_rejected", "a cookie-authenticated write from another site")),
    "admin": (Error(401, "not_authenticated", "no credentials"),
              Error(403, "admin_required", "the caller is not an administrator")),
    "metrics": (Error(403, "admin_required", "with `metrics.access: admin`, a caller that is not an admin"),),
}
_AUTH_ERRORS["account"] = _AUTH_ERRORS["user"] + (
    Error(403, "account_required", "the admin key, which has no account"),)
_BODY_ERRORS = (Error(400, "invalid_request", "a wrong type or value; `param` names the field"),
                Error(400, "unknown_parameter", "a field the schema does not have"),
                Error(413, "request_too_large", "the body is over the route's limit"))
ERROR_SCHEMA = {
    "title": "OpenAI's error shape",
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}


def errors_of(route: Route) -> tuple[Error, ...]:
    found: list[Error] = list(_AUTH_ERRORS.get(route.auth, ()))
    if route.auth != "api_key" and (route.body or route.query) and route.content_type == "application/json":
        found += _BODY_ERRORS
    found += route.errors
    seen: set[tuple[int, str]] = set()
    return tuple(e for e in found if (e.status, e.code) not in seen and not seen.add((e.status, e.code)))


def _parameters(route: Route, components: dict[str, Any]) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in _path_names(route.path)]
    if route.query and route.method == "GET":
        properties = resolve(components, route.query).get("properties", {})
        params += [{"name": name, "in": "query", "required": False,
                    "schema": ref_of(f"{route.query}#/properties/{name}")} for name in properties]
    params += [{"name": name, "in": "query", "required": False, "description": text, "schema": {"type": kind}}
               for name, kind, text in route.query_params]
    return params


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    op_id = (route.method.lower() + route.path.replace("/", "_").replace("{", "").replace("}", "")
             .replace(".", "_").replace("-", "_")).rstrip("_")
    success: dict[str, Any] = {"description": route.summary, "content": {route.content_type: {
        "schema": route.response, **({"example": route.example_response}
                                     if route.example_response is not None else {})}}}
    if route.headers:
        success["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in route.headers}
    responses: dict[str, Any] = {str(route.status): success}
    for status, errs in _by_status(errors_of(route)).items():
        description = "; ".join(f"`{e.code}`: {e.when}" for e in errs)
        answer: dict[str, Any] = {"description": description,
                                  "content": {"application/json": {
                                      "schema": {"$ref": "#/components/schemas/Error"},
                                      "examples": {e.code: {"summary": e.when, "value": {"error": {
                                          "message": e.when, "type": _error_type(e.status), "param": None,
                                          "code": e.code}}} for e in errs}}}}
        if status in (429, 503) or route.auth == "api_key":
            answer["headers"] = {"x-request-id": {"$ref": "#/components/headers/x-request-id"},
                                 **({"retry-after": {"$ref": "#/components/headers/retry-after"}}
                                    if status in (429, 503) else {})}
        responses[str(status)] = answer
    op: dict[str, Any] = {
        "operationId": op_id, "summary": route.summary, "tags": [route.family],
        "description": " ".join(filter(None, (route.description, "Auth: " + AUTH[route.auth],
                                              _also(route.aliases)))),
        "security": _SECURITY[route.auth], "x-bluesminds-auth": route.auth, "responses": responses,
    }
    if params := _parameters(route, components):
        op["parameters"] = params
    if route.body:
        media = "multipart/form-data" if route.body == "v1.audio_upload" else "application/json"
        body: dict[str, Any] = {"schema": ref_of(route.body)}
        if route.example_request is not None:
            body["example"] = route.example_request
        op["requestBody"] = {"required": bool(resolve(components, route.body).get("required")),
                             "content": {media: body}}
    elif route.example_request is not None:
        op["x-example-query"] = route.example_request
    return op


def _also(aliases: tuple[str, ...]) -> str:
    return ("Also served at " + ", ".join(f"`{a}`" for a in aliases) + ".") if aliases else ""


def _error_type(status: int) -> str:
    return {429: "requests"}.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _by_status(errors: Iterable[Error]) -> dict[int, list[Error]]:
    grouped: dict[int, list[Error]] = {}
    for error in sorted(errors, key=lambda e: e.status):
        grouped.setdefault(error.status, []).append(error)
    return grouped


def build_document(routes: tuple[Route, ...] = ROUTES, *, version: str = "0") -> dict[str, Any]:
    components = load_components()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "BluesMinds gateway API", "version": version,
                 "description": "The OpenAI-compatible API (/v1, also under /api/v1 and at the root) and the "
                                "management API (/api). Every error is OpenAI's shape "
                                "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}` (Anthropic's "
                                "routes use Anthropic's). Request bodies are checked against the schemas "
                                "under components; an unknown field is a 400 naming it."},
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in dict.fromkeys(route.family for route in routes)],
        "paths": paths,
        "components": {
            "schemas": {**components, "Error": ERROR_SCHEMA},
            "headers": {name: {"description": text, "schema": {"type": "string"}} for name, text in HEADERS.items()},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A `bm-…` API key, for /v1."},
                "adminKey": {"type": "http", "scheme": "bearer",
                             "description": "The admin key, from the variable `admin.key_env` names."},
                "sessionToken": {"type": "http", "scheme": "bearer",
                                 "description": "A `bms_…` token from POST /api/auth/login."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "bm_session",
                                  "description": "The dashboard's session; writes also need a same-origin "
                                                 "request with a JSON content type."},
            },
        },
    }


def encode(document: dict[str, Any]) -> tuple[bytes, str]:
    """The document's bytes and their ETag, computed once: the document only changes with the code."""
    body = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'

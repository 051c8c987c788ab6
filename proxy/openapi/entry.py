"""One route's description: the data the OpenAPI document and the reference page are built from.

An entry names its request schema (a file of `schemas/api/`, or a config
schema) instead of restating it, so the document shows exactly what the
route validates. Adding a route is one `Route(...)` in a table module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Who may call: the key of AUTH (document.py turns each into a security requirement).
AUTH = {
    "none": "No credentials.",
    "api_key": "A `bm-…` API key: `Authorization: Bearer bm-…` (Anthropic's routes also take `x-api-key`).",
    "user": "A session (`Authorization: Bearer bms_…` or the `bm_session` cookie) or the admin key.",
    "account": "A user's session (`Authorization: Bearer bms_…` or the `bm_session` cookie); "
               "the admin key has no account and gets 403 account_required.",
    "admin": "The admin key (`Authorization: Bearer <admin key>`) or the session of an account "
             "with the admin role.",
    "metrics": "Per `server.metrics.access`: `admin` (the default) needs admin credentials, "
               "`open` none, `listener` is served only on `server.metrics.listen`.",
    "browser": "The dashboard's `bm_session` cookie; without it the page redirects (303) to "
               "/dashboard/login.",
    "signature": "Creem's `creem-signature` header: HMAC-SHA256 of the body with the webhook secret.",
}


@dataclass(frozen=True, slots=True)
class Error:
    status: int
    code: str
    when: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    method: str
    path: str
    summary: str
    auth: str
    # A schema by name: "key_create" (schemas/api/key_create.json), "config.upstreams#/items"
    # (schemas/upstreams.schema.json), "v1.chat" (v1_schemas.py). None: no body.
    body: str | None = None
    query: str | None = None  # a schemas/api/ name whose properties are the query parameters
    query_params: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description), hand-parsed queries
    status: int = 200
    response: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    content_type: str = "application/json"
    errors: tuple[Error, ...] = ()
    example_request: Any = None  # the body, or for a GET the query parameters
    example_response: Any = None
    aliases: tuple[str, ...] = ()  # the same handler under other paths (/api/v1/…, /…)
    description: str = ""
    headers: tuple[str, ...] = ()  # response headers, keys of document.HEADERS
    family: str = ""  # the OpenAPI tag

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    """A response shape: the fields named, typed; the answer may carry more."""
    schema: dict[str, Any] = {"type": "object", "properties": {
        name: (kind if isinstance(kind, dict) else {"type": kind}) for name, kind in properties.items()}}
    if required:
        schema["required"] = list(required)
    return schema


def listing(item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return obj(("object", "data"), object={"const": "list"}, data={"type": "array", "items": item}, **extra)


NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}

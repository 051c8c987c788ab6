"""Management request bodies and queries, checked against `schemas/api/*.json`.

A wrong type, an unknown field or a missing one answers 400 naming the field
(`param` is its dotted path, such as `limits.rpm` or `models[0]`). Messages
describe what the schema expects and never quote the value sent, which may be
a password.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import orjson
import referencing
import referencing.jsonschema
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from . import bodies
from .appkeys import CONFIG
from .config.source import format_path
from .errors import InvalidRequest, UnknownParameter

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "api"
MAX_BODY_BYTES = 64 * 1024
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator for `schemas/api/<name>.json`; schemas may `$ref` each other by file name."""
    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        contents = orjson.loads(path.read_bytes())
        resources.append(
            (path.name, referencing.Resource.from_contents(
                contents, default_specification=referencing.jsonschema.DRAFT202012))
        )
    registry = referencing.Registry().with_resources(resources)
    schema = registry.contents(f"{name}.json")
    return Draft202012Validator(schema, registry=registry)


def validate(instance: Any, schema: str) -> Any:
    error = best_match(validator(schema).iter_errors(instance))
    if error is not None:
        raise _to_invalid_request(error)
    return instance


async def read_body(request: web.Request, schema: str) -> dict[str, Any]:
    """The JSON body, validated; an empty body counts as `{}`. Read by the one
    body reader (proxy/bodies.py), with this route family's smaller limit."""
    raw = await bodies.read_body(request, request.app[CONFIG].current.server, limit=MAX_BODY_BYTES)
    if not raw.strip():
        body: Any = {}
    else:
        require_json_content_type(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("The request body is not valid JSON.") from None
    return validate(body, schema)


def require_json_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise InvalidRequest(
            "Send the request body as JSON with 'Content-Type: application/json'.",
            code="unsupported_content_type",
        )


def read_query(request: web.Request, schema: str) -> dict[str, Any]:
    """Query parameters, typed by the schema (`?limit=5` is the integer 5), validated."""
    properties = validator(schema).schema.get("properties", {})
    query: dict[str, Any] = {}
    for name in request.query.keys():
        if name in query:
            continue
        values = request.query.getall(name)
        if len(values) > 1:
            raise InvalidRequest(f"Query parameter '{name}' is given more than once.", param=name)
        query[name] = _coerce(values[0], properties.get(name, {}))
    return validate(query, schema)


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "integer" in types and _INTEGER.match(value):
        return int(value)
    if "number" in types and _NUMBER.match(value):
        return float(value)
    if "boolean" in types and value in ("true", "false"):
        return value == "true"
    return value


def _field(path: Any, name: str | int | None = None) -> str:
    return format_path([*path, *(() if name is None else (name,))])


def _to_invalid_request(error: ValidationError) -> InvalidRequest:
    field = _field(error.absolute_path)
    keyword, expected, schema = error.validator, error.validator_value, error.schema
    if keyword == "required":
        missing = next(name for name in expected if name not in error.instance)
        name = _field(error.absolute_path, missing)
        return InvalidRequest(f"Missing required field '{name}'.", param=name)
    if keyword == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))[0]
        name = _field(error.absolute_path, extra)
        return UnknownParameter(
            f"Unknown field '{name}'; allowed fields here: {', '.join(allowed) or 'none'}.",
            param=name,
        )
    if not field:
        if keyword == "type":
            return InvalidRequest("The request body must be a JSON object.")
        if keyword == "minProperties":
            return InvalidRequest("Send at least one field to change.")
        return InvalidRequest("The request body is invalid.")
    described = {
        "type": lambda: f"must be {_types(expected)}",
        "enum": lambda: "must be one of: " + ", ".join(_json(v) for v in expected),
        "const": lambda: f"must be {_json(expected)}",
        "minLength": lambda: f"must be at least {expected} characters long",
        "maxLength": lambda: f"must be at most {expected} characters long",
        "minimum": lambda: f"must be at least {expected}",
        "maximum": lambda: f"must be at most {expected}",
        "exclusiveMinimum": lambda: f"must be greater than {expected}",
        "exclusiveMaximum": lambda: f"must be less than {expected}",
        "minItems": lambda: f"must list at least {expected} item{'s' * (expected != 1)}",
        "maxItems": lambda: f"must list at most {expected} items",
        "uniqueItems": lambda: "must not repeat an item",
        "pattern": lambda: "has the wrong format",
        "minProperties": lambda: "must not be empty",
    }.get(keyword, lambda: "is invalid")()
    hint = schema.get("description")
    message = f"Field '{field}' {described}" + (f" ({hint})." if hint else ".")
    return InvalidRequest(message, param=field)


def _types(expected: str | list[str]) -> str:
    names = {"integer": "an integer", "number": "a number", "string": "a string",
             "boolean": "true or false", "array": "an array", "object": "an object", "null": "null"}
    expected = [expected] if isinstance(expected, str) else expected
    return " or ".join(names.get(t, t) for t in expected)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()

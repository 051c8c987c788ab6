"""The JSON Schemas that validate requests, as OpenAPI components.

The files are read as they are; only their `$ref`s are rewritten to point
into `#/components/schemas`, so the document shows what the validator checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..validation import SCHEMA_DIR
from .v1_schemas import V1_SCHEMAS

CONFIG_DIR = SCHEMA_DIR.parent
CONFIG_SCHEMAS = ("upstreams",)  # the config sections a route takes a piece of
_DROP = ("$schema", "$id")


def _rewrite(node: Any, own: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            out[key] = _ref(value, own) if key == "$ref" else _rewrite(value, own)
        return out
    if isinstance(node, list):
        return [_rewrite(item, own) for item in node]
    return node


def _ref(ref: str, own: str) -> str:
    target, _, pointer = ref.partition("#")
    name = own if not target else _component_name(target.rsplit("/", 1)[-1])
    return f"#/components/schemas/{name}{pointer}"


def _component_name(file_name: str) -> str:
    if file_name.endswith(".schema.json"):
        return "config." + file_name[: -len(".schema.json")]
    return file_name.removesuffix(".json")


def load_components() -> dict[str, dict[str, Any]]:
    components: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        name = _component_name(path.name)
        components[name] = _rewrite(orjson.loads(path.read_bytes()), name)
    for section in CONFIG_SCHEMAS:
        name = f"config.{section}"
        components[name] = _rewrite(orjson.loads((CONFIG_DIR / f"{section}.schema.json").read_bytes()), name)
    # PATCH /api/admin/servers/{name}: any field of a server entry, null to remove it.
    fields = sorted(components["config.upstreams"]["items"]["properties"])
    components["config.upstream_change"] = {
        "title": "A change to one server: fields of an `upstreams` entry; null removes one",
        "type": "object", "minProperties": 1, "propertyNames": {"enum": fields}}
    for name, schema in V1_SCHEMAS.items():
        components[f"v1.{name}"] = schema
    return components


def ref_of(name: str) -> dict[str, str]:
    """`key_create` → its component; `config.upstreams#/items` → a part of one."""
    component, _, pointer = name.partition("#")
    return {"$ref": f"#/components/schemas/{component}{pointer}"}


def resolve(components: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema a name points at, for listing its fields."""
    component, _, pointer = name.partition("#")
    node: Any = components[component]
    for part in (p for p in pointer.split("/") if p):
        node = node[part]
    return node

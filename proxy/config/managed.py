"""The config file the gateway writes itself, and the server changes it records.

Servers added through the admin API live in the managed file
(`servers.managed.yaml` in a config directory, `<stem>.managed.yaml` beside a
single file) so they survive restarts and stay visible as config. Servers
declared in hand-written files are never rewritten: the only run-time change
they accept is drain/disable, recorded in the managed file's
`upstream_overrides` section, which the builder applies on top of them.

Each change edits a `ManagedDoc` in memory; the caller writes it with
`write_atomic` and reloads, restoring the previous bytes if the reload rejects
the result.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Conflict, InvalidRequest, NotFound
from . import schema
from .snapshot import Snapshot, UpstreamConfig
from .source import MAX_FILE_BYTES, ConfigProblem, check_shape, format_path
from .urls import BadURL, normalise_upstream_url

HEADER = (
    "# Written by the BluesMinds admin API (/api/admin/servers) on every change.\n"
    "# Servers declared here may be edited by hand; comments here are not kept.\n"
)

# Runtime switches a hand-written server accepts through the API.
OVERRIDE_FIELDS = ("drain", "enabled")


class ManagedFileInvalid(Conflict):
    """The managed file on disk cannot be parsed, so no change can be merged into it."""


@dataclass
class ManagedDoc:
    upstreams: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, dict[str, bool]] = field(default_factory=dict)
    # Sections someone added by hand; written back untouched.
    other: dict[str, Any] = field(default_factory=dict)

    def find(self, name: str) -> dict[str, Any] | None:
        return next((u for u in self.upstreams if u.get("name") == name), None)

    def to_yaml(self) -> bytes:
        data: dict[str, Any] = dict(self.other)
        if self.upstreams:
            data["upstreams"] = self.upstreams
        if self.overrides:
            data["upstream_overrides"] = self.overrides
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                              allow_unicode=True) if data else ""
        return (HEADER + body).encode("utf-8")


def read_managed(path: str) -> tuple[ManagedDoc, bytes | None]:
    """The managed document and the file's exact bytes (None when it does not exist yet)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return ManagedDoc(), None
    try:
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigProblem("too large", file=path)
        text = raw.decode("utf-8")
        # Hand edits are allowed here, so the same bounds as every config file.
        check_shape(text, path, yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except (UnicodeDecodeError, yaml.YAMLError, ConfigProblem):
        raise ManagedFileInvalid(
            f"The managed config file {path} cannot be parsed; fix or remove it, then retry.",
            code="managed_file_invalid") from None
    if not isinstance(data, dict) or not isinstance(data.get("upstreams", []), list) \
            or not isinstance(data.get("upstream_overrides", {}), dict):
        raise ManagedFileInvalid(
            f"The managed config file {path} does not have the expected sections; fix or remove it, then retry.",
            code="managed_file_invalid")
    upstreams = data.pop("upstreams", None) or []
    overrides = data.pop("upstream_overrides", None) or {}
    return ManagedDoc(upstreams=upstreams, overrides=overrides, other=data), raw


def write_atomic(path: str, content: bytes | None) -> None:
    """Replace `path` with `content` in one step (None removes it).

    A reader (the watcher's reload) sees the old file or the new one, never a
    half-written one. The temporary name starts with a dot so neither the
    config loader nor the watcher takes it for a config file.
    """
    if content is None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


# -- body validation ------------------------------------------------------------


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object describing the server.")
    return body


def check_server(spec: dict[str, Any]) -> None:
    """Raise InvalidRequest naming the first field of `spec` the upstreams schema rejects."""
    errors = schema.section_errors("upstreams", [spec])
    if errors:
        path, message, _ = errors[0]
        field_path = path[2:]  # drop ("upstreams", 0)
        param = format_path(field_path) if field_path else None
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param)
    try:
        normalise_upstream_url(spec["url"])
    except BadURL as exc:
        raise InvalidRequest(f"url: {exc}", param="url", code="invalid_url") from None


# -- changes ----------------------------------------------------------------------


def _ordered(spec: dict[str, Any]) -> dict[str, Any]:
    """Fields in the schema's order, so the file reads like hand-written config."""
    order = list(schema.validator("upstreams").schema["items"]["properties"])
    return dict(sorted(spec.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _hand_written(snapshot: Snapshot, doc: ManagedDoc, name: str) -> UpstreamConfig | None:
    upstream = snapshot.upstream_by_name.get(name)
    if upstream is None or doc.find(name) is not None:
        return None
    return upstream


# Environment variables a server added through the API may read its key from,
# besides those hand-written upstreams already use. Without a rule, an admin
# session could point a server at its own URL with `api_key_env` naming any
# variable (the admin key's, a database password) and receive it as a bearer.
UPSTREAM_KEY_PREFIX = "BLUESMINDS_UPSTREAM_"


def check_key_env(spec: dict[str, Any], snapshot: Snapshot) -> None:
    name = spec.get("api_key_env")
    if name is None:
        return
    declared = {u.api_key_env for u in snapshot.upstreams
                if u.api_key_env and u.source != snapshot.managed_file}
    if name == snapshot.admin.key_env or not (name in declared or name.startswith(UPSTREAM_KEY_PREFIX)):
        raise InvalidRequest(
            f"api_key_env: a server added through the API may only read its key from a variable a "
            f"hand-written upstream already uses, or one named {UPSTREAM_KEY_PREFIX}*.",
            param="api_key_env", code="api_key_env_not_allowed")


def add_server(doc: ManagedDoc, snapshot: Snapshot, body: Any) -> str:
    spec = require_object(body)
    check_server(spec)
    check_key_env(spec, snapshot)
    name = spec["name"]
    if name in snapshot.upstream_by_name or doc.find(name) is not None:
        upstream = snapshot.upstream_by_name.get(name)
        where = f" (declared in {upstream.source})" if upstream is not None and upstream.source else ""
        raise Conflict(f"A server named '{name}' already exists{where}; choose another name "
                       "or PATCH the existing one.", param="name", code="server_exists")
    doc.upstreams.append(_ordered(spec))
    return name


def update_server(doc: ManagedDoc, snapshot: Snapshot, name: str, body: Any) -> None:
    """Merge `body` into a managed server, or record drain/enabled for a hand-written one.

    A null value removes the field, so the server falls back to the default.
    """
    changes = require_object(body)
    if not changes:
        raise InvalidRequest("The request body names no field to change.")
    if "name" in changes and changes["name"] != name:
        raise InvalidRequest("A server cannot be renamed; add one under the new name and delete this one.",
                             param="name")
    managed = doc.find(name)
    if managed is not None:
        merged = dict(managed)
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        check_server(merged)
        check_key_env(merged, snapshot)
        doc.upstreams[doc.upstreams.index(managed)] = _ordered(merged)
        return
    upstream = _hand_written(snapshot, doc, name)
    if upstream is None:
        raise _unknown(name)
    others = [key for key in changes if key not in OVERRIDE_FIELDS and key != "name"]
    if others:
        raise Conflict(
            f"Server '{name}' is declared in {upstream.source}, which the gateway never rewrites; "
            f"change {', '.join(others)} there. Through this API it can only be drained or disabled "
            "(fields: drain, enabled).", param=others[0], code="server_in_hand_written_file")
    override = dict(doc.overrides.get(name, {}))
    for key in OVERRIDE_FIELDS:
        if key not in changes:
            continue
        value = changes[key]
        if value is None:
            override.pop(key, None)
        elif not isinstance(value, bool):
            raise InvalidRequest(f"{key}: {value!r} is not of type 'boolean'", param=key)
        else:
            override[key] = value
    if override:
        doc.overrides[name] = override
    else:
        doc.overrides.pop(name, None)


def remove_server(doc: ManagedDoc, snapshot: Snapshot, name: str) -> None:
    managed = doc.find(name)
    if managed is not None:
        doc.upstreams.remove(managed)
        doc.overrides.pop(name, None)
        return
    upstream = _hand_written(snapshot, doc, name)
    if upstream is None:
        raise _unknown(name)
    raise Conflict(
        f"Server '{name}' is declared in {upstream.source}, which the gateway never rewrites; "
        "remove it from that file, or drain or disable it here with PATCH.",
        code="server_in_hand_written_file")


def _unknown(name: str) -> NotFound:
    return NotFound(f"No server named '{name}'; GET /api/admin/servers lists them.", code="server_not_found")

"""/api/admin/config, /reload, /health and /servers: the running config as an operator sees it.

Server changes go through the same door as a file edit: they are written to
the managed config file and applied by a reload, so they persist, show up as
config, and are rejected by the same checks. A rejected change puts the
managed file back as it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any, AsyncIterator, Callable

import orjson
from aiohttp import web

from ..appkeys import CLOCK, CONFIG, HEALTH, TRANSPORT
from ..auth.management import reply, snapshot_of
from ..bodies import read_body
from ..config import managed
from ..config.holder import ConfigHolder
from ..config.snapshot import Snapshot, UpstreamConfig
from ..config.source import managed_file_for
from ..errors import ConfigRejected, InvalidRequest, NotFound, PreconditionFailed
from ..routing.regions import region_health
from ..scaleout import broadcast

log = logging.getLogger("bluesminds.admin")

MAX_BODY_BYTES = 64 * 1024
MAX_EVENTS = 100


# -- fleet events -----------------------------------------------------------------


class FleetEvents:
    """Recent joins, leaves and state changes of upstreams, newest last.

    Scaling shows up here: a reload that adds or removes servers or drains or
    disables one, and a server going down, being ejected or coming back.
    """

    def __init__(self, clock: Callable[[], float] = time.time, size: int = MAX_EVENTS) -> None:
        self._clock = clock
        self._events: deque[dict[str, Any]] = deque(maxlen=size)

    def record(self, kind: str, **fields: Any) -> None:
        self._events.append({"at": self._clock(), "event": kind, **fields})

    def on_reload(self, old: Snapshot, new: Snapshot, version: int) -> None:
        before, after = old.upstream_by_name, new.upstream_by_name
        joined = sorted(after.keys() - before.keys())
        left = sorted(before.keys() - after.keys())
        for name in joined:
            self.record("joined", upstream=name, url=after[name].url, config_version=version)
        for name in left:
            self.record("left", upstream=name, config_version=version)
        for name in sorted(before.keys() & after.keys()):
            was, now = before[name].admits_new_requests, after[name].admits_new_requests
            if was != now:
                kind = "admitting" if now else ("disabled" if not after[name].enabled else "draining")
                self.record(kind, upstream=name, config_version=version)
        if joined or left:
            # One line per scaling step; the health monitor logs each upstream on its own.
            serving = sum(1 for u in new.upstreams if u.admits_new_requests)
            log.info("fleet scaled: config_version=%d joined=%s left=%s upstreams=%d admitting=%d",
                     version, ",".join(joined) or "-", ",".join(left) or "-", len(new.upstreams), serving)

    def on_health(self, name: str, state: str) -> None:
        # The monitor has logged this already; here it only joins the history.
        self.record(state, upstream=name)

    def on_saturated(self, model: str) -> None:
        self.record("saturated", model=model)

    def recent(self) -> list[dict[str, Any]]:
        return list(self._events)


from ..appkeys import EVENTS  # noqa: E402  (every app key lives in appkeys)
# One server change at a time: each is read-modify-write of the managed file plus a reload.
from ..appkeys import SERVERS_LOCK  # noqa: E402  (every app key lives in appkeys)


def setup(app: web.Application) -> None:
    app[EVENTS] = FleetEvents(app.get(CLOCK, time.time))
    app[SERVERS_LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(_events_ctx)
    broadcast.setup(app, _apply_broadcast)
    app.router.add_get("/api/admin/config", get_config)
    app.router.add_post("/api/admin/reload", reload_config)
    app.router.add_get("/api/admin/health", get_health)
    app.router.add_post("/api/admin/health", check_health)
    app.router.add_get("/api/admin/servers", list_servers)
    app.router.add_post("/api/admin/servers", add_server)
    # Server names may contain '/', as upstream model names do.
    app.router.add_get("/api/admin/servers/{name:.+}", get_server)
    app.router.add_patch("/api/admin/servers/{name:.+}", update_server)
    app.router.add_delete("/api/admin/servers/{name:.+}", delete_server)


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    events, holder = app[EVENTS], app[CONFIG]
    holder.subscribe(lambda old, new: events.on_reload(old, new, holder.version))
    health = app.get(HEALTH)
    if health is not None:
        health.on_change.append(events.on_health)
        health.on_saturated.append(events.on_saturated)
    yield
    if health is not None:
        health.on_change.remove(events.on_health)
        health.on_saturated.remove(events.on_saturated)


# -- config -------------------------------------------------------------------------


def _etag(snapshot: Snapshot) -> str:
    return f'"{snapshot.digest}"'


async def get_config(request: web.Request) -> web.Response:
    holder: ConfigHolder = request.app[CONFIG]
    snapshot = holder.current
    status = holder.status()
    status["managed_file"] = managed_file_for(holder.path)
    status["upstreams"] = [{"name": u.name, "source": u.source} for u in snapshot.upstreams]
    status["models"] = sorted(snapshot.models)
    status["plans"] = sorted(snapshot.plans)
    # The digest names the config, not this status (last_error can change
    # under the same digest), so it serves If-Match on writes, not caching.
    response = reply(status)
    response.headers["ETag"] = _etag(snapshot)
    return response


async def reload_config(request: web.Request) -> web.Response:
    result = await request.app[CONFIG].reload(reason="admin api")
    if result.error:
        raise ConfigRejected("The reload", result)
    await broadcast.publish(request.app, {"action": "reload"})
    return reply({"changed": result.changed, "version": result.version, "digest": result.digest})


# -- health -------------------------------------------------------------------------


def _health_view(app: web.Application, snapshot: Snapshot) -> dict[str, Any]:
    rows = app[HEALTH].summary(snapshot)
    for row in rows:
        cap = row["max_concurrent"]
        row["saturated"] = cap is not None and row["in_flight"] >= cap
    return {"object": "list", "data": rows, "events": app[EVENTS].recent(),
            "config_version": app[CONFIG].version, "regions": region_health(snapshot, rows)}


async def get_health(request: web.Request) -> web.Response:
    return reply(_health_view(request.app, snapshot_of(request)))


async def check_health(request: web.Request) -> web.Response:
    snapshot = snapshot_of(request)
    await request.app[HEALTH].probe_all(snapshot, request.app[TRANSPORT])
    return reply(_health_view(request.app, snapshot))


# -- servers ------------------------------------------------------------------------


def _server_view(app: web.Application, snapshot: Snapshot, upstream: UpstreamConfig) -> dict[str, Any]:
    state = next((row for row in app[HEALTH].summary(snapshot) if row["name"] == upstream.name), None)
    t = upstream.timeouts
    return {
        "object": "server", "name": upstream.name, "url": upstream.url,
        "weight": upstream.weight, "priority": upstream.priority, "models": list(upstream.models),
        "region": upstream.region, "max_concurrent": upstream.max_concurrent,
        "timeouts": {"connect": t.connect, "first_byte": t.first_byte, "total": t.total},
        "api_key_env": upstream.api_key_env, "enabled": upstream.enabled, "drain": upstream.drain,
        "source": upstream.source,
        "managed": bool(snapshot.managed_file) and
        os.path.abspath(upstream.source) == os.path.abspath(snapshot.managed_file),
        "state": state["state"] if state else None,
    }


def _find(snapshot: Snapshot, name: str) -> UpstreamConfig:
    upstream = snapshot.upstream_by_name.get(name)
    if upstream is None:
        raise NotFound(f"No server named '{name}'; GET /api/admin/servers lists them.",
                       code="server_not_found")
    return upstream


async def list_servers(request: web.Request) -> web.Response:
    snapshot = snapshot_of(request)
    response = reply({"object": "list",
                      "data": [_server_view(request.app, snapshot, u) for u in snapshot.upstreams],
                      "config_version": request.app[CONFIG].version})
    response.headers["ETag"] = _etag(snapshot)
    return response


async def get_server(request: web.Request) -> web.Response:
    snapshot = snapshot_of(request)
    return reply(_server_view(request.app, snapshot, _find(snapshot, request.match_info["name"])))


async def add_server(request: web.Request) -> web.Response:
    body = await _json_body(request)
    name = await _change(request, "Adding the server", lambda doc, snap: managed.add_server(doc, snap, body))
    return _after_change(request, name, status=201)


async def update_server(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await _json_body(request)
    await _change(request, "The server change", lambda doc, snap: managed.update_server(doc, snap, name, body))
    change = broadcast.server_change(body)
    if change:
        await broadcast.publish(request.app, {"action": "server", "name": name, "change": change})
    return _after_change(request, name)


async def delete_server(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _change(request, "Removing the server", lambda doc, snap: managed.remove_server(doc, snap, name))
    return reply({"object": "server", "name": name, "deleted": True,
                  "config_version": request.app[CONFIG].version})


def _after_change(request: web.Request, name: str, *, status: int = 200) -> web.Response:
    snapshot = request.app[CONFIG].current  # the snapshot the change produced
    response = reply(_server_view(request.app, snapshot, _find(snapshot, name)), status=status)
    response.headers["ETag"] = _etag(snapshot)
    return response


async def _apply_broadcast(app: web.Application, message: dict[str, Any]) -> None:
    """Another gateway's admin action, carried out on this gateway's own files."""
    if message["action"] == "reload":
        result = await app[CONFIG].reload(reason="admin broadcast")
        if result.error:
            raise ConfigRejected("The broadcast reload", result)
        return
    name, change = message["name"], message["change"]
    await apply_edit(app, "The broadcast server change",
                     lambda doc, snap: managed.update_server(doc, snap, name, change), reason="admin broadcast")


async def _change(request: web.Request, action: str,
                  edit: Callable[[managed.ManagedDoc, Snapshot], Any]) -> Any:
    """Edit the managed file and reload; on a rejected reload put the file back.

    Honours If-Match against the config digest, so two operators editing from
    the same listing cannot silently overwrite each other.
    """
    return await apply_edit(request.app, action, edit, expected=request.headers.get("If-Match"),
                            what=f"{request.method} {request.path}")


async def apply_edit(app: web.Application, action: str,
                     edit: Callable[[managed.ManagedDoc, Snapshot], Any], *,
                     expected: str | None = None, reason: str = "admin api", what: str = "") -> Any:
    holder: ConfigHolder = app[CONFIG]
    path = managed_file_for(holder.path)
    loop = asyncio.get_running_loop()

    async def apply() -> Any:
        async with app[SERVERS_LOCK]:
            snapshot = holder.current
            if expected is not None and expected.strip() not in ("*", _etag(snapshot)):
                raise PreconditionFailed(
                    f"The config changed since you read it (now {_etag(snapshot)}); "
                    "GET it again and retry.")
            doc, previous = await loop.run_in_executor(None, managed.read_managed, path)
            outcome = edit(doc, snapshot)
            content = doc.to_yaml()
            if content == previous or (previous is None and content == managed.ManagedDoc().to_yaml()):
                return outcome  # nothing to change, so no new version
            await loop.run_in_executor(None, managed.write_atomic, path, content)
            result = await holder.reload(reason=reason)
            if result.error:
                await loop.run_in_executor(None, managed.write_atomic, path, previous)
                # The files on disk are the last good ones again; the status says so.
                await holder.reload(reason=f"{reason} rollback")
                raise ConfigRejected(action, result)
            log.info("admin change applied: %s, config version %d", what or action, result.version)
            return outcome

    # A client that hangs up mid-change must not leave the file written but
    # not applied, or rejected but not restored.
    return await asyncio.shield(loop.create_task(apply()))


async def _json_body(request: web.Request) -> Any:
    raw = await read_body(request, snapshot_of(request).server, limit=MAX_BODY_BYTES)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON; send a JSON object.") from None

"""GET /api/usage/stats, GET /api/usage/logs, GET /api/usage/logs/{id} and
POST /api/usage/logs/{id}/replay.

A user sees only their own usage; an admin sees everyone's, or one user's with
`user_id`. Every query parameter is checked, and a bad or unknown one is a 400
naming it. Times (`from`, `to`) are an ISO date (`2026-11-26`), an ISO date-time
(`2026-11-26T10:00:00Z`, UTC when no offset is given) or unix seconds; a date
as `to` includes that whole day.

One log row (`/api/usage/logs/{id}`) is its owner's and the admins': anyone
else gets 404, the same answer as for an id that does not exist, so ids of
other accounts cannot be probed. Its `capture` is the redacted bodies, or null
when the request was not captured (or the capture has expired); replaying a row
without one answers 409 `not_captured`.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web

from ..appkeys import CLOCK, STORE
from ..auth.management import require_user
from ..capture.reads import capture_of, usage_row
from ..capture.replay import replay
from ..errors import Conflict, InvalidRequest, NotFound, PermissionDenied, UnknownParameter
from ..validation import read_body
from ..usage.stats import GROUPS, LogsQuery, StatsQuery, logs, stats

DEFAULT_DAYS = 30
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_DAY = 86400.0
_EPOCH = 0.0
_YEAR_10000 = 253402300800.0 - 2 * _DAY  # room for the day added to a `to` date
MAX_ID = 2**63 - 1  # SQLite's INTEGER; a larger id cannot exist and cannot be bound as a parameter

_STATS_PARAMS = frozenset({"from", "to", "group_by", "user_id", "key_id"})
_LOGS_PARAMS = frozenset({"from", "to", "user_id", "model", "key_id", "status", "limit", "cursor"})
_STATUS_CLASSES = {"2xx": (200, 299), "3xx": (300, 399), "4xx": (400, 499), "5xx": (500, 599),
                   "error": (400, 599)}


async def usage_stats(request: web.Request) -> web.Response:
    caller = await require_user(request)
    query = stats_query(request, caller)
    result = await stats(request.app[STORE], query)
    return _json({
        "object": "usage.stats",
        "group_by": query.group_by,
        "from": query.first_day,
        "to": query.last_day,
        "user_id": query.user_id,
        "key_id": query.key_id,
        **result,
    })


def stats_query(request: web.Request, caller) -> StatsQuery:
    """The validated stats query of `request`, limited to what `caller` may see.

    The dashboard's pages and exports read through this too, so they accept
    and refuse exactly what the API does."""
    params = _params(request, _STATS_PARAMS)
    _, user_id = _visible(caller, params)
    today = _utc_date(_now(request))
    last = _day_param(params, "to") or today
    first = _day_param(params, "from") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidRequest(f"'from' ({first}) is after 'to' ({last}); swap them.", param="from")
    group_by = params.get("group_by", "day")
    if group_by not in GROUPS:
        raise InvalidRequest(
            f"group_by={group_by!r} is not supported; use one of: {', '.join(GROUPS)}.",
            param="group_by",
        )
    return StatsQuery(first.isoformat(), last.isoformat(), group_by, user_id,
                      key_id=_int_param(params, "key_id", minimum=1, maximum=MAX_ID))


async def usage_logs(request: web.Request) -> web.Response:
    caller = await require_user(request)
    query = logs_query(request, caller)
    rows, has_more = await logs(request.app[STORE], query)
    data = [_log_entry(row, show_upstream=caller.is_admin) for row in rows]
    last = rows[-1] if rows else None
    return _json({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": _encode_cursor(last["ts"], last["id"]) if has_more and last else None,
    })


def logs_query(request: web.Request, caller) -> LogsQuery:
    """The validated logs query of `request`, limited to what `caller` may see."""
    params = _params(request, _LOGS_PARAMS)
    _, user_id = _visible(caller, params)
    status_min = status_max = None
    if "status" in params:
        status_min, status_max = _status(params["status"])
    since = until = None
    if "from" in params:
        since, _ = _time_param(params, "from")
    if "to" in params:
        moment, whole_day = _time_param(params, "to")
        # A date means "through the end of that day"; an instant is included itself.
        until = moment + _DAY if whole_day else math.nextafter(moment, math.inf)
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("'from' is not before 'to'; swap them.", param="from")
    model = params.get("model")
    if model is not None and not (0 < len(model) <= 256):
        raise InvalidRequest("model must be a model name of 1 to 256 characters.", param="model")
    return LogsQuery(
        user_id=user_id,
        key_id=_int_param(params, "key_id", minimum=1, maximum=MAX_ID),
        model=model,
        status_min=status_min,
        status_max=status_max,
        since=since,
        until=until,
        before=_cursor(params["cursor"]) if "cursor" in params else None,
        limit=_int_param(params, "limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT,
    )


async def usage_log(request: web.Request) -> web.Response:
    caller = await require_user(request)
    _params(request, frozenset())
    row, capture = await _visible_log(request, caller)
    return _json({**_log_entry(row, show_upstream=caller.is_admin), "object": "usage.log",
                  "replay_of": row["replay_of"], "capture": capture})


async def replay_log(request: web.Request) -> web.Response:
    caller = await require_user(request)
    await read_body(request, "usage_log_replay")
    row, capture = await _visible_log(request, caller)
    if capture is None:
        raise Conflict(f"Usage log {row['id']} has no captured request to replay; capture is opt-in per "
                       "plan (capture.plans) or per key (\"capture\": true), and expires after "
                       "capture.retention_days.", code="not_captured")
    return await replay(request, row, capture)


async def _visible_log(request: web.Request, caller) -> tuple[dict[str, Any], dict[str, Any] | None]:
    raw = request.match_info["id"]
    usage_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else 0
    not_found = NotFound(f"No usage log with id {raw!r}.", code="usage_log_not_found")
    if not 1 <= usage_id <= MAX_ID:
        raise not_found
    row, capture = await request.app[STORE].read(
        lambda conn: (usage_row(conn, usage_id), capture_of(conn, usage_id)))
    # Another account's row answers as a missing one: 404, never 403.
    if row is None or (not caller.is_admin and row["user_id"] != caller.user_id):
        raise not_found
    return row, capture


def log_entry(row: dict[str, Any], *, show_upstream: bool) -> dict[str, Any]:
    return _log_entry(row, show_upstream=show_upstream)


def encode_cursor(ts: float, row_id: int) -> str:
    return _encode_cursor(ts, row_id)


# -- who may see what ------------------------------------------------------------


def _visible(caller, params: dict[str, str]) -> tuple[bool, int | None]:
    """(is admin, the user whose usage to show, None meaning everyone)."""
    wanted = _int_param(params, "user_id", minimum=1, maximum=MAX_ID)
    if caller.is_admin:
        return True, wanted
    if wanted is not None and wanted != caller.user_id:
        raise PermissionDenied("Only an administrator can see another user's usage; "
                               "leave out user_id to see your own.", param="user_id")
    return False, caller.user_id


# -- parameter parsing -----------------------------------------------------------


def _params(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name in request.query.keys():
        if name not in allowed:
            raise UnknownParameter(
                f"Unknown query parameter '{name}'; this route accepts: {', '.join(sorted(allowed))}.",
                param=name,
            )
        values = request.query.getall(name)
        if len(values) > 1:
            raise InvalidRequest(f"Query parameter '{name}' is given {len(values)} times; give it once.",
                                 param=name)
        params[name] = values[0]
    return params


def _int_param(params: dict[str, str], name: str, *, minimum: int,
               maximum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidRequest(f"{name}={raw!r} is not valid; give a whole number {bound}.", param=name)
    return value


def _time_param(params: dict[str, str], name: str) -> tuple[float, bool]:
    """(unix seconds, whether a bare date was given)."""
    raw = params[name].strip()
    try:
        number = float(raw)
    except ValueError:
        number = None
    whole_day = False
    if number is None:
        try:
            if len(raw) == 10:
                moment = datetime.combine(date.fromisoformat(raw), datetime.min.time())
                whole_day = True
            else:
                moment = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidRequest(
                f"{name}={raw!r} is not a time; give a date (2026-11-26), an ISO date-time "
                "(2026-11-26T10:00:00Z) or unix seconds.",
                param=name,
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        number = moment.timestamp()
    if not (math.isfinite(number) and _EPOCH <= number < _YEAR_10000):
        raise InvalidRequest(f"{name}={raw!r} is out of range; give a time after 1970-01-01.",
                             param=name)
    return number, whole_day


def _day_param(params: dict[str, str], name: str) -> date | None:
    if name not in params:
        return None
    moment, _ = _time_param(params, name)
    return _utc_date(moment)


def _status(raw: str) -> tuple[int, int]:
    if raw in _STATUS_CLASSES:
        return _STATUS_CLASSES[raw]
    if raw.isascii() and raw.isdigit() and 100 <= int(raw) <= 599:
        return int(raw), int(raw)
    raise InvalidRequest(
        f"status={raw!r} is not valid; give an HTTP status (429), a class (2xx, 4xx, 5xx) or 'error'.",
        param="status",
    )


def _cursor(raw: str) -> tuple[float, int]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        ts, row_id = text.split(":")
        cursor = (float(ts), int(row_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("cursor is not one this API gave out; pass next_cursor from the "
                             "previous page unchanged.", param="cursor") from None
    if not (math.isfinite(cursor[0]) and 0 <= cursor[1] <= MAX_ID):
        raise InvalidRequest("cursor is not one this API gave out; pass next_cursor from the "
                             "previous page unchanged.", param="cursor")
    return cursor


def _encode_cursor(ts: float, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts!r}:{row_id}".encode()).decode().rstrip("=")


# -- output -----------------------------------------------------------------------


def _log_entry(row: dict[str, Any], *, show_upstream: bool) -> dict[str, Any]:
    entry = {
        "id": row["id"],
        "ts": row["ts"],
        "time": datetime.fromtimestamp(row["ts"], timezone.utc).isoformat(timespec="milliseconds"),
        "request_id": row["request_id"],
        "user_id": row["user_id"],
        "key_id": row["key_id"],
        "route": row["route"],
        "model": row["served_model"],
        "requested_model": row["requested_model"],
        "status": row["status"],
        "error_type": row["error_type"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["total_tokens"],
        "cached_tokens": row["cached_tokens"],
        "estimated": row["estimated"],
        "partial": row["partial"],
        "stream": row["stream"],
        "cost_usd": row["cost_usd"],
        "latency_ms": row["latency_ms"],
        "ttfb_ms": row["ttfb_ms"],
    }
    if show_upstream:
        # Which server answered is the operator's business, not the tenant's.
        entry["upstream"] = row["upstream"]
    return entry


def _json(value: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


def _now(request: web.Request) -> float:
    return request.app.get(CLOCK, time.time)()


def _utc_date(ts: float) -> date:
    return datetime.fromtimestamp(ts, timezone.utc).date()


def setup(app: web.Application) -> None:
    app.router.add_get("/api/usage/stats", usage_stats)
    app.router.add_get("/api/usage/logs", usage_logs)
    app.router.add_get("/api/usage/logs/{id}", usage_log)
    app.router.add_post("/api/usage/logs/{id}/replay", replay_log)

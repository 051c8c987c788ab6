"""Read-side queries: aggregated stats from the rollups, log pages from raw rows.

Stats never touch the raw table: one user's range of days costs a SUM over
their days × keys × models rollup rows; everyone's reads a coarser rollup,
day × model or day × user × key. Logs page newest first with a keyset cursor (ts, id) that
the (user_id, ts), (key_id, ts) and (ts) indexes serve in order, so page N
costs the same as page 1.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ..billing.money import NANO
from ..store import Database
from .rollup import estimate_percentile
from .schema import BUCKET_COLUMNS

GROUPS = {"day": "day", "model": "model", "key": "key_id", "user": "user_id"}

_STAT_SUMS = (
    "SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), "
    "SUM(total_tokens), SUM(cost_nano), SUM(latency_ms_sum), MAX(latency_ms_max), "
    + ", ".join(f"SUM({c})" for c in BUCKET_COLUMNS)
    + ", SUM(cached_tokens), SUM(reasoning_tokens)"
)


@dataclass(frozen=True, slots=True)
class StatsQuery:
    first_day: str  # "YYYY-MM-DD", inclusive
    last_day: str  # inclusive
    group_by: str  # a key of GROUPS
    user_id: int | None = None  # None: every user
    key_id: int | None = None  # None: every key


@dataclass(frozen=True, slots=True)
class LogsQuery:
    user_id: int | None = None
    key_id: int | None = None
    model: str | None = None  # matches the requested or the served model
    status_min: int | None = None  # inclusive range; equal bounds for one code
    status_max: int | None = None
    since: float | None = None  # ts >= since
    until: float | None = None  # ts < until
    before: tuple[float, int] | None = None  # cursor: rows strictly older than (ts, id)
    limit: int = 50


def usage_stats(conn: sqlite3.Connection, q: StatsQuery) -> dict[str, Any]:
    column = GROUPS[q.group_by]
    where = "day >= ? AND day <= ?"
    args: list[Any] = [q.first_day, q.last_day]
    if q.user_id is not None:
        table = "usage_daily"  # through its (user_id, day) index
        where += " AND user_id = ?"
        args.append(q.user_id)
    elif q.key_id is not None:
        # Only the finest rollup has both the key and the model.
        table = "usage_daily" if q.group_by == "model" else "usage_daily_key"
    elif q.group_by in ("day", "model"):
        table = "usage_daily_model"
    else:
        table = "usage_daily_key"
    if q.key_id is not None:
        where += " AND key_id = ?"
        args.append(q.key_id)
    sql = (f"SELECT {column}, {_STAT_SUMS} FROM {table} WHERE {where} "
           f"GROUP BY {column} ORDER BY {column}")
    name = "key_id" if q.group_by == "key" else column
    data = []
    total = [0] * (len(BUCKET_COLUMNS) + 10)
    for row in conn.execute(sql, args):
        group, sums = row[0], row[1:]
        if q.group_by == "key" and group == 0:
            group = None  # rows made without a key: dashboard sessions, the admin key
        data.append({name: group, **_summary(sums)})
        for i, value in enumerate(sums):
            total[i] = max(total[i], value) if i == 7 else total[i] + value
    return {"data": data, "total": _summary(total)}


async def stats(db: Database, q: StatsQuery) -> dict[str, Any]:
    return await db.read(lambda conn: usage_stats(conn, q))


def _summary(sums: tuple | list) -> dict[str, Any]:
    requests, errors, prompt, completion, tokens, cost, latency_sum, latency_max = sums[:8]
    buckets = len(BUCKET_COLUMNS)
    cached, reasoning = sums[8 + buckets:10 + buckets]
    return {
        "requests": requests,
        "errors": errors,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": tokens,
        # A JSON number as before, now derived from the exact integer sum.
        "cost_usd": (cost or 0) / NANO,
        "cost_nano": cost or 0,
        "latency_ms_mean": latency_sum / requests if requests else None,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "latency_ms_p95": estimate_percentile(0.95, requests, sums[8:8 + buckets], latency_max),
        "latency_ms_max": latency_max if requests else None,
    }


_LOG_COLUMNS = (
    "id, ts, request_id, user_id, key_id, route, requested_model, served_model, upstream, "
    "status, error_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens, "
    "estimated, partial, cost_nano, cost_nano / 1e9 AS cost_usd, latency_ms, ttfb_ms, stream"
)
LOG_COLUMNS: frozenset[str] = frozenset(name.strip() for name in _LOG_COLUMNS.split(","))


def usage_logs(conn: sqlite3.Connection, q: LogsQuery) -> tuple[list[dict[str, Any]], bool]:
    """One page, newest first, and whether an older page exists."""
    sql, args = logs_sql(q)
    cursor = conn.execute(sql, args)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row)) for row in cursor]
    for row in rows:
        for flag in ("estimated", "partial", "stream"):
            row[flag] = bool(row[flag])
    return rows[: q.limit], len(rows) > q.limit


async def logs(db: Database, q: LogsQuery) -> tuple[list[dict[str, Any]], bool]:
    return await db.read(lambda conn: usage_logs(conn, q))


def logs_sql(q: LogsQuery, *, columns: Iterable[str] | None = None) -> tuple[str, list[Any]]:
    """The page query; one row more than the page, to tell whether another follows.
    `columns` (names from LOG_COLUMNS) selects fewer columns, in that order."""
    where: list[str] = []
    args: list[Any] = []
    if q.user_id is not None:
        where.append("user_id = ?")
        args.append(q.user_id)
    if q.key_id is not None:
        where.append("key_id = ?")
        args.append(q.key_id)
    if q.model is not None:
        where.append("(served_model = ? OR requested_model = ?)")
        args += [q.model, q.model]
    if q.status_min is not None:
        where.append("status >= ?")
        args.append(q.status_min)
        if q.status_min >= 400:
            # Spelled out, not bound: SQLite picks a partial index only for a
            # query whose WHERE contains the index's own condition.
            where.append("status >= 400")
    if q.status_max is not None:
        where.append("status <= ?")
        args.append(q.status_max)
    if q.since is not None:
        where.append("ts >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("ts < ?")
        args.append(q.until)
    if q.before is not None:
        where.append("(ts, id) < (?, ?)")
        args += list(q.before)
    selected = _LOG_COLUMNS
    if columns is not None:
        columns = list(columns)
        unknown = set(columns) - LOG_COLUMNS
        if unknown:
            raise ValueError(f"not usage log columns: {sorted(unknown)}")
        selected = ", ".join(columns)
    sql = f"SELECT {selected} FROM usage"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ts DESC, id DESC LIMIT ?"
    args.append(q.limit + 1)
    return sql, args


async def key_stats(db: Database, user_id: int | None, key_ids: Iterable[int], *,
                    now: float | None = None) -> dict[int, dict[str, Any]]:
    """Per key of `user_id`: all-time and last-30-days requests, tokens and cost, and last use.

    Shape per key: {"requests", "tokens", "cost", "last_30d": {"requests",
    "tokens", "cost"}, "last_used": unix seconds | None}; keys without usage
    (or not owned by `user_id`) get zeros. `user_id=None` (an admin listing
    everyone's keys) counts each key's usage whoever owns it.
    """
    ids = sorted({int(k) for k in key_ids})
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, timezone.utc).date()
    since = (today - timedelta(days=29)).isoformat()
    return await db.read(lambda conn: _key_stats(conn, user_id, ids, since))


def _key_stats(conn: sqlite3.Connection, user_id: int | None, ids: list[int],
               since: str) -> dict[int, dict[str, Any]]:
    result = {k: _empty_key_stats() for k in ids}
    if not ids:
        return result
    marks = ", ".join("?" for _ in ids)
    # None is every owner: leave the column out, since `user_id = NULL` matches no row.
    owner = "" if user_id is None else "user_id = ? AND "
    owner_args = [] if user_id is None else [user_id]
    sql = f"""
        SELECT key_id, SUM(requests), SUM(total_tokens), SUM(cost_nano) / 1e9,
               SUM(CASE WHEN day >= ? THEN requests ELSE 0 END),
               SUM(CASE WHEN day >= ? THEN total_tokens ELSE 0 END),
               SUM(CASE WHEN day >= ? THEN cost_nano ELSE 0 END) / 1e9
        FROM usage_daily WHERE {owner}key_id IN ({marks})
        GROUP BY key_id
    """
    for key_id, req, tok, cost, req30, tok30, cost30 in conn.execute(
            sql, [since] * 3 + owner_args + ids):
        entry = result[key_id]
        entry.update(requests=req, tokens=tok, cost=cost)
        entry["last_30d"] = {"requests": req30, "tokens": tok30, "cost": cost30}
    # One statement for every key's last use, not one per key: each subquery walks
    # the (key_id, ts) index backwards, and the first row of a key is its owner's.
    # UNION ALL of one-row SELECTs rather than json_each(?), which PostgreSQL lacks for arrays.
    last_used = " UNION ALL ".join(
        f"SELECT ?, (SELECT ts FROM usage WHERE {owner}key_id = ? ORDER BY ts DESC LIMIT 1)" for _ in ids)
    args = [arg for key_id in ids for arg in (key_id, *owner_args, key_id)]
    for key_id, last in conn.execute(last_used, args):
        result[key_id]["last_used"] = last
    return result


def _empty_key_stats() -> dict[str, Any]:
    return {"requests": 0, "tokens": 0, "cost": 0.0,
            "last_30d": {"requests": 0, "tokens": 0, "cost": 0.0}, "last_used": None}


def period_summary(conn: sqlite3.Connection, day: str) -> list[dict[str, Any]]:
    """Per user and model: requests, tokens and cost of `day` and of its month up to that day."""
    sql = """
        SELECT user_id, model,
               SUM(CASE WHEN day = :day THEN requests ELSE 0 END),
               SUM(CASE WHEN day = :day THEN total_tokens ELSE 0 END),
               SUM(CASE WHEN day = :day THEN cost_nano ELSE 0 END) / 1e9,
               SUM(requests), SUM(total_tokens), SUM(cost_nano) / 1e9
        FROM usage_daily WHERE day >= :first AND day <= :day
        GROUP BY user_id, model ORDER BY user_id, model
    """
    names = ("user_id", "model", "requests_day", "tokens_day", "cost_day",
             "requests_month", "tokens_month", "cost_month")
    return [dict(zip(names, row)) for row in conn.execute(sql, {"day": day, "first": day[:7] + "-01"})]

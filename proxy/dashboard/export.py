"""Export CSV: the rows of the logs and usage tables, with the page's filters.

The logs export walks the same keyset pages the API serves, a bounded page at a
time, and builds each page's CSV text in the database reader thread, so a
million rows stream at flat memory and never hold the event loop for long.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import datetime, timezone
from typing import Iterable

from aiohttp import web
from yarl import URL

from ..appkeys import STORE
from ..auth.management import Caller, now_of
from ..routes import keys_routes, usage_routes
from ..usage.stats import LogsQuery, logs_sql
from . import api
from .columns import LOG_HEADERS, STAT_HEADERS, LogCells, safe, stat_cells
from .pages import LOG_FILTERS, STAT_FILTERS, by_day
from .render import page, secure

PAGE_ROWS = 5000
# The keyset (id, ts), then LogCells' arguments in order.
_COLUMNS = ("id", "ts", "ts", "request_id", "served_model", "key_id", "status", "prompt_tokens",
            "completion_tokens", "total_tokens", "cost_nano", "latency_ms")


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard/logs/export.csv", page(export_logs))
    app.router.add_get("/dashboard/usage/export.csv", page(export_usage))


def csv_text(rows: Iterable[Iterable[str]], *, escaped: bool = False) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows if escaped else ([safe(cell) for cell in row] for row in rows))
    return out.getvalue()


def logs_page_csv(conn, query: LogsQuery, cells: LogCells) -> tuple[bytes, tuple[float, int] | None]:
    """One keyset page of the logs as CSV text, and the cursor of the next page (None: the last)."""
    sql, args = logs_sql(query, columns=_COLUMNS)
    rows = conn.execute(sql, args).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    text = csv_text((cells(*row[2:]) for row in rows), escaped=True)
    return text.encode("utf-8"), (rows[-1][1], rows[-1][0]) if more else None


def _attachment(request: web.Request, name: str) -> web.StreamResponse:
    stamp = datetime.fromtimestamp(now_of(request), timezone.utc).strftime("%Y%m%d-%H%M%S")
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="bluesminds-{name}-{stamp}.csv"',
        "Cache-Control": "no-store",
    })
    return secure(response)


async def export_logs(request: web.Request, caller: Caller) -> web.StreamResponse:
    filters = {k: v for k, v in api.clean(request.query, LOG_FILTERS).items()
               if k not in ("cursor", "limit")}
    # Parsed and authorized by the API's own code, exactly as GET /api/usage/logs does.
    sub = request.clone(method="GET", rel_url=URL("/api/usage/logs").with_query(filters))
    query = dataclasses.replace(usage_routes.logs_query(sub, caller), limit=PAGE_ROWS)
    keys = (await api.get(request, keys_routes.list_route, "/api/keys"))["data"]
    names = {key["id"]: key["name"] for key in keys}
    response = _attachment(request, "logs")
    await response.prepare(request)
    await response.write(csv_text([LOG_HEADERS]).encode("utf-8"))
    db = request.app[STORE]
    cells = LogCells(names)
    while True:
        chunk, cursor = await db.read(lambda conn, q=query: logs_page_csv(conn, q, cells))
        await response.write(chunk)
        if cursor is None:
            break
        query = dataclasses.replace(query, before=cursor)
    await response.write_eof()
    return response


async def export_usage(request: web.Request, caller: Caller) -> web.StreamResponse:
    filters = api.clean(request.query, STAT_FILTERS)
    found = await api.get(request, usage_routes.usage_stats, "/api/usage/stats",
                          {**filters, "group_by": "day"})
    rows: list[list[str]] = [["Day", *STAT_HEADERS]]
    rows += [[row["day"], *stat_cells(row)] for row in by_day(found["data"], found["from"], found["to"])]
    rows.append(["Total", *stat_cells(found["total"])])
    response = _attachment(request, "usage")
    await response.prepare(request)
    await response.write(csv_text(rows).encode("utf-8"))
    await response.write_eof()
    return response


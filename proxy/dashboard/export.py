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
from typing import Iterable, Mapping

from aiohttp import web
from yarl import URL

from ..appkeys import STORE
from ..auth.management import Caller, now_of
from ..routes import keys_routes, usage_routes
from ..usage.stats import LogsQuery, usage_logs
from . import api
from .columns import LOG_HEADERS, STAT_HEADERS, log_cells, stat_cells
from .pages import LOG_FILTERS, STAT_FILTERS, _by_day
from .render import page, secure

PAGE_ROWS = 5000
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard/logs/export.csv", page(export_logs))
    app.router.add_get("/dashboard/usage/export.csv", page(export_usage))


def safe(cell: str) -> str:
    """A spreadsheet runs a cell starting with = + - @ as a formula; a leading ' keeps it text."""
    return "'" + cell if cell.startswith(_FORMULA) else cell


def csv_text(rows: Iterable[Iterable[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([safe(cell) for cell in row] for row in rows)
    return out.getvalue()


def logs_page_csv(conn, query: LogsQuery, names: Mapping[int, str],
                  show_upstream: bool) -> tuple[bytes, tuple[float, int] | None]:
    rows, has_more = usage_logs(conn, query)
    entries = [usage_routes.log_entry(row, show_upstream=show_upstream) for row in rows]
    text = csv_text(log_cells(entry, names) for entry in entries)
    last = rows[-1] if rows and has_more else None
    return text.encode("utf-8"), None if last is None else (last["ts"], last["id"])


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
    while True:
        chunk, cursor = await db.read(
            lambda conn, q=query: logs_page_csv(conn, q, names, caller.is_admin))
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
    rows += [[row["day"], *stat_cells(row)] for row in _by_day(found["data"], found["from"], found["to"])]
    rows.append(["Total", *stat_cells(found["total"])])
    response = _attachment(request, "usage")
    await response.prepare(request)
    await response.write(csv_text(rows).encode("utf-8"))
    await response.write_eof()
    return response


def parse(text: str) -> list[list[str]]:
    """The cells of an exported file, for tests and scripts that read it back."""
    return list(csv.reader(io.StringIO(text)))


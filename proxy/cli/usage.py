"""`bluesminds usage`: requests, tokens and cost per user and model, today and this month (UTC)."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import date, datetime, timezone

import click
import orjson

from .loading import load_or_exit
from ..store import is_postgres, open_store
from ..store.catalog import table_exists
from ..usage.stats import period_summary

_HEADERS = ("user", "model", "req today", "tokens today", "cost today",
            "req month", "tokens month", "cost month")


@click.command("usage")
@click.option("--config", "config_path", default="config", show_default=True, type=click.Path(),
              help="Config directory or file; the database path is read from it.")
@click.option("--date", "day", default=None, metavar="YYYY-MM-DD",
              help="Report this UTC day (and its month up to it) instead of today.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def usage(config_path: str, day: str | None, as_json: bool) -> None:
    """Usage per user and model for today and this month (UTC)."""
    snapshot = load_or_exit(config_path)
    if day is None:
        day = datetime.fromtimestamp(time.time(), timezone.utc).strftime("%Y-%m-%d")
    else:
        try:
            day = date.fromisoformat(day).isoformat()
        except ValueError:
            raise click.BadParameter(f"{day!r} is not a date like 2026-11-26", param_hint="--date")
    path = snapshot.database.path
    if not is_postgres(snapshot.database.url) and path != ":memory:" and not os.path.exists(path):
        click.echo(f"No usage recorded yet: the database {path} does not exist.")
        return
    db = open_store(snapshot.database)
    db.open_sync()
    try:
        rows = db.read_sync(lambda conn: _with_emails(conn, period_summary(conn, day)))
    finally:
        db.close_sync()
    if as_json:
        click.echo(orjson.dumps({"day": day, "month": day[:7], "data": rows}).decode())
        return
    click.echo(f"Usage on {day} and in {day[:7]} up to that day (UTC), from {path}")
    if not rows:
        click.echo("No usage in this month.")
        return
    click.echo(_table(rows))


def _with_emails(conn: sqlite3.Connection, rows: list[dict]) -> list[dict]:
    """Name users by e-mail when the accounts table is in the same database."""
    has_users = table_exists(conn, "users")
    emails = dict(conn.execute("SELECT id, email FROM users").fetchall()) if has_users else {}
    for row in rows:
        row["email"] = emails.get(row["user_id"])
    return rows


def _table(rows: list[dict]) -> str:
    totals = [sum(r[k] for r in rows) for k in ("requests_day", "tokens_day", "cost_day",
                                                 "requests_month", "tokens_month", "cost_month")]
    lines = [_HEADERS]
    for r in rows:
        user = r["email"] or f"#{r['user_id']}"
        lines.append((user, r["model"], *_figures(r["requests_day"], r["tokens_day"], r["cost_day"],
                                                  r["requests_month"], r["tokens_month"], r["cost_month"])))
    lines.append(("TOTAL", "", *_figures(*totals)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADERS))]
    out = []
    for n, line in enumerate(lines):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0 or n == len(lines) - 2:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _figures(req_d, tok_d, cost_d, req_m, tok_m, cost_m) -> tuple[str, ...]:
    return (f"{req_d:,}", f"{tok_d:,}", f"${cost_d:,.4f}", f"{req_m:,}", f"{tok_m:,}", f"${cost_m:,.4f}")

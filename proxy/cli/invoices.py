"""`bluesminds invoices generate --month YYYY-MM`: draft or finalize a month's invoices.

The same code as the in-process job and POST /api/admin/invoices/generate, on
the same database; running it again, or beside a running gateway, changes
nothing that was already final (the store's one writer serializes them)."""

from __future__ import annotations

import time

import click

from ..billing.invoices import generate
from ..billing.plans import Month
from ..store import open_store
from .loading import load_or_exit


@click.group("invoices")
def invoices() -> None:
    """Monthly invoices."""


@invoices.command("generate")
@click.option("--config", "config_path", default="config", show_default=True, type=click.Path(),
              help="Config directory or file; the database path is read from it.")
@click.option("--month", "month_text", required=True, metavar="YYYY-MM", help="The UTC month to invoice.")
def generate_command(config_path: str, month_text: str) -> None:
    """Draft a month's invoices, or finalize and number them once its grace period is over."""
    try:
        month = Month.parse(month_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month")
    snapshot = load_or_exit(config_path)
    db = open_store(snapshot.database)
    db.open_sync()
    try:
        now = time.time()
        result = db.write_sync(lambda conn: generate(conn, snapshot, month, now=now))
    finally:
        db.close_sync()
    click.echo(f"{result.month}: {result.finalized} finalized, {result.drafted} drafted, "
               f"{result.unchanged} already final (invoices are {result.status}).")

"""`bluesminds backup PATH`: a consistent copy of the live SQLite database, while it serves.

Copying the file with `cp` can catch a write half-way and misses what still
sits in the WAL; SQLite's online backup API copies one consistent snapshot
of the pages, WAL included. It runs in steps so the gateway's writer is
never held up for the whole copy, and the copy is written under a temporary
name and renamed only once it is complete and checks out.
"""

from __future__ import annotations

import os
import sqlite3

import click

from .loading import load_or_exit
from .options import default_config

PAGES_PER_STEP = 1024  # 4 MiB at the default page size: short enough that writers only wait a moment


def backup_database(source: str, target: str) -> int:
    """Copy `source` to `target` (which must not exist); returns the pages copied."""
    partial = target + ".partial"
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=PAGES_PER_STEP)
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise click.ClickException(f"the copy failed its integrity check ({check}); {target} not written")
            # One file to carry away: fold the copy's own WAL (if any) back into it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    finally:
        src.close()
    return pages


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", default=None, type=click.Path(),
              help="Config directory or file; the database path is read from it.")
def backup(path: str, config_path: str | None) -> None:
    """Write a consistent copy of the gateway's SQLite database to PATH, while the gateway runs."""
    snapshot = load_or_exit(config_path or default_config())
    source = snapshot.database.path
    if source == ":memory:":
        raise click.ClickException("the database is :memory:; there is nothing on disk to back up")
    if not os.path.isfile(source):
        raise click.ClickException(f"the database {source} does not exist")
    if os.path.exists(path):
        raise click.UsageError(f"{path} already exists; a backup never overwrites a file")
    pages = backup_database(source, path)
    click.echo(f"backed up {source} to {path}: {pages} pages, {os.path.getsize(path)} bytes, integrity ok")

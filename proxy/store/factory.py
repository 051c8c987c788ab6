"""The store a config names: SQLite at `database.path` unless `database.url` is PostgreSQL's."""

from __future__ import annotations

from typing import Any, Sequence

from .database import Database


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0] in ("postgresql", "postgres")  # type: ignore[union-attr]


def open_store(settings: Any, *, migrations: Sequence[Any] | None = None):
    """A closed store for `settings` (a DatabaseSettings); call open() or open_sync()."""
    if is_postgres(getattr(settings, "url", None)):
        # Imported only here: psycopg is needed only by a PostgreSQL deployment.
        from .postgres import PostgresStore
        return PostgresStore(settings.url, path=settings.path, migrations=migrations)
    return Database(settings.path, migrations=migrations)

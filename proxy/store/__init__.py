"""Storage: the `Store` interface and its SQLite implementation.

    interface.py   Store: reads, one write path, idempotent transactions
    database.py    Database: SQLite, one writer thread, reader threads
    postgres.py    PostgresStore: the same over psycopg, for several workers or machines
    dialect.py     SQLite's SQL as PostgreSQL reads it; pg_schema.py its migrations, partitions
    factory.py     open_store(settings): the store `database.url` / `database.path` names
    errors.py      driver exceptions under backend-neutral names
    migrations.py  the migration sets of the gateway, in the order they apply
"""

from .database import Database
from .factory import is_postgres, open_store
from .interface import Store
from .migrations import gateway_migrations

__all__ = ["Database", "Store", "gateway_migrations", "is_postgres", "open_store"]

"""Storage: the `Store` interface and its SQLite implementation.

    interface.py   Store: reads, one write path, idempotent transactions
    database.py    Database: SQLite, one writer thread, reader threads
    migrations.py  the migration sets of the gateway, in the order they apply
"""

from .database import Database
from .interface import Store
from .migrations import gateway_migrations

__all__ = ["Database", "Store", "gateway_migrations"]

"""Driver exceptions under backend-neutral names, so code catches them once for both stores.

psycopg is imported only if installed: the single-node default needs nothing
beyond sqlite3."""

from __future__ import annotations

import sqlite3

try:
    import psycopg
except ImportError:  # pragma: no cover - PostgreSQL support not installed
    psycopg = None

if psycopg is not None:
    IntegrityError: tuple[type[BaseException], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
    # A statement the schema cannot run (a missing table or column).
    OperationalError: tuple[type[BaseException], ...] = (
        sqlite3.OperationalError, psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)
    DatabaseError: tuple[type[BaseException], ...] = (sqlite3.Error, psycopg.Error)
    # Errors that come from the values of a row, not the database's state.
    DataError: tuple[type[BaseException], ...] = (
        sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
        psycopg.IntegrityError, psycopg.DataError)
else:  # pragma: no cover
    IntegrityError = (sqlite3.IntegrityError,)
    OperationalError = (sqlite3.OperationalError,)
    DatabaseError = (sqlite3.Error,)
    DataError = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                 sqlite3.DataError)

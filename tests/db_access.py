"""The gateway's database as a test reads and writes it, on either pass of the suite.

A test names the database by the SQLite path its config gives (`harness.db_path`,
`tmp_path / "x.db"`). On the PostgreSQL pass (tests/conftest.py) every test has
one fresh PostgreSQL database, named by BLUESMINDS_DATABASE_URL, and that is the
database its gateways use whatever the path: so the same path opens it here too.
SQL goes through the store, hence through proxy/store/dialect.py, so a test's
statements are held to the same common subset as the product's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from proxy.config.build import DATABASE_URL_ENV
from proxy.store import Database


def on_postgres() -> bool:
    return bool(os.environ.get(DATABASE_URL_ENV))


def store_at(path: str, **kwargs: Any):
    """A closed store on the test's database (call open_sync() / open())."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        from proxy.store.postgres import PostgresStore
        return PostgresStore(url, path=path, **kwargs)
    return Database(path, **kwargs)


@contextlib.contextmanager
def opened(path: str, **kwargs: Any) -> Iterator[Any]:
    store = store_at(path, **kwargs)
    store.open_sync()
    try:
        yield store
    finally:
        store.close_sync()


def query(path: str, sql: str, args: Sequence[Any] | dict = ()) -> list[tuple]:
    with opened(path) as store:
        return store.read_sync(lambda conn: [tuple(r) for r in conn.execute(sql, args).fetchall()])


def query_dicts(path: str, sql: str, args: Sequence[Any] | dict = ()) -> list[dict]:
    with opened(path) as store:
        return store.read_sync(lambda conn: [dict(zip(r.keys(), r)) for r in conn.execute(sql, args).fetchall()])


def execute(path: str, sql: str, args: Sequence[Any] | dict = ()) -> int:
    """One statement in its own transaction; the number of rows it changed."""
    with opened(path) as store:
        return store.write_sync(lambda conn: conn.execute(sql, args).rowcount)


def stored_bytes(path: str) -> bytes:
    """Everything the database holds, to search for what must never be stored: the
    bytes of the SQLite file and its WAL, or on PostgreSQL every row of every table."""
    if not on_postgres():
        return b"".join(p.read_bytes() for p in Path(path).parent.glob(Path(path).name + "*"))

    def dump(conn) -> bytes:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()]
        return b"\n".join(repr(tuple(row)).encode() for table in tables
                          for row in conn.execute(f'SELECT * FROM "{table}"').fetchall())

    with opened(path) as store:
        return store.read_sync(dump)


def settings_at(path: str, **fields: Any):
    """The DatabaseSettings of the test's database, for code that opens its own store."""
    from proxy.config.snapshot import DatabaseSettings

    return DatabaseSettings(path=path, url=os.environ.get(DATABASE_URL_ENV), **fields)


def fail_fast_sql() -> str:
    """Run on a store's writer: a write that finds the database locked fails at once
    (see WriteBlocker) instead of waiting for the lock."""
    return "SET lock_timeout = '20ms'" if on_postgres() else "PRAGMA busy_timeout=0"


class WriteBlocker:
    """Another connection holding the lock every usage write needs, until release():
    the store's writes fail meanwhile (at once after fail_fast_sql()), as they do
    while another process holds the database."""

    def __init__(self, path: str) -> None:
        if on_postgres():
            import psycopg

            self._conn = psycopg.connect(os.environ[DATABASE_URL_ENV])
            self._conn.execute("LOCK TABLE usage IN ACCESS EXCLUSIVE MODE")
        else:
            import sqlite3

            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if on_postgres():
            self._conn.rollback()
        else:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()

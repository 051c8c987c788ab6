"""One SQLite file, one writer.

Every write runs on a single dedicated thread that owns the only write
connection, inside `BEGIN IMMEDIATE … COMMIT`, so concurrent writers queue
instead of failing with "database is locked" and a read-then-write is atomic.
Reads run on a small pool of threads with their own connections (WAL lets them
proceed beside the writer). Nothing here blocks the event loop.

Features register their schema with `register_migrations(Migrations(...))`;
`Database.open()` applies every registered set in registration order.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import sqlite_utils

T = TypeVar("T")

_MIGRATION_SETS: list[sqlite_utils.Migrations] = []


def register_migrations(migrations: sqlite_utils.Migrations) -> sqlite_utils.Migrations:
    if all(m.name != migrations.name for m in _MIGRATION_SETS):
        _MIGRATION_SETS.append(migrations)
    return migrations


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in the writer).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Database:
    def __init__(self, path: str, *, readers: int = 2) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def open_sync(self) -> None:
        """Create the file and apply migrations. Safe to call from a CLI."""
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        self._writer.submit(self._open_writer).result()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.open_sync)

    def _open_writer(self) -> None:
        self._write_conn = _connect(self.path)
        db = sqlite_utils.Database(self._write_conn)
        for migrations in _MIGRATION_SETS:
            migrations.apply(db)

    def close_sync(self) -> None:
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.close_sync)

    def _close_writer(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None

    # -- writes ------------------------------------------------------------

    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._write_conn
        if conn is None:
            raise RuntimeError("database is not open")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one IMMEDIATE transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._run_write, fn)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._writer.submit(self._run_write, fn).result()

    # -- reads -------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader())

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._readers.submit(self._run_read, fn).result()

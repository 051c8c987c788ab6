"""One SQLite file, one writer: the first implementation of `Store`.

Every write runs on a single dedicated thread that owns the only write
connection, inside `BEGIN IMMEDIATE … COMMIT`, so concurrent writers queue
instead of failing with "database is locked" and a read-then-write is atomic.
Reads run on a small pool of threads with their own connections (WAL lets them
proceed beside the writer). Nothing here blocks the event loop.

Before each write transaction the writer checks that the path still names
the file it opened (device and inode, one stat). A database deleted or
replaced underneath a running gateway would otherwise take every later write
into an unlinked inode that vanishes at exit; instead writes are refused with
`StoreUnavailable`, logged once, and reported by `problem`, until the same
file is back at its path (`ln /proc/PID/fd/N PATH` restores it).

`Database.open()` applies the migration sets it was given, by default the
gateway's own (`migrations.gateway_migrations`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import sqlite_utils

from ..errors import StoreUnavailable
from .migrations import gateway_migrations

T = TypeVar("T")

log = logging.getLogger("bluesminds.store")


def _connect(path: str, *, create: bool = True) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in the writer).
    if create or not _is_file(path):
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    else:
        # mode=rw: a reader opened after the file was deleted must fail, not create an
        # empty database at the path that every later reader would then see.
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _is_file(path: str) -> bool:
    return path not in ("", ":memory:") and not path.startswith("file:")


class Database:
    def __init__(self, path: str, *, readers: int = 2,
                 migrations: Sequence[sqlite_utils.Migrations] | None = None) -> None:
        self.path = path
        self._migrations = migrations
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._abs_path = os.path.abspath(path) if _is_file(path) else None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._problem: str | None = None
        self.refused_writes = 0  # write transactions refused because the file is gone

    # -- lifecycle ---------------------------------------------------------

    def open_sync(self) -> None:
        """Create the file and apply migrations. Safe to call from a CLI."""
        if self._abs_path is not None:
            os.makedirs(os.path.dirname(self._abs_path), exist_ok=True)
        self._writer.submit(self._open_writer).result()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.open_sync)

    def _open_writer(self) -> None:
        self._write_conn = _connect(self.path)
        if self._abs_path is not None:
            st = os.stat(self._abs_path)
            self._identity = (st.st_dev, st.st_ino)
        db = sqlite_utils.Database(self._write_conn)
        sets = gateway_migrations() if self._migrations is None else self._migrations
        for migrations in sets:
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

    # -- health ------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why writes are refused, or None. Names no path: /healthz shows it to anyone."""
        return self._problem

    def _check_identity(self) -> None:
        """Runs on the writer thread before each transaction."""
        if self._identity is None:
            return
        try:
            st = os.stat(self._abs_path)  # type: ignore[arg-type]
            problem = (None if (st.st_dev, st.st_ino) == self._identity else
                       "the database file was replaced by another file while the gateway "
                       "was running")
        except FileNotFoundError:
            problem = "the database file was deleted while the gateway was running"
        if problem is None:
            if self._problem is not None:
                log.warning("database file %s is back; writes resume", self._abs_path)
                self._problem = None
            return
        if self._problem is None:
            log.error("%s (%s); refusing every write so that nothing goes into a file that "
                      "vanishes at exit. Queued usage is kept and spilled at shutdown. "
                      "Restore the file or restart the gateway.", problem, self._abs_path)
            self._problem = problem
        self.refused_writes += 1
        raise StoreUnavailable("The gateway cannot save data right now; the operator has "
                               "been alerted. Retry later.", code="store_unavailable")

    # -- writes ------------------------------------------------------------

    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._write_conn
        if conn is None:
            raise RuntimeError("database is not open")
        self._check_identity()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # SQLITE_FULL and some I/O errors roll the transaction back by
            # themselves; a second ROLLBACK would fail and hide the real error.
            # A COMMIT that failed leaves it open, and the next BEGIN would fail.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one IMMEDIATE transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._run_write, fn)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._writer.submit(self._run_write, fn).result()

    async def write_once(self, key: str, fn: Callable[[sqlite3.Connection], Any]) -> bool:
        """Run `fn(conn)` and record `key` in the same transaction, unless a
        transaction with this key already committed: then nothing runs."""
        return await self.write(lambda conn: _once(conn, key, fn))

    # -- reads -------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = _connect(self.path, create=False)
            except sqlite3.OperationalError:
                # The file is gone (the writer reports it on its next write): this read
                # is refused like a write, never answered from an empty new file.
                raise StoreUnavailable("The gateway cannot read its data right now; the operator has "
                                       "been alerted. Retry later.", code="store_unavailable") from None
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


def _once(conn: sqlite3.Connection, key: str, fn: Callable[[sqlite3.Connection], Any]) -> bool:
    cur = conn.execute("INSERT INTO idempotency_keys (key) VALUES (?) ON CONFLICT DO NOTHING",
                       (key,))
    if cur.rowcount == 0:
        return False
    fn(conn)
    return True

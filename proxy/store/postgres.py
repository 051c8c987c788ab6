"""PostgreSQL: the second implementation of `Store`, for several workers or machines.

Driver: psycopg 3, used synchronously, one writer thread and a few reader
threads, exactly the shape of the SQLite `Database`. Every caller in the
codebase hands `fn(conn)` a function that calls `conn.execute(sql, params)`
and reads rows back on a thread; an asyncio driver (asyncpg) would have meant
rewriting each of those functions as coroutines, and sharing none of them
with SQLite. `fn` receives `PgConnection`, a thin adapter that speaks
sqlite3's dialect of the DB-API (qmark placeholders, `lastrowid`,
`executemany`, rows readable by index and by name) over psycopg's.

The writer runs each `fn` in one transaction (READ COMMITTED) on its own
connection. When PostgreSQL cannot be reached, `write` raises
`StoreUnavailable` and `problem` says so; the next call reconnects, so the
store recovers by itself when the server returns. Readers are in autocommit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from ..errors import StoreUnavailable
from . import pg_schema
from .dialect import to_postgres

T = TypeVar("T")

log = logging.getLogger("bluesminds.store")

CONNECT_TIMEOUT_S = 3


class Row(tuple):
    """A result row: a tuple that also answers row["column"] and keys(), as sqlite3.Row."""

    __slots__ = ()
    _index: dict[str, int]

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor) -> Callable[[Sequence[Any]], Row]:
    desc = cursor.description or []
    names: dict[str, int] = {}
    for i, column in enumerate(desc):
        names.setdefault(column.name, i)
    # One subclass per result shape keeps a row as small as a tuple.
    cls = type("Row", (Row,), {"__slots__": (), "_index": names})
    return cls


class _IntFromNumeric(Loader):
    """SUM over BIGINT is NUMERIC: an exact int (or a float), as SQLite returns, not a Decimal."""

    def load(self, data):
        text = bytes(data)
        if b"." in text or b"e" in text.lower() or b"N" in text:
            return float(text)
        return int(text)


class _IntFromBool(Loader):
    """A comparison in a SELECT is 1 or 0, as in SQLite."""

    def load(self, data):
        return 1 if bytes(data) == b"t" else 0


class _BoolAsInt(Dumper):
    """True/False bound into INTEGER columns, as sqlite3 stores them."""

    format = Format.TEXT
    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj):
        return b"1" if obj else b"0"


def _configure(conn: psycopg.Connection) -> None:
    conn.adapters.register_loader("numeric", _IntFromNumeric)
    conn.adapters.register_loader("bool", _IntFromBool)
    conn.adapters.register_dumper(bool, _BoolAsInt)
    conn.row_factory = _row_factory  # type: ignore[assignment]


class PgCursor:
    """The part of sqlite3.Cursor the codebase uses."""

    def __init__(self, cursor: psycopg.Cursor, lastrowid: int | None = None,
                 returned_id: bool = False) -> None:
        self._cursor = cursor
        self.lastrowid = lastrowid
        self._returned_id = returned_id

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def description(self):
        return None if self._returned_id else self._cursor.description

    def fetchone(self):
        if self._returned_id or self._cursor.description is None:
            return None
        return self._cursor.fetchone()

    def fetchall(self) -> list:
        if self._returned_id or self._cursor.description is None:
            return []
        return self._cursor.fetchall()

    def fetchmany(self, size: int = 1) -> list:
        if self._returned_id or self._cursor.description is None:
            return []
        return self._cursor.fetchmany(size)

    def __iter__(self) -> Iterator:
        return iter(self.fetchall())

    def close(self) -> None:
        self._cursor.close()


class PgConnection:
    """What `fn(conn)` receives on PostgreSQL: sqlite3's calling conventions over psycopg."""

    dialect = "postgres"

    def __init__(self, raw: psycopg.Connection, store: "PostgresStore") -> None:
        self.raw = raw
        self._store = store
        # Partitions this transaction created: known to exist only once it commits, since
        # a transaction cut off by a stopping server takes its CREATE TABLE with it.
        self.created_partitions: set[str] = set()

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> PgCursor:
        pg, id_column = self._store.translate(sql)
        cursor = self.raw.cursor()
        cursor.execute(pg, _params(params))
        if id_column is not None:
            row = cursor.fetchone() if cursor.description is not None else None
            return PgCursor(cursor, row[0] if row else None, returned_id=True)
        return PgCursor(cursor)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> PgCursor:
        pg, _ = self._store.translate(sql, returning=False)
        cursor = self.raw.cursor()
        cursor.executemany(pg, [_params(p) for p in seq])
        return PgCursor(cursor)

    def prepare_usage_write(self, times: Iterable[float]) -> None:
        """Before a usage batch: one batch at a time across workers (rollup.py reads the
        rows above the batch's starting id), and the monthly partitions its rows need."""
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.USAGE_WRITE_LOCK,))
        known = set(self._store.known_partitions)
        pg_schema.ensure_partitions(self, known, "usage", times)
        self.created_partitions |= known - self._store.known_partitions

    def take_turn(self, lock: int) -> None:
        """Wait for, then hold until this transaction ends, the advisory lock `lock`:
        transactions that all begin so run one after the other, each reading what the
        previous one committed, as writers on SQLite's file lock do."""
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()


def _params(params: Any) -> Any:
    if isinstance(params, dict):
        return params
    return tuple(params) if params is not None else ()


class PostgresStore:
    """`Store` on a PostgreSQL database named by `url` (postgresql://user@host:port/db).

    `path` is a local file name that the usage spill files are named after."""

    def __init__(self, url: str, *, path: str, readers: int = 2,
                 migrations: Sequence[Any] | None = None) -> None:
        self.url = url
        self.path = path
        self._migrations = migrations
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="pg-reader")
        self._local = threading.local()
        self._write_conn: psycopg.Connection | None = None
        self._reader_conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._translated: dict[tuple[str, bool], tuple[str, str | None]] = {}
        self._identity: dict[str, str] = {}  # table -> its identity column, for lastrowid
        self.known_partitions: set[str] = set()  # usage partitions known to exist
        self.refused_writes = 0

    # -- SQL ---------------------------------------------------------------

    def translate(self, sql: str, *, returning: bool = True) -> tuple[str, str | None]:
        """The PostgreSQL text of `sql`, and the identity column it returns for lastrowid."""
        key = (sql, returning)
        hit = self._translated.get(key)
        if hit is not None:
            return hit
        pg = to_postgres(sql)
        id_column = None
        if returning:
            table = pg_schema.insert_target(pg)
            if table is not None and table in self._identity and "RETURNING" not in pg.upper():
                id_column = self._identity[table]
                pg = pg.rstrip().rstrip(";") + f" RETURNING {id_column}"
        if len(self._translated) < 10_000:  # distinct statements are few; a runaway caller is not cached
            self._translated[key] = (pg, id_column)
        return pg, id_column

    # -- lifecycle ---------------------------------------------------------

    def _connect(self, *, autocommit: bool) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S,
                               prepare_threshold=None)
        _configure(conn)
        return conn

    def open_sync(self) -> None:
        self._writer.submit(self._open_writer).result()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.open_sync)

    def _open_writer(self) -> None:
        conn = self._connect(autocommit=False)
        self._write_conn = conn
        from .migrations import gateway_migrations
        sets = gateway_migrations() if self._migrations is None else self._migrations
        pg_schema.apply_migrations(conn, sets)
        self._identity = pg_schema.identity_columns(conn)
        conn.commit()

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
        """Why writes fail right now, or None. Names no host: /healthz shows it to anyone."""
        return self._problem

    def _lost(self, exc: BaseException) -> StoreUnavailable:
        if self._problem is None:
            log.error("PostgreSQL cannot be reached (%s); writes fail and queued usage waits "
                      "until it returns", exc)
            self._problem = "the PostgreSQL database cannot be reached"
        self.refused_writes += 1
        return StoreUnavailable("The gateway cannot save data right now; the operator has "
                                "been alerted. Retry later.", code="store_unavailable")

    def _recovered(self) -> None:
        if self._problem is not None:
            log.warning("PostgreSQL is reachable again; writes resume")
            self._problem = None

    # -- writes ------------------------------------------------------------

    def _writer_conn(self) -> psycopg.Connection:
        conn = self._write_conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
        self._write_conn = None
        try:
            self._write_conn = self._connect(autocommit=False)
        except psycopg.OperationalError as exc:
            raise self._lost(exc) from exc
        return self._write_conn

    def _run_write(self, fn: Callable[[PgConnection], T]) -> T:
        conn = self._writer_conn()
        adapter = PgConnection(conn, self)
        try:
            result = fn(adapter)
            conn.commit()
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise self._lost(exc) from exc
            _rollback(conn)
            raise
        except BaseException:
            _rollback(conn)
            raise
        self.known_partitions |= adapter.created_partitions
        self._recovered()
        return result

    async def write(self, fn: Callable[[PgConnection], T]) -> T:
        """Run `fn(conn)` in one transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._run_write, fn)

    def write_sync(self, fn: Callable[[PgConnection], T]) -> T:
        return self._writer.submit(self._run_write, fn).result()

    async def write_once(self, key: str, fn: Callable[[PgConnection], Any]) -> bool:
        return await self.write(lambda conn: _once(conn, key, fn))

    # -- reads -------------------------------------------------------------

    def _reader(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            conn.close()
            conn = None
        if conn is None:
            try:
                conn = self._connect(autocommit=True)
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from exc
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _run_read(self, fn: Callable[[PgConnection], T]) -> T:
        conn = self._reader()
        try:
            return fn(PgConnection(conn, self))
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise self._lost(exc) from exc
            raise

    async def read(self, fn: Callable[[PgConnection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def read_sync(self, fn: Callable[[PgConnection], T]) -> T:
        return self._readers.submit(self._run_read, fn).result()


def _rollback(conn: psycopg.Connection) -> None:
    if conn.closed or conn.broken:
        return
    try:
        conn.rollback()
    except psycopg.Error:
        log.exception("rollback failed")


def _once(conn: PgConnection, key: str, fn: Callable[[PgConnection], Any]) -> bool:
    cur = conn.execute("INSERT INTO idempotency_keys (key) VALUES (?) ON CONFLICT DO NOTHING",
                       (key,))
    if cur.rowcount == 0:
        return False
    fn(conn)
    return True

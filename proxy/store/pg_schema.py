"""The gateway's migrations applied to PostgreSQL, and the monthly usage partitions.

The migration sets are the SQLite ones (proxy/store/migrations.py), run through
a stand-in for `sqlite_utils.Database` whose `execute` translates each
statement (dialect.py). What ran is recorded in `_migrations` (set, name), one
transaction per migration, under an advisory lock so that workers starting
together apply each migration once.

Usage is range-partitioned on `ts` (epoch seconds) by UTC month. A batch
creates the partitions its rows need before inserting (`ensure_partitions`),
and retention drops whole partitions (`drop_partitions_before`), which costs
nothing like a DELETE of millions of rows.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from .dialect import PARTITIONED, ddl_to_postgres

_MIGRATIONS_LOCK = 0x626D6967  # any constant shared by every worker: "bmig"
USAGE_WRITE_LOCK = 0x626D7573  # "bmus": one usage batch at a time across workers

_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


def insert_target(sql: str) -> str | None:
    match = _INSERT_INTO.match(sql)
    return match.group(1) if match else None


class _MigrationDb:
    """What a migration function may call on its `db`: execute, translated."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        cursor = self._conn.cursor()
        for statement in ddl_to_postgres(sql):
            cursor.execute(statement, tuple(params or ()))
        return cursor


def apply_migrations(conn: Any, sets: Iterable[Any]) -> list[str]:
    """Apply what is pending of every set (sqlite_utils.Migrations); return what ran."""
    ran: list[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_MIGRATIONS_LOCK,))
    conn.commit()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS _migrations (migration_set TEXT NOT NULL, "
                        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, "
                        "PRIMARY KEY (migration_set, name))")
            conn.commit()
            cur.execute("SELECT migration_set, name FROM _migrations")
            applied = {(row[0], row[1]) for row in cur.fetchall()}
        for migrations in sets:
            for migration in migrations._migrations:
                if (migrations.name, migration.name) in applied:
                    continue
                migration.fn(_MigrationDb(conn))
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO _migrations (migration_set, name, applied_at) "
                                "VALUES (%s, %s, extract(epoch FROM clock_timestamp()))",
                                (migrations.name, migration.name))
                conn.commit()
                ran.append(f"{migrations.name}:{migration.name}")
    except BaseException:
        conn.rollback()
        raise
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATIONS_LOCK,))
        conn.commit()
    return ran


def identity_columns(conn: Any) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE is_identity = 'YES' AND table_schema = current_schema()")
        return {row[0]: row[1] for row in cur.fetchall()}


# -- monthly partitions -------------------------------------------------------

def month_of(ts: float) -> tuple[int, int]:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.year, moment.month


def month_bounds(year: int, month: int) -> tuple[int, int]:
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    return int(start.timestamp()), int(end.timestamp())


def partition_name(table: str, year: int, month: int) -> str:
    return f"{table}_{year:04d}_{month:02d}"


def ensure_partitions(conn: Any, known: set[str], table: str, times: Iterable[float]) -> None:
    """Create the monthly partitions of `table` that rows at `times` fall in.
    `known` remembers what exists, so a batch in a month seen before costs nothing."""
    months = set()
    for ts in times:
        if isinstance(ts, (int, float)) and 0 <= ts < 253402300800.0:
            months.add(month_of(ts))
    for year, month in sorted(months):
        name = partition_name(table, year, month)
        if name in known:
            continue
        start, end = month_bounds(year, month)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
                     f"FOR VALUES FROM ({start}) TO ({end})")
        known.add(name)


def partitions(conn: Any, table: str) -> list[tuple[str, int, int]]:
    """(name, year, month) of every monthly partition of `table`, oldest first."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ?", (table,)).fetchall()
    found = []
    for (name,) in rows:
        match = re.fullmatch(rf"{table}_(\d{{4}})_(\d{{2}})", name)
        if match:
            found.append((name, int(match.group(1)), int(match.group(2))))
    return sorted(found, key=lambda p: (p[1], p[2]))


def drop_partitions_before(conn: Any, known: set[str], table: str, year: int, month: int) -> list[str]:
    """Drop the partitions of months before (year, month); return their names."""
    dropped = []
    for name, y, m in partitions(conn, table):
        if (y, m) < (year, month):
            conn.execute(f"DROP TABLE {name}")
            known.discard(name)
            dropped.append(name)
    return dropped


__all__ = ["PARTITIONED", "USAGE_WRITE_LOCK", "apply_migrations", "drop_partitions_before",
           "ensure_partitions", "identity_columns", "insert_target", "partitions"]

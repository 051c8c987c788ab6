"""Writing a batch of usage rows together with its rollups, and reading percentiles back.

The rollup arithmetic is one SQL statement per rollup table that aggregates
raw rows by that table's keys (UTC day × user × key × model, and coarser) and
adds the result to the table. A batch runs them over the rows it has just inserted,
inside the same transaction, so the raw table and the rollups can never
disagree; `rebuild_rollups` runs the very same statement for the finest rollup
over every row (and sums the coarser ones from it), to repair or backfill.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, Sequence

from ..store.errors import DataError
from .record import COLUMNS, UsageRecord
from .schema import LATENCY_BOUNDS_MS, ROLLUP_KEYS, SUM_COLUMNS, sum_of_daily

# Errors that come from the rows themselves, not from the database's state:
# retrying the same batch can never succeed.
DATA_ERRORS = (*DataError, OverflowError, ValueError, TypeError)
MAX_TS = 253402300800.0  # year 10000, the end of what date() can name

INSERT = (
    f"INSERT INTO usage ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

# Source expressions for SUM_COLUMNS, in the same order. `forwarded` counts rows
# that reached an upstream: what the daily/monthly request quotas charge, so a
# request the gateway itself refused (a 429 from the limiter, a 404 model) never
# uses up quota.
_SUMS = (
    "COUNT(*), COUNT(upstream), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens), "
    "SUM(completion_tokens), SUM(total_tokens), SUM(cost_nano), SUM(latency_ms), "
    + ", ".join(f"SUM(CASE WHEN latency_ms <= {b} THEN 1 ELSE 0 END)" for b in LATENCY_BOUNDS_MS)
    + ", SUM(COALESCE(cached_tokens, 0)), SUM(COALESCE(reasoning_tokens, 0))"
)



def _rollup(table: str, keys: dict[str, str]) -> str:
    """Aggregate the rows with id > ? by `keys` (column -> expression) into `table`."""
    # The target's columns are qualified: PostgreSQL finds a bare name ambiguous here.
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in SUM_COLUMNS)
    return f"""
        INSERT INTO {table} ({', '.join(keys)}, {', '.join(SUM_COLUMNS)}, latency_ms_max)
        SELECT {', '.join(keys.values())}, {_SUMS}, MAX(latency_ms)
        FROM usage
        WHERE id > ?
        GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}
        ON CONFLICT ({', '.join(keys)}) DO UPDATE SET
            {added},
            latency_ms_max = MAX({table}.latency_ms_max, excluded.latency_ms_max)
    """


# How each rollup key is computed from a raw row.
_KEY_EXPRESSIONS = {
    "day": "date(ts, 'unixepoch')",
    "user_id": "user_id",
    "key_id": "COALESCE(key_id, 0)",
    "model": "served_model",
}
_ROLLUPS = tuple(
    _rollup(table, {k: _KEY_EXPRESSIONS[k] for k in keys}) for table, keys in ROLLUP_KEYS.items()
)


def _prepare(conn, records: Sequence[UsageRecord]) -> None:
    # PostgreSQL: serialise batches across workers and create the month partitions
    # the rows need (proxy/store/postgres.py); SQLite's BEGIN IMMEDIATE already does the first.
    prepare = getattr(conn, "prepare_usage_write", None)
    if prepare is not None:
        prepare([r.ts for r in records])


def write_batch(conn: sqlite3.Connection, records: Sequence[UsageRecord]) -> None:
    """Insert `records` and fold them into the rollups. Call inside one transaction."""
    if not records:
        return
    _prepare(conn, records)
    # Inside the writer's transaction nobody else inserts, and ids continue
    # from the current maximum, so every row above it is from this batch.
    (last_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM usage").fetchone()
    conn.executemany(INSERT, [r.as_row() for r in records])
    for sql in _ROLLUPS:
        conn.execute(sql, (last_id,))


def write_batch_salvaging(conn: sqlite3.Connection,
                          records: Sequence[UsageRecord]) -> list[tuple[UsageRecord, str]]:
    """Like write_batch, but a row the database refuses is left out instead of failing
    the batch. Returns the refused rows with the reason. Call inside one transaction."""
    _prepare(conn, records)
    (last_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM usage").fetchone()
    refused: list[tuple[UsageRecord, str]] = []
    for rec in records:
        if not isinstance(rec.ts, (int, float)) or not 0 <= rec.ts < MAX_TS:
            refused.append((rec, f"ts {rec.ts!r} is not a unix time"))  # it would have no UTC day
            continue
        conn.execute("SAVEPOINT usage_row")
        try:
            conn.execute(INSERT, rec.as_row())
        except DATA_ERRORS as exc:
            conn.execute("ROLLBACK TO usage_row")
            refused.append((rec, str(exc)))
        conn.execute("RELEASE usage_row")
    for sql in _ROLLUPS:
        conn.execute(sql, (last_id,))
    return refused


def rebuild_rollups(conn: sqlite3.Connection) -> None:
    """Recompute every rollup from the raw rows. Call inside one transaction."""
    for table in ROLLUP_KEYS:
        conn.execute(f"DELETE FROM {table}")
    conn.execute(_ROLLUPS[0], (0,))
    # Summing the finest rollup is many times cheaper than more passes over every raw row.
    for table in list(ROLLUP_KEYS)[1:]:
        conn.execute(sum_of_daily(table))


def estimate_percentile(q: float, count: int, cumulative: Iterable[int], max_ms: float) -> float | None:
    """The q-quantile (0 < q ≤ 1) of latencies summarised by cumulative bucket counts.

    Finds the bucket that holds the nearest-rank sample and interpolates
    linearly inside it, so the answer always lies in the same bucket as the
    exact value; the error is at most that bucket's width (about a third of the
    value). The open bucket above the last bound ends at the observed max.
    """
    if count <= 0:
        return None
    rank = max(1, -(-q * count // 1))  # nearest rank, ceil(q * n)
    lower_bound, below = 0.0, 0
    for bound, at_or_below in zip(LATENCY_BOUNDS_MS, cumulative):
        if at_or_below >= rank:
            upper = min(float(bound), max_ms)
            inside = at_or_below - below
            return lower_bound + (upper - lower_bound) * (rank - below) / inside
        lower_bound, below = float(bound), at_or_below
    inside = count - below
    return lower_bound + (max(max_ms, lower_bound) - lower_bound) * (rank - below) / inside

"""Writing a batch of usage rows together with its rollups, and reading percentiles back.

The rollup arithmetic is one SQL statement that aggregates raw rows by UTC day
× user × key × model and adds the result to `usage_daily`. A batch runs it over
the rows it has just inserted, inside the same transaction, so the raw table
and the rollups can never disagree; `rebuild_rollups` runs the very same
statement over every row, to repair or backfill.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, Sequence

from .record import COLUMNS, UsageRecord
from .schema import BUCKET_COLUMNS, LATENCY_BOUNDS_MS

_INSERT = (
    f"INSERT INTO usage ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

_TARGET = (
    "day, user_id, key_id, model, requests, forwarded, errors, prompt_tokens, "
    "completion_tokens, total_tokens, cost_usd, latency_ms_sum, latency_ms_max, "
    + ", ".join(BUCKET_COLUMNS)
)
_BUCKET_SUMS = ", ".join(f"SUM(latency_ms <= {b})" for b in LATENCY_BOUNDS_MS)
_ADDED = ", ".join(
    f"{c} = {c} + excluded.{c}"
    for c in ("requests", "forwarded", "errors", "prompt_tokens", "completion_tokens",
              "total_tokens", "cost_usd", "latency_ms_sum") + BUCKET_COLUMNS
)
# `forwarded` counts rows that reached an upstream: what the daily/monthly
# request quotas charge, so a request the gateway itself refused (a 429 from the
# limiter, a 404 model) never uses up quota.
_ROLLUP = f"""
INSERT INTO usage_daily ({_TARGET})
SELECT date(ts, 'unixepoch'), user_id, COALESCE(key_id, 0), served_model,
       COUNT(*), COUNT(upstream), SUM(status >= 400), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(total_tokens), SUM(cost_usd), SUM(latency_ms),
       MAX(latency_ms), {_BUCKET_SUMS}
FROM usage
WHERE id > ?
GROUP BY 1, 2, 3, 4
ON CONFLICT (day, user_id, key_id, model) DO UPDATE SET
    {_ADDED},
    latency_ms_max = MAX(latency_ms_max, excluded.latency_ms_max)
"""


def write_batch(conn: sqlite3.Connection, records: Sequence[UsageRecord]) -> None:
    """Insert `records` and fold them into the rollups. Call inside one transaction."""
    if not records:
        return
    # Inside the writer's transaction nobody else inserts, and rowids continue
    # from the current maximum, so every row above it is from this batch.
    (last_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM usage").fetchone()
    conn.executemany(_INSERT, [r.as_row() for r in records])
    conn.execute(_ROLLUP, (last_id,))


def rebuild_rollups(conn: sqlite3.Connection) -> None:
    """Recompute every rollup from the raw rows. Call inside one transaction."""
    conn.execute("DELETE FROM usage_daily")
    conn.execute(_ROLLUP, (0,))


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

"""Persisted usage of the current quota windows, so quotas survive a restart.

The limiter seeds its day and month counters from this at startup. Requests
are the rollups' `forwarded` count (rows that reached an upstream), matching
the limiter, which gives a request back when it ends without reaching one.
Tokens and cost are summed over all rows.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from ..limits.quotas import WindowTotals
from ..store import Database

_SQL = """
SELECT user_id, key_id,
       SUM(CASE WHEN day = :day THEN forwarded ELSE 0 END),
       SUM(CASE WHEN day = :day THEN total_tokens ELSE 0 END),
       SUM(forwarded), SUM(total_tokens), SUM(cost_nano) / 1e9
FROM usage_daily_key
WHERE day >= :first AND day <= :day
GROUP BY user_id, key_id
"""


def window_totals(conn: sqlite3.Connection, now: float) -> list[WindowTotals]:
    """Per user and per key: this UTC day's requests/tokens, this month's requests/tokens/cost."""
    day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
    month = day[:7]
    sums: dict[tuple[str, int], list] = {}
    # Rows of this month up to today only: after the clock is set back, rows
    # stamped in the "future" must not count against the present.
    for user_id, key_id, *values in conn.execute(_SQL, {"day": day, "first": month + "-01"}):
        for scope_id in (("user", user_id), ("key", key_id)) if key_id else (("user", user_id),):
            acc = sums.setdefault(scope_id, [0, 0, 0, 0, 0.0])
            for i, value in enumerate(values):
                acc[i] += value
    return [
        WindowTotals(scope, ident, day, req_day, tok_day, month, req_month, tok_month, cost)
        for (scope, ident), (req_day, tok_day, req_month, tok_month, cost) in sums.items()
    ]


async def load_window_totals(db: Database, now: float) -> list[WindowTotals]:
    return await db.read(lambda conn: window_totals(conn, now))

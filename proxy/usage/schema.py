"""Tables for usage accounting: raw rows, and the daily rollups read by stats and quotas.

`usage` keeps one row per /v1 request, for logs and audits. It has no foreign
key to users or keys on purpose: an accounting row must never fail to insert
because a key was deleted a moment earlier.

`usage_daily` holds one row per UTC day × user × key × model (key 0 stands for
"no key": dashboard sessions and the admin key, since NULL cannot be part of
the primary key); coarser rollups (see ROLLUP_KEYS) hold the same counters
over fewer keys, for the views of everyone at once. Every counter is a plain
sum, so a batch adds to it with one upsert and any range of days aggregates
with SUM.
Latency is kept as a sum (for the mean), a max, and a cumulative histogram:
`lat_le_<ms>` counts requests that took at most that many milliseconds,
Prometheus-style, so a p95 over any set of rollup rows is a SUM per bucket plus
an interpolation (see rollup.py), never a scan of raw rows.
"""

from __future__ import annotations

import sqlite_utils

# Upper bounds (ms) of the latency buckets, about 1.5x apart from 10 ms to 3 min:
# that is where LLM calls land, from a cached embedding to a long completion.
# They are columns, so changing them needs a new migration.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    10, 25, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000,
    4000, 5000, 7500, 10000, 15000, 20000, 30000, 45000, 60000, 90000, 120000, 180000,
)
BUCKET_COLUMNS: tuple[str, ...] = tuple(f"lat_le_{b}" for b in LATENCY_BOUNDS_MS)

# Summed counters of a rollup row. The first set is what migrations 001-003
# created (cost as REAL USD); m004 added the token details, m005 turned the cost
# into integer nano-dollars (see proxy/billing/money.py), whose sums are exact,
# so an invoice adds up to its rows.
_FIRST_SUM_COLUMNS: tuple[str, ...] = (
    "requests", "forwarded", "errors", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost_usd", "latency_ms_sum",
) + BUCKET_COLUMNS
# cached_tokens: the part of prompt_tokens served from a prompt cache (billed at the
# cached price); reasoning_tokens: the part of completion_tokens spent reasoning.
DETAIL_COLUMNS: tuple[str, ...] = ("cached_tokens", "reasoning_tokens")
# Every statement names its columns, so this order is rollup.py's, not the tables'.
SUM_COLUMNS: tuple[str, ...] = (
    tuple("cost_nano" if c == "cost_usd" else c for c in _FIRST_SUM_COLUMNS) + DETAIL_COLUMNS)

# Applied by the store: listed in proxy/store/migrations.py.
migrations = sqlite_utils.Migrations("bluesminds.usage")


@migrations()
def m001_usage_tables(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            request_id TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            key_id INTEGER,
            route TEXT NOT NULL,
            requested_model TEXT NOT NULL,
            served_model TEXT NOT NULL,
            upstream TEXT,
            status INTEGER NOT NULL,
            error_type TEXT,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            total_tokens INTEGER NOT NULL,
            cached_tokens INTEGER,
            estimated INTEGER NOT NULL,
            partial INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            latency_ms REAL NOT NULL,
            ttfb_ms REAL,
            stream INTEGER NOT NULL
        )
        """
    )
    # Logs are read newest first within a user, a key, or everyone (admin);
    # SQLite appends the rowid to every index, so each also orders ties by id.
    db.execute("CREATE INDEX usage_user_ts ON usage (user_id, ts)")
    db.execute("CREATE INDEX usage_key_ts ON usage (key_id, ts)")
    db.execute("CREATE INDEX usage_ts ON usage (ts)")
    buckets = ",\n".join(f"            {c} INTEGER NOT NULL DEFAULT 0" for c in BUCKET_COLUMNS)
    db.execute(
        f"""
        CREATE TABLE usage_daily (
            day TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            key_id INTEGER NOT NULL,
            model TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            forwarded INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            latency_ms_sum REAL NOT NULL DEFAULT 0,
            latency_ms_max REAL NOT NULL DEFAULT 0,
{buckets},
            PRIMARY KEY (day, user_id, key_id, model)
        ) WITHOUT ROWID
        """
    )
    # The primary key serves "everyone, these days" (quotas, admin stats);
    # this one serves "one user, these days" (a tenant's stats, key stats).
    db.execute("CREATE INDEX usage_daily_user ON usage_daily (user_id, day)")


# Rollup tables and the columns they are keyed by. The first is the finest;
# every other one is a sum of it over fewer keys, kept so that reading
# everyone's usage at once does not add up one row per user, key and model:
# usage_daily_key serves "everyone by user or key" and the quota totals,
# usage_daily_model "everyone by day or model".
ROLLUP_KEYS: dict[str, tuple[str, ...]] = {
    "usage_daily": ("day", "user_id", "key_id", "model"),
    "usage_daily_key": ("day", "user_id", "key_id"),
    "usage_daily_model": ("day", "model"),
}


def sum_of_daily(table: str, columns: tuple[str, ...] = SUM_COLUMNS) -> str:
    """SQL filling `table` from usage_daily: to backfill a new rollup, or rebuild one."""
    keys = ", ".join(ROLLUP_KEYS[table])
    sums = ", ".join(f"SUM({c})" for c in columns)
    return (f"INSERT INTO {table} ({keys}, {', '.join(columns)}, latency_ms_max) "
            f"SELECT {keys}, {sums}, MAX(latency_ms_max) FROM usage_daily GROUP BY {keys}")


def _create_coarse_rollup(db: sqlite_utils.Database, table: str) -> None:
    keys = ROLLUP_KEYS[table]
    key_columns = "\n".join(
        f"            {k} {'TEXT' if k in ('day', 'model') else 'INTEGER'} NOT NULL," for k in keys)
    counters = ",\n".join(
        f"            {c} {'REAL' if c in ('cost_usd', 'latency_ms_sum') else 'INTEGER'} NOT NULL DEFAULT 0"
        for c in _FIRST_SUM_COLUMNS
    )
    db.execute(
        f"""
        CREATE TABLE {table} (
{key_columns}
{counters},
            latency_ms_max REAL NOT NULL DEFAULT 0,
            PRIMARY KEY ({', '.join(keys)})
        ) WITHOUT ROWID
        """
    )
    db.execute(sum_of_daily(table, _FIRST_SUM_COLUMNS))


@migrations()
def m002_daily_model_rollup(db: sqlite_utils.Database) -> None:
    _create_coarse_rollup(db, "usage_daily_model")


@migrations()
def m003_daily_key_rollup(db: sqlite_utils.Database) -> None:
    _create_coarse_rollup(db, "usage_daily_key")


@migrations()
def m004_token_details(db: sqlite_utils.Database) -> None:
    """Reasoning tokens on raw rows; cached and reasoning sums on every rollup,
    the cached ones backfilled from the raw rows that always had them."""
    db.execute("ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER")
    for table in ROLLUP_KEYS:
        for column in DETAIL_COLUMNS:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    db.execute(
        """
        UPDATE usage_daily SET cached_tokens = raw.cached
        FROM (SELECT date(ts, 'unixepoch') AS day, user_id, COALESCE(key_id, 0) AS key_id,
                     served_model AS model, SUM(COALESCE(cached_tokens, 0)) AS cached
              FROM usage WHERE cached_tokens IS NOT NULL GROUP BY 1, 2, 3, 4) AS raw
        WHERE usage_daily.day = raw.day AND usage_daily.user_id = raw.user_id
          AND usage_daily.key_id = raw.key_id AND usage_daily.model = raw.model
        """
    )
    for table, keys in ROLLUP_KEYS.items():
        if table == "usage_daily":
            continue
        match = " AND ".join(f"{table}.{k} = daily.{k}" for k in keys)
        db.execute(
            f"""
            UPDATE {table} SET cached_tokens = daily.cached
            FROM (SELECT {', '.join(keys)}, SUM(cached_tokens) AS cached FROM usage_daily
                  GROUP BY {', '.join(keys)}) AS daily
            WHERE {match}
            """
        )


@migrations()
def m005_cost_in_nano_dollars(db: sqlite_utils.Database) -> None:
    """Float USD → integer nano-dollars, in the raw rows and every rollup.

    Rounding each stored float once to the nearest nano-dollar is exact for
    every cost the gateway wrote (a float holds ~16 significant digits); from
    here on costs are integers and sums of them never drift."""
    for table in ("usage", *ROLLUP_KEYS):
        db.execute(f"ALTER TABLE {table} ADD COLUMN cost_nano INTEGER NOT NULL DEFAULT 0")
        db.execute(f"UPDATE {table} SET cost_nano = CAST(ROUND(cost_usd * 1e9) AS INTEGER)")
        db.execute(f"ALTER TABLE {table} DROP COLUMN cost_usd")


@migrations()
def m006_failed_request_indexes(db: sqlite_utils.Database) -> None:
    """Partial indexes of the failed requests, for the logs' status filters: "5xx"
    or "429" walks the few failed rows of a user, a key or everyone, newest first,
    instead of every row. They cost the writer nothing for a 2xx row."""
    db.execute("CREATE INDEX usage_user_failed ON usage (user_id, ts) WHERE status >= 400")
    db.execute("CREATE INDEX usage_key_failed ON usage (key_id, ts) WHERE status >= 400")
    db.execute("CREATE INDEX usage_failed ON usage (ts) WHERE status >= 400")


"""Rollups against an independent reference computed from the raw records."""

from __future__ import annotations

import bisect
import math
import random
from collections import defaultdict
from datetime import datetime, timezone

import pytest

from proxy.store import Database
from proxy.usage import UsageRecord, key_stats, rebuild_rollups, window_totals, write_batch
from proxy.usage.record import COLUMNS
from proxy.usage.rollup import estimate_percentile
from proxy.usage.schema import BUCKET_COLUMNS, LATENCY_BOUNDS_MS
from proxy.usage.stats import StatsQuery, usage_stats

NOW = datetime(2025, 11, 26, 15, 30, tzinfo=timezone.utc).timestamp()
DAY = 86400.0
MODELS = ("gpt-4o", "gpt-4o-mini", "claude", "embed-3")


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


def random_records(rnd: random.Random, n: int) -> list[UsageRecord]:
    out = []
    for i in range(n):
        prompt, completion = rnd.randrange(2000), rnd.randrange(800)
        status = rnd.choice((200, 200, 200, 200, 400, 429, 499, 502))
        out.append(UsageRecord(
            # Out of order and across month boundaries, with a few rows "from the future".
            ts=NOW - rnd.uniform(-2 * DAY, 70 * DAY), request_id=f"r{i}",
            user_id=rnd.randrange(1, 9), key_id=rnd.choice((None, 1, 2, 3, 4, 5, 6)),
            route="chat", requested_model="alias", served_model=rnd.choice(MODELS),
            upstream=None if status in (400, 429) else rnd.choice(("a", "b")),
            status=status, error_type=None, prompt_tokens=prompt, completion_tokens=completion,
            total_tokens=prompt + completion, cached_tokens=None,
            cost_nano=rnd.randrange(10_000_000), latency_ms=rnd.choice((
                rnd.uniform(0, 10), 10.0, 25.0, rnd.lognormvariate(6.5, 1.2), 250_000.0)),
        ))
    return out


def fine(r: UsageRecord) -> tuple:
    return (day_of(r.ts), r.user_id, r.key_id or 0, r.served_model)


def coarse(r: UsageRecord) -> tuple:
    return (day_of(r.ts), r.served_model)


def by_key(r: UsageRecord) -> tuple:
    return (day_of(r.ts), r.user_id, r.key_id or 0)


def assert_every_rollup_matches(db, records):
    assert_matches(stored(db), reference(records))
    assert_matches(stored(db, "usage_daily_model", "day, model"), reference(records, coarse))
    assert_matches(stored(db, "usage_daily_key", "day, user_id, key_id"), reference(records, by_key))


def reference(records, key=fine):
    groups = defaultdict(lambda: {"requests": 0, "forwarded": 0, "errors": 0, "prompt_tokens": 0,
                                  "completion_tokens": 0, "total_tokens": 0, "cost_nano": 0,
                                  "latency_ms_sum": 0.0, "latency_ms_max": 0.0,
                                  "buckets": [0] * len(LATENCY_BOUNDS_MS)})
    for r in records:
        g = groups[key(r)]
        g["requests"] += 1
        g["forwarded"] += r.upstream is not None
        g["errors"] += r.status >= 400
        g["prompt_tokens"] += r.prompt_tokens
        g["completion_tokens"] += r.completion_tokens
        g["total_tokens"] += r.total_tokens
        g["cost_nano"] += r.cost_nano
        g["latency_ms_sum"] += r.latency_ms
        g["latency_ms_max"] = max(g["latency_ms_max"], r.latency_ms)
        for i, bound in enumerate(LATENCY_BOUNDS_MS):
            g["buckets"][i] += r.latency_ms <= bound
    return groups


def stored(db: Database, table: str = "usage_daily", keys: str = "day, user_id, key_id, model"):
    width = len(keys.split(","))
    columns = ("requests, forwarded, errors, prompt_tokens, completion_tokens, total_tokens, "
               "cost_nano, latency_ms_sum, latency_ms_max, " + ", ".join(BUCKET_COLUMNS))

    def read(conn):
        out = {}
        for row in conn.execute(f"SELECT {keys}, {columns} FROM {table}"):
            values = tuple(row)
            out[values[:width]] = values[width:]
        return out

    return db.read_sync(read)


def assert_matches(table, groups):
    assert set(table) == set(groups)
    for key, g in groups.items():
        got = table[key]
        assert got[:6] == (g["requests"], g["forwarded"], g["errors"], g["prompt_tokens"],
                           g["completion_tokens"], g["total_tokens"]), key
        assert got[6] == g["cost_nano"]  # integers: exact, not approximately
        assert got[7] == pytest.approx(g["latency_ms_sum"], rel=1e-9)
        assert got[8] == g["latency_ms_max"]
        assert list(got[9:]) == g["buckets"], key


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, request):
    # Read-only for every test but the rebuild one, which must leave equal rollups behind.
    # Built once for the module, before any test's own database of the PostgreSQL pass
    # exists, so on that pass it is a database of its own on the pass's server.
    path = str(tmp_path_factory.mktemp("rollups") / "rollups.db")
    servers = request.getfixturevalue("_backend_servers")
    if servers is None:
        db = Database(path)
    else:
        from proxy.store.postgres import PostgresStore

        db = PostgresStore(servers[0].new_database(), path=path)
    db.open_sync()
    rnd = random.Random(20251126)
    records = random_records(rnd, 20_000)
    at = 0
    while at < len(records):
        size = rnd.choice((1, 7, 250, 500, 1999))
        batch = records[at:at + size]
        db.write_sync(lambda conn, b=batch: write_batch(conn, b))
        at += size
    yield db, records
    db.close_sync()


def test_incremental_rollups_equal_a_sum_over_the_raw_records(loaded):
    db, records = loaded
    assert_every_rollup_matches(db, records)


def test_rebuild_produces_the_same_rollups(loaded):
    db, records = loaded
    before = stored(db)
    db.write_sync(rebuild_rollups)
    after = stored(db)
    assert set(before) == set(after)
    for key in before:
        assert before[key][:6] == after[key][:6] and before[key][8:] == after[key][8:]
        assert before[key][6] == pytest.approx(after[key][6], rel=1e-9)
    assert_every_rollup_matches(db, records)


def test_p95_lies_in_the_bucket_of_the_exact_nearest_rank_value(loaded):
    db, records = loaded
    by_model = defaultdict(list)
    for r in records:
        by_model[r.served_model].append(r.latency_ms)
    result = db.read_sync(lambda conn: usage_stats(conn, StatsQuery("2000-01-01", "2100-01-01", "model")))
    assert {row["model"] for row in result["data"]} == set(MODELS)
    for row in result["data"]:
        latencies = sorted(by_model[row["model"]])
        exact = latencies[math.ceil(0.95 * len(latencies)) - 1]
        estimate = row["latency_ms_p95"]
        bucket = bisect.bisect_left(LATENCY_BOUNDS_MS, exact)
        lower = 0.0 if bucket == 0 else LATENCY_BOUNDS_MS[bucket - 1]
        upper = LATENCY_BOUNDS_MS[bucket] if bucket < len(LATENCY_BOUNDS_MS) else max(latencies)
        assert lower <= estimate <= upper, (row["model"], exact, estimate)
        assert row["latency_ms_mean"] == pytest.approx(sum(latencies) / len(latencies), rel=1e-9)
        assert row["latency_ms_max"] == latencies[-1]


def test_percentile_edge_cases():
    bounds = len(LATENCY_BOUNDS_MS)
    assert estimate_percentile(0.95, 0, [0] * bounds, 0.0) is None
    # Everything above the last bound: the open bucket ends at the observed max.
    assert estimate_percentile(1.0, 4, [0] * bounds, 400_000.0) == 400_000.0
    # One sample of 10 ms sits in the first bucket, whose top is capped by the max.
    assert estimate_percentile(0.95, 1, [1] * bounds, 7.0) == 7.0


def test_window_totals_cover_today_and_this_month_only(loaded):
    db, records = loaded
    today, month = day_of(NOW), day_of(NOW)[:7]
    expected = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for r in records:
        day = day_of(r.ts)
        if not (day.startswith(month) and day <= today):
            continue
        for scope, ident in (("user", r.user_id), ("key", r.key_id)):
            if ident is None:
                continue
            acc = expected[(scope, ident)]
            forwarded = int(r.upstream is not None)
            if day == today:
                acc[0] += forwarded
                acc[1] += r.total_tokens
            acc[2] += forwarded
            acc[3] += r.total_tokens
            acc[4] += r.cost_nano / 1e9
    totals = db.read_sync(lambda conn: window_totals(conn, NOW))
    got = {(t.scope, t.id): t for t in totals}
    assert set(got) == set(expected)
    for ident, (req_day, tok_day, req_month, tok_month, cost) in expected.items():
        t = got[ident]
        assert (t.day, t.month) == (today, month)
        assert (t.requests_day, t.tokens_day, t.requests_month, t.tokens_month) == (
            req_day, tok_day, req_month, tok_month)
        assert t.cost_month == pytest.approx(cost, rel=1e-9)


async def test_key_stats_all_time_and_last_30_days(loaded):
    db, records = loaded
    since = day_of(NOW - 29 * DAY)
    expected = {k: {"requests": 0, "tokens": 0, "cost": 0.0, "r30": 0, "t30": 0, "last": None}
                for k in (1, 2, 3)}
    for r in records:
        if r.user_id != 3 or r.key_id not in expected:
            continue
        e = expected[r.key_id]
        e["requests"] += 1
        e["tokens"] += r.total_tokens
        e["cost"] += r.cost_nano / 1e9
        if day_of(r.ts) >= since:
            e["r30"] += 1
            e["t30"] += r.total_tokens
        e["last"] = r.ts if e["last"] is None else max(e["last"], r.ts)
    # Key 99 has no usage at all.
    result = await key_stats(db, 3, [1, 2, 3, 99], now=NOW)
    assert set(result) == {1, 2, 3, 99}
    for key_id, e in expected.items():
        got = result[key_id]
        assert (got["requests"], got["tokens"]) == (e["requests"], e["tokens"])
        assert got["cost"] == pytest.approx(e["cost"], rel=1e-9)
        assert (got["last_30d"]["requests"], got["last_30d"]["tokens"]) == (e["r30"], e["t30"])
        assert got["last_used"] == e["last"]
    assert result[99] == {"requests": 0, "tokens": 0, "cost": 0.0,
                          "last_30d": {"requests": 0, "tokens": 0, "cost": 0.0}, "last_used": None}


@pytest.mark.sqlite_only("upgrades a SQLite file of a schema older than PostgreSQL support")
def test_coarser_rollups_are_backfilled_from_existing_daily_rollups(tmp_path):
    import sqlite3

    import sqlite_utils

    from proxy.usage import schema

    conn = sqlite3.connect(str(tmp_path / "old.db"), isolation_level=None)
    db = sqlite_utils.Database(conn)
    schema.migrations.apply(db, stop_before="m002_daily_model_rollup")
    records = random_records(random.Random(7), 2_000)
    conn.execute("BEGIN")
    _insert_as_the_old_schema_did(conn, records)
    conn.execute("COMMIT")
    schema.migrations.apply(db)
    for table, keys, key in (("usage_daily_model", "day, model", coarse),
                             ("usage_daily_key", "day, user_id, key_id", by_key)):
        width = len(keys.split(","))
        got = {}
        for row in conn.execute(f"SELECT {keys}, requests, total_tokens, latency_ms_max, "
                                f"{BUCKET_COLUMNS[-1]} FROM {table}"):
            got[row[:width]] = row[width:]
        expected = reference(records, key)
        assert got == {k: (g["requests"], g["total_tokens"], g["latency_ms_max"], g["buckets"][-1])
                       for k, g in expected.items()}
    conn.close()


def _columns(conn, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


# How an old write_batch summed each counter it had, from the raw rows.
_OLD_SUMS = {
    "requests": "COUNT(*)", "forwarded": "COUNT(upstream)", "errors": "SUM(status >= 400)",
    "prompt_tokens": "SUM(prompt_tokens)", "completion_tokens": "SUM(completion_tokens)",
    "total_tokens": "SUM(total_tokens)", "cost_usd": "SUM(cost_usd)", "cost_nano": "SUM(cost_nano)",
    "latency_ms_sum": "SUM(latency_ms)", "latency_ms_max": "MAX(latency_ms)",
    "cached_tokens": "SUM(COALESCE(cached_tokens, 0))", "reasoning_tokens": "SUM(COALESCE(reasoning_tokens, 0))",
    **{f"lat_le_{b}": f"SUM(latency_ms <= {b})" for b in LATENCY_BOUNDS_MS},
}


def _insert_as_the_old_schema_did(conn, records) -> None:
    """Raw rows and the daily rollup as an earlier write_batch stored them, over the
    columns the tables have at this point of the migrations (cost as REAL USD
    before it became integer nano-dollars)."""
    columns = [c for c in _columns(conn, "usage") if c != "id"]
    rows = []
    for r in records:
        values = dict(zip(COLUMNS, r.as_row()))
        values["cost_usd"] = r.cost_nano / 1e9
        rows.append(tuple(values.get(c) for c in columns))
    conn.executemany(f"INSERT INTO usage ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", rows)
    keys = ("day", "user_id", "key_id", "model")
    counters = [c for c in _columns(conn, "usage_daily") if c not in keys]
    conn.execute(f"INSERT INTO usage_daily ({', '.join(keys)}, {', '.join(counters)}) "
                 f"SELECT date(ts, 'unixepoch'), user_id, COALESCE(key_id, 0), served_model, "
                 f"{', '.join(_OLD_SUMS[c] for c in counters)} FROM usage GROUP BY 1, 2, 3, 4")


@pytest.mark.sqlite_only("upgrades a SQLite file of a schema older than PostgreSQL support")
def test_migration_005_turns_float_costs_into_exact_nano_dollars(tmp_path):
    import sqlite3

    import sqlite_utils

    from proxy.usage import schema

    conn = sqlite3.connect(str(tmp_path / "old.db"), isolation_level=None)
    db = sqlite_utils.Database(conn)
    schema.migrations.apply(db, stop_before="m005_cost_in_nano_dollars")
    records = random_records(random.Random(11), 3_000)
    conn.execute("BEGIN")
    _insert_as_the_old_schema_did(conn, records)
    conn.execute("COMMIT")
    schema.migrations.apply(db)
    by_request = dict(conn.execute("SELECT request_id, cost_nano FROM usage"))
    assert by_request == {r.request_id: r.cost_nano for r in records}
    assert "cost_usd" not in [row[1] for row in conn.execute("PRAGMA table_info(usage_daily)")]
    got = {tuple(row[:4]): row[4] for row in conn.execute(
        "SELECT day, user_id, key_id, model, cost_nano FROM usage_daily")}
    assert got == {k: g["cost_nano"] for k, g in reference(records).items()}
    conn.close()

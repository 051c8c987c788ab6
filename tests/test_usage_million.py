"""One million usage rows: stats from the rollups equal direct SQL sums over the raw rows."""

from __future__ import annotations

import time

import pytest

from proxy.store import Database
from proxy.usage import UsageRecord, rebuild_rollups
from proxy.usage.rollup import INSERT
from proxy.usage.stats import LogsQuery, StatsQuery, logs_sql, usage_logs, usage_stats

ROWS = 1_000_000
BATCH = 100_000
START = 1_756_684_800.0  # 2025-09-01T00:00:00Z
SPAN = 90 * 86400.0
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "embed-3")
STATUSES = (200,) * 17 + (429, 500, 502)


def generated(lo: int, hi: int):
    """Spread-out but deterministic rows, as tuples in UsageRecord field order:
    arithmetic is far cheaper than `random` (and tuples than records) at this size."""
    span = SPAN / ROWS
    for i in range(lo, hi):
        h = (i * 2654435761) & 0xFFFFFFFF
        prompt = h % 3000
        completion = (h >> 12) % 900
        status = STATUSES[h % len(STATUSES)]
        user = 1 + (h >> 5) % 97  # a user's keys are their own: user * 100 + 0..2
        yield (
            START + i * span, f"r{i}", user, None if h % 11 == 0 else user * 100 + h % 3,
            "chat", "m", MODELS[(h >> 7) % len(MODELS)], None if status == 429 else "a", status,
            None, prompt, completion, prompt + completion, None, False, False,
            (prompt * 2_500 + completion * 10_000), 5.0 + (h >> 3) % 60_000 / 2.0, None, False,
            None,  # reasoning_tokens
            None,  # replay_of
            False, 0,  # cache_hit, cost_saved_nano
        )


def test_generated_rows_fit_the_record_layout():
    row = next(generated(5, 6))
    assert UsageRecord(*row).as_row() == row


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    db = Database(str(tmp_path_factory.mktemp("million") / "million.db"))
    db.open_sync()
    started = time.perf_counter()
    for lo in range(0, ROWS, BATCH):
        rows = list(generated(lo, lo + BATCH))
        db.write_sync(lambda conn, r=rows: conn.executemany(INSERT, r))
    # The same statements write_batch runs per batch, over every row at once;
    # test_usage_rollups checks that batch after batch adds up to the same.
    db.write_sync(rebuild_rollups)
    print(f"\n{ROWS} rows inserted and rolled up in {time.perf_counter() - started:.1f}s")
    yield db
    db.close_sync()


def direct(db: Database, group: str, where: str = "1", args: tuple = ()):
    sql = f"""
        SELECT {group}, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens),
               SUM(total_tokens), SUM(cost_nano) / 1e9, SUM(latency_ms), MAX(latency_ms)
        FROM usage WHERE {where} GROUP BY {group} ORDER BY {group}
    """
    return db.read_sync(lambda conn: [tuple(r) for r in conn.execute(sql, args)])


@pytest.fixture(scope="module")
def reference(million):
    """Direct sums over the raw rows, one scan grouped finely, then merged per grouping."""
    fine = direct(million, "date(ts, 'unixepoch'), served_model, key_id, user_id")
    merged = {}
    for position, name in enumerate(("day", "model", "key", "user")):
        groups: dict = {}
        for row in fine:
            acc = groups.setdefault(row[position], [0, 0, 0, 0, 0, 0.0, 0.0, 0.0])
            for i, value in enumerate(row[4:]):
                acc[i] = max(acc[i], value) if i == 7 else acc[i] + value
        merged[name] = [(k, *groups[k]) for k in sorted(groups, key=lambda k: (k is not None, k))]
    return merged


def check(result, name, expected):
    assert [row[name] for row in result["data"]] == [e[0] for e in expected]
    for row, e in zip(result["data"], expected):
        assert (row["requests"], row["errors"], row["prompt_tokens"], row["completion_tokens"],
                row["total_tokens"]) == tuple(e[1:6])
        assert row["cost_usd"] == pytest.approx(e[6], rel=1e-9)
        assert row["latency_ms_mean"] == pytest.approx(e[7] / e[1], rel=1e-9)
        assert row["latency_ms_max"] == e[8]


@pytest.mark.parametrize("group_by, name", [
    ("day", "day"), ("model", "model"), ("key", "key_id"), ("user", "user_id"),
])
def test_stats_over_a_million_rows_equal_direct_sums(million, reference, group_by, name):
    started = time.perf_counter()
    result = million.read_sync(
        lambda conn: usage_stats(conn, StatsQuery("2025-09-01", "2025-11-29", group_by)))
    print(f"\nstats group_by={group_by} over {ROWS} rows: {(time.perf_counter() - started) * 1000:.1f} ms")
    check(result, name, reference[group_by])
    total = result["total"]
    assert total["requests"] == ROWS
    assert total["total_tokens"] == sum(e[5] for e in reference["day"])
    assert total["cost_usd"] == pytest.approx(sum(e[6] for e in reference["day"]), rel=1e-9)


def test_one_users_stats_over_a_date_range_equal_direct_sums(million):
    query = StatsQuery("2025-10-05", "2025-10-20", "model", user_id=42)
    result = million.read_sync(lambda conn: usage_stats(conn, query))
    expected = direct(million, "served_model",
                      "user_id = ? AND date(ts, 'unixepoch') BETWEEN ? AND ?",
                      (42, "2025-10-05", "2025-10-20"))
    check(result, "model", expected)


@pytest.mark.parametrize("query, index", [
    (LogsQuery(limit=50), "usage_ts"),
    (LogsQuery(user_id=42, limit=50, before=(START + SPAN / 2, 500_000)), "usage_user_ts"),
    (LogsQuery(key_id=4201, since=START, until=START + SPAN, limit=50), "usage_key_ts"),
])
def test_log_pages_read_an_index_in_order_without_sorting(million, query, index):
    rows, has_more = million.read_sync(lambda conn: usage_logs(conn, query))
    assert len(rows) == 50 and has_more
    assert [(r["ts"], r["id"]) for r in rows] == sorted(((r["ts"], r["id"]) for r in rows), reverse=True)

    sql, args = logs_sql(query)
    steps = million.read_sync(lambda conn: conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall())
    text = " | ".join(str(step[-1]) for step in steps)
    assert index in text and "TEMP B-TREE" not in text, text

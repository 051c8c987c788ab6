"""The PostgreSQL store on a real server: the sqlite3 conventions its callers rely on,
monthly usage partitions, retention by dropping them, and riding out a restart."""

from __future__ import annotations

import pytest

from proxy.errors import StoreUnavailable
from proxy.store import pg_schema
from proxy.store.dialect import to_postgres
from proxy.store.postgres import PostgresStore
from proxy.usage.record import UsageRecord
from proxy.usage.rollup import write_batch

from .postgres_server import needs_postgres, postgres_server, postgres_url  # noqa: F401

pytestmark = needs_postgres

JAN = 1767225600.0  # 2026-01-01T00:00:00Z
FEB = 1769904000.0  # 2026-02-01T00:00:00Z


def test_placeholders_are_translated_outside_string_literals_only():
    assert to_postgres("SELECT '?', ? WHERE a LIKE 'x%' AND b = :name") == (
        "SELECT '?', %s WHERE a ILIKE 'x%%' AND b = %(name)s")
    assert to_postgres("SELECT MAX(a, b), MAX(c) FROM t") == "SELECT GREATEST(a, b), MAX(c) FROM t"
    assert to_postgres("SELECT CAST(x AS INTEGER)") == "SELECT CAST(x AS BIGINT)"


def test_sqlites_null_safe_is_with_a_parameter_becomes_is_distinct_from():
    assert to_postgres("UPDATE s SET r = ? WHERE id IS NOT ? AND r IS NULL") == (
        "UPDATE s SET r = %s WHERE id IS DISTINCT FROM %s AND r IS NULL")
    assert to_postgres("SELECT 1 WHERE a IS ? AND b IS NOT NULL") == (
        "SELECT 1 WHERE a IS NOT DISTINCT FROM %s AND b IS NOT NULL")


def _record(ts: float, user_id: int = 1, tokens: int = 10) -> UsageRecord:
    return UsageRecord(ts=ts, request_id=f"r{ts}", user_id=user_id, key_id=None, route="chat",
                       requested_model="m", served_model="m", upstream="a", status=200,
                       error_type=None, prompt_tokens=tokens, completion_tokens=tokens,
                       total_tokens=2 * tokens, cached_tokens=None, reasoning_tokens=None,
                       estimated=False, partial=False, cost_nano=1000, latency_ms=12.0,
                       ttfb_ms=None, stream=False)


@pytest.fixture
async def store(postgres_url, tmp_path):  # noqa: F811
    db = PostgresStore(postgres_url, path=str(tmp_path / "pg"))
    await db.open()
    yield db
    await db.close()


async def test_lastrowid_rows_by_name_and_idempotent_writes(store):
    def insert(conn):
        cur = conn.execute("INSERT INTO auth_events (kind, ref_id, at) VALUES (?, ?, ?)", ("key", 7, 1.5))
        return cur.lastrowid
    first = await store.write(insert)
    second = await store.write(insert)
    assert second == first + 1
    row = await store.read(lambda conn: conn.execute(
        "SELECT seq, kind, ref_id FROM auth_events WHERE seq = ?", (second,)).fetchone())
    assert (row["kind"], row["ref_id"], row[0]) == ("key", 7, second)
    assert dict(row) == {"seq": second, "kind": "key", "ref_id": 7}
    ran = [await store.write_once("k1", insert), await store.write_once("k1", insert)]
    assert ran == [True, False]


async def test_a_usage_batch_creates_its_month_partitions_and_rollups(store):
    records = [_record(JAN + 60), _record(JAN + 120, tokens=5), _record(FEB + 60, user_id=2)]
    await store.write(lambda conn: write_batch(conn, records))
    names = await store.read(lambda conn: [p[0] for p in pg_schema.partitions(conn, "usage")])
    assert names == ["usage_2026_01", "usage_2026_02"]
    rows = await store.read(lambda conn: conn.execute(
        "SELECT day, user_id, requests, total_tokens, cost_nano FROM usage_daily ORDER BY day").fetchall())
    assert [tuple(r) for r in rows] == [("2026-01-01", 1, 2, 30, 2000), ("2026-02-01", 2, 1, 20, 1000)]
    # Retention drops a whole month; the rollups keep its totals.
    dropped = await store.write(lambda conn: pg_schema.drop_partitions_before(
        conn, store.known_partitions, "usage", 2026, 2))
    assert dropped == ["usage_2026_01"]
    count = await store.read(lambda conn: conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
    assert count == 1
    # A later row in the dropped month gets its partition again.
    await store.write(lambda conn: write_batch(conn, [_record(JAN + 500)]))
    assert await store.read(lambda conn: conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]) == 2


async def test_writes_fail_as_store_unavailable_while_postgres_is_down_then_resume(
        store, postgres_server):  # noqa: F811
    await store.write(lambda conn: conn.execute("SELECT 1"))
    postgres_server.stop("fast")
    try:
        with pytest.raises(StoreUnavailable):
            await store.write(lambda conn: conn.execute("SELECT 1"))
        assert store.problem == "the PostgreSQL database cannot be reached"
    finally:
        postgres_server.start()
    await store.write(lambda conn: conn.execute("SELECT 1"))
    assert store.problem is None

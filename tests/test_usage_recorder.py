"""The usage recorder: batching, retries, shutdown flush, spill file, soft bound."""

from __future__ import annotations

import asyncio
import logging
import os
from types import SimpleNamespace

import orjson
import pytest
from aiohttp import web

from proxy.appkeys import CONFIG, STORE
from proxy.config.snapshot import (
    AdminSettings, AuthSettings, DatabaseSettings, HealthSettings, RetrySettings, ServerSettings,
    Snapshot,
)
from proxy.usage import UsageRecord, UsageRecorder
from proxy.appkeys import USAGE
from proxy.usage import setup as usage_setup
from proxy.usage.recorder import FIRST_BACKOFF, spill_path_for

from .db_access import WriteBlocker, execute, fail_fast_sql, on_postgres, query, settings_at, store_at

T0 = 1_764_115_200.0  # 2025-11-26T00:00:00Z


def rec(i: int, *, user: int = 1, key: int | None = 7, ts: float | None = None, **kw) -> UsageRecord:
    fields = dict(
        ts=T0 + i if ts is None else ts, request_id=f"req_{i}", user_id=user, key_id=key,
        route="chat", requested_model="gpt", served_model="gpt-4o", upstream="a", status=200,
        error_type=None, prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_nano=round(0.001 * 1e9),
        latency_ms=120.0, ttfb_ms=40.0,
    )
    fields.update(kw)
    return UsageRecord(**fields)


class CountingStore:
    """The test's real store (tests/db_access.py) that also notes each write
    transaction and wakes waiters."""

    def __init__(self, path: str) -> None:
        self._store = store_at(path)
        self.transactions = 0
        self.committed = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def write(self, fn):
        self.transactions += 1
        result = await self._store.write(fn)
        self.committed.set()
        return result


def count(path: str, sql: str = "SELECT COUNT(*) FROM usage"):
    return query(path, sql)[0]


def request_ids(path: str) -> list[str]:
    return [r for (r,) in query(path, "SELECT request_id FROM usage ORDER BY id")]


@pytest.fixture
async def db(tmp_path):
    database = CountingStore(str(tmp_path / "usage.db"))
    await database.open()
    yield database
    await database.close()


def settings(**kw):
    value = DatabaseSettings(**kw)
    return lambda: value


async def next_commit(db: CountingStore) -> None:
    db.committed.clear()
    await db.committed.wait()


async def test_a_batch_is_written_when_flush_rows_rows_wait(db):
    recorder = UsageRecorder(db, settings=settings(flush_interval=3600, flush_rows=100))
    await recorder.start()
    for i in range(99):
        recorder.record(rec(i))
    for _ in range(20):
        await asyncio.sleep(0)
    assert db.transactions == 0 and recorder.queue_depth == 99
    waiting = asyncio.ensure_future(next_commit(db))
    await asyncio.sleep(0)
    recorder.record(rec(99))
    await waiting
    assert db.transactions == 1
    assert count(db.path) == (100,)
    for i in range(100, 107):
        recorder.record(rec(i))
    await recorder.flush()
    assert db.transactions == 2 and recorder.batches == 2
    assert count(db.path) == (107,)
    assert count(db.path, "SELECT SUM(requests), SUM(total_tokens) FROM usage_daily") == (107, 107 * 15)
    await recorder.stop()


async def test_a_batch_is_written_after_the_flush_interval(db):
    recorder = UsageRecorder(db, settings=settings(flush_interval=0.001, flush_rows=1000))
    await recorder.start()
    waiting = asyncio.ensure_future(next_commit(db))
    await asyncio.sleep(0)
    for i in range(5):
        recorder.record(rec(i))
    await waiting
    assert db.transactions == 1 and count(db.path) == (5,)
    await recorder.stop()


class HeldWrites:
    """The store, with each write waiting for `release` first; `started` holds the
    loop time at which each write began."""

    def __init__(self, store) -> None:
        self._store = store
        self.release = asyncio.Event()
        self.started: list[float] = []
        self.began = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def write(self, fn):
        self.started.append(asyncio.get_running_loop().time())
        self.began.set()
        await self.release.wait()
        return await self._store.write(fn)


async def test_rows_queued_behind_a_write_longer_than_the_interval_go_at_once_after_it(db):
    """Rows that arrived while a batch took longer than flush_interval to write have
    waited an interval already: the next batch takes them when that write ends, not
    one more interval later (which a hard kill would lose on top)."""
    interval = 0.5
    store = HeldWrites(db)
    recorder = UsageRecorder(store, settings=settings(flush_interval=interval, flush_rows=1000))
    await recorder.start()
    loop = asyncio.get_running_loop()
    recorder.record(rec(0))
    first = asyncio.ensure_future(recorder.flush())  # the first batch goes at once, and is held
    await store.began.wait()
    recorder.record(rec(1))  # queued behind it
    await asyncio.sleep(store.started[0] + interval - loop.time())  # the write outlasts the interval
    store.began.clear()
    released_at = loop.time()
    store.release.set()
    await first
    await asyncio.wait_for(store.began.wait(), interval * 4)
    assert len(store.started) == 2
    assert store.started[1] - released_at < interval / 2, store.started[1] - released_at
    await recorder.flush()
    assert recorder.batches == 2 and recorder.written == 2
    await recorder.stop()


async def test_a_failed_batch_is_retried_with_backoff_and_not_duplicated(db):
    # Fail fast instead of waiting out the lock timeout while another connection holds the lock.
    await db.write(lambda conn: conn.execute(fail_fast_sql()))
    db.transactions = 0
    blocker = WriteBlocker(db.path)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 2:
            blocker.release()

    recorder = UsageRecorder(db, settings=settings(flush_interval=3600), sleep=sleep)
    await recorder.start()
    for i in range(10):
        recorder.record(rec(i))
    await recorder.flush()
    assert delays == [FIRST_BACKOFF, FIRST_BACKOFF * 2]
    assert recorder.failed_batches == 2 and recorder.batches == 1
    assert db.transactions == 3
    assert count(db.path) == (10,)
    assert count(db.path, "SELECT SUM(requests) FROM usage_daily") == (10,)
    await recorder.stop()
    blocker.close()


async def test_rows_and_rollups_of_a_batch_commit_or_roll_back_together(db):
    # A trigger makes the rollup step of the first attempt fail after its rows were inserted.
    execute(db.path, "CREATE TABLE test_gate (closed INTEGER)")
    execute(db.path, "INSERT INTO test_gate VALUES (1)")
    if on_postgres():
        execute(db.path, "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                         "IF (SELECT closed FROM test_gate) = 1 THEN "
                         "RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF; "
                         "RETURN NEW; END $$")
        execute(db.path, "CREATE TRIGGER test_refuse BEFORE INSERT ON usage_daily "
                         "FOR EACH ROW EXECUTE FUNCTION test_refuse()")
    else:
        execute(db.path, "CREATE TRIGGER test_refuse BEFORE INSERT ON usage_daily "
                         "WHEN (SELECT closed FROM test_gate) = 1 BEGIN SELECT RAISE(ABORT, 'refused'); END")

    async def sleep(delay: float) -> None:
        assert count(db.path) == (0,)  # the failed attempt left no raw rows behind
        execute(db.path, "UPDATE test_gate SET closed = 0")

    recorder = UsageRecorder(db, settings=settings(flush_interval=3600), sleep=sleep)
    await recorder.start()
    for i in range(50):
        recorder.record(rec(i))
    await recorder.flush()
    # The batch, then its row-by-row retry (a trigger's ABORT looks like a bad row), failed whole.
    assert recorder.failed_batches == 2 and recorder.rejected == 0
    assert count(db.path) == (50,)
    assert count(db.path, "SELECT SUM(requests) FROM usage_daily") == (50,)
    await recorder.stop()


async def test_shutdown_of_the_app_flushes_every_row(tmp_path, aiohttp_client):
    path = str(tmp_path / "app.db")
    snapshot = Snapshot(
        server=ServerSettings(), database=settings_at(path, flush_interval=3600, flush_rows=1_000_000),
        admin=AdminSettings(), auth=AuthSettings(), health=HealthSettings(), retry=RetrySettings(),
        upstreams=(), models={}, plans={})
    app = web.Application()
    app[CONFIG] = SimpleNamespace(current=snapshot)

    async def store(app: web.Application):
        database = store_at(path)
        await database.open()
        app[STORE] = database
        yield
        await database.close()

    async def record_some(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        for i in range(n):
            request.app[USAGE].record(rec(i, user=1 + i % 3, key=None if i % 5 == 0 else 1 + i % 4))
        return web.json_response({"queued": request.app[USAGE].queue_depth})

    app.cleanup_ctx.append(store)
    usage_setup(app)
    app.router.add_post("/record", record_some)
    client = await aiohttp_client(app)
    response = await client.post("/record?n=1234")
    assert (await response.json()) == {"queued": 1234}
    assert count(path) == (0,)  # nothing written yet: the interval is an hour
    await client.close()
    assert count(path) == (1234,)
    assert count(path, "SELECT SUM(requests), SUM(total_tokens) FROM usage_daily") == (1234, 1234 * 15)
    assert count(path, "SELECT SUM(requests) FROM usage_daily WHERE key_id = 0") == (247,)


async def test_rows_that_cannot_be_written_at_shutdown_go_to_the_spill_file_and_back(db):
    await db.write(lambda conn: conn.execute(fail_fast_sql()))
    blocker = WriteBlocker(db.path)
    spill = spill_path_for(db.path)

    async def no_wait(delay: float) -> None:
        return None

    first = UsageRecorder(db, settings=settings(flush_interval=3600), spill_path=spill,
                          drain_timeout=0, sleep=no_wait)
    await first.start()
    for i in range(5):
        first.record(rec(i))
    await first.stop()
    first.record(rec(5))  # a straggler after shutdown
    blocker.release()
    blocker.close()
    assert count(db.path) == (0,)
    with open(spill, "rb") as f:
        assert len(f.read().splitlines()) == 6

    second = UsageRecorder(db, settings=settings(flush_interval=3600), spill_path=spill)
    await second.start()
    assert second.queue_depth == 6
    second.record(rec(6))
    await second.flush()
    assert count(db.path) == (7,)
    assert count(db.path, "SELECT COUNT(DISTINCT request_id) FROM usage") == (7,)
    assert not os.path.exists(spill)
    await second.stop()


async def test_past_the_soft_bound_rows_are_kept_and_the_recorder_reports_saturation(db, caplog):
    recorder = UsageRecorder(db, settings=settings(flush_interval=3600, flush_rows=1000, queue_size=10))
    with caplog.at_level(logging.WARNING, logger="bluesminds.usage"):
        for i in range(15):
            recorder.record(rec(i))
    assert recorder.queue_depth == 15 and recorder.saturated
    assert sum("above database.queue_size=10" in r.getMessage() for r in caplog.records) == 1
    await recorder.start()
    await recorder.flush()
    assert count(db.path) == (15,)
    assert recorder.queue_depth == 0 and not recorder.saturated
    await recorder.stop()


async def test_flush_with_nothing_queued_returns_at_once(db):
    recorder = UsageRecorder(db)
    await recorder.start()
    await recorder.flush()
    await recorder.stop()
    assert db.transactions == 0


async def test_rows_the_database_refuses_are_set_aside_and_the_rest_written(db, tmp_path):
    rejected = str(tmp_path / "rejected.jsonl")
    recorder = UsageRecorder(db, settings=settings(flush_interval=3600), rejected_path=rejected)
    await recorder.start()
    recorder.record(rec(0))
    recorder.record(rec(1, served_model=None))  # NOT NULL: could never be written
    recorder.record(rec(2, ts=1e300))  # no UTC day to roll it up under
    recorder.record(rec(3))
    await recorder.flush()
    assert recorder.rejected == 2 and recorder.failed_batches == 1
    assert request_ids(db.path) == ["req_0", "req_3"]
    assert count(db.path, "SELECT SUM(requests) FROM usage_daily") == (2,)
    with open(rejected, "rb") as f:
        kept = [orjson.loads(line) for line in f]
    assert [(r["request_id"], r["served_model"]) for r in kept] == [("req_1", None), ("req_2", "gpt-4o")]
    recorder.record(rec(4))  # the queue is not stuck behind them
    await recorder.flush()
    assert count(db.path) == (3,)
    await recorder.stop()

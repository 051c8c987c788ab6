"""Usage rows under disk faults: a full database, a full disk for the spill, a cut
spill line, a crash between importing the spill and deleting it, a deleted database.

The faults are real: SQLITE_FULL from `PRAGMA max_page_count` (on PostgreSQL, a
lock that another connection holds), ENOSPC from /dev/full, short writes from a
file size limit (RLIMIT_FSIZE), an unlinked file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import sqlite3

import orjson
import pytest

from proxy.config.snapshot import DatabaseSettings
from proxy.store import Database
from proxy.usage import UsageRecord, UsageRecorder
from proxy.usage.recorder import spill_path_for
from proxy.usage.spill import append_rows, row_json

from .db_access import WriteBlocker, fail_fast_sql, on_postgres, query, store_at

T0 = 1_764_115_200.0  # 2025-11-26T00:00:00Z


def rec(i: int) -> UsageRecord:
    return UsageRecord(
        ts=T0 + i, request_id=f"req_{i}", user_id=1, key_id=7, route="chat",
        requested_model="gpt", served_model="gpt-4o", upstream="a", status=200, error_type=None,
        prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_nano=round(0.001 * 1e9), latency_ms=120.0,
        ttfb_ms=40.0)


def settings():
    value = DatabaseSettings(flush_interval=3600, flush_rows=100_000)
    return lambda: value


async def no_wait(delay: float) -> None:
    return None


def request_ids(path: str) -> list[str]:
    return [r for (r,) in query(path, "SELECT request_id FROM usage ORDER BY id")]


def sqlite_ids(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM usage ORDER BY id")]


def spill_ids(path: str) -> list[str]:
    with open(path, "rb") as f:
        return [orjson.loads(line)["request_id"] for line in f.read().splitlines()]


@pytest.fixture
async def db(tmp_path):
    database = store_at(str(tmp_path / "usage.db"))
    await database.open()
    yield database
    await database.close()


async def fill_the_database(db: Database) -> None:
    """SQLITE_FULL from here on: the file may not grow by a single page."""
    await db.write(lambda conn: conn.execute("PRAGMA max_page_count = 1"))


@pytest.fixture
async def refusing(db):
    """`db`, where every usage write fails: the SQLite file is full; PostgreSQL's usage
    table is locked by another connection, and the store does not wait for the lock."""
    if not on_postgres():
        await fill_the_database(db)
        yield db
        return
    await db.write(lambda conn: conn.execute(fail_fast_sql()))
    blocker = WriteBlocker(db.path)
    yield db
    blocker.close()


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Any write past `limit` bytes into any file of this process fails (EFBIG),
    as on a disk with that much room left. Python ignores SIGXFSZ."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.sqlite_only("fills the SQLite file to SQLITE_FULL")
async def test_sqlite_full_then_the_spill_holds_every_row_and_the_count_logged_is_exact(db, caplog):
    await fill_the_database(db)
    spill = spill_path_for(db.path)
    recorder = UsageRecorder(db, settings=settings(), spill_path=spill, drain_timeout=0,
                             sleep=no_wait)
    await recorder.start()
    for i in range(1500):
        recorder.record(rec(i))
    with caplog.at_level(logging.ERROR, logger="bluesminds.usage"):
        await recorder.stop()
    assert spill_ids(spill) == [f"req_{i}" for i in range(1500)]
    assert (recorder.spilled, recorder.unsaved_rows, recorder.written) == (1500, 0, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "database or disk is full" in errors[0]
    assert f"1500 usage rows queued; 1500 saved to {spill}, 0 not saved" in errors[0]


async def test_a_spill_to_a_full_disk_keeps_the_rows_in_memory_and_says_so(refusing, caplog):
    db = refusing
    spill = spill_path_for(db.path)
    recorder = UsageRecorder(db, settings=settings(), spill_path=spill, drain_timeout=0,
                             sleep=no_wait)
    await recorder.start()
    os.symlink("/dev/full", spill)  # every write to it: ENOSPC
    for i in range(1500):
        recorder.record(rec(i))
    with caplog.at_level(logging.ERROR, logger="bluesminds.usage"):
        await recorder.stop()
    assert (recorder.spilled, recorder.unsaved_rows, recorder.spill_failures) == (0, 1500, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert not any(" saved to " in m and "1500 saved" in m for m in errors)
    assert any("saved 0 of 1500 rows" in m and "No space left on device" in m for m in errors)
    assert any(f"1500 usage rows queued; 0 saved to {spill}, 1500 not saved" in m for m in errors)
    assert any("1500 usage rows could not be saved to the database or the spill file" in m
               for m in errors)
    # The log is the last copy: one re-importable row per line.
    dumped = [orjson.loads(m.split("unsaved usage row: ", 1)[1]) for m in errors
              if m.startswith("unsaved usage row: ")]
    assert [d["request_id"] for d in dumped] == [f"req_{i}" for i in range(1500)]

    # A straggler after shutdown is not silently lost either.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="bluesminds.usage"):
        recorder.record(rec(1500))
    assert recorder.unsaved_rows == 1501
    assert any(m.startswith("unsaved usage row: ") and "req_1500" in m
               for m in (r.getMessage() for r in caplog.records))


async def test_a_spill_cut_short_by_a_full_disk_counts_only_the_whole_rows_written(refusing, caplog):
    db = refusing
    spill = spill_path_for(db.path)
    recorder = UsageRecorder(db, settings=settings(), spill_path=spill, drain_timeout=0,
                             sleep=no_wait)
    await recorder.start()
    rows = [rec(i) for i in range(1500)]
    for r in rows:
        recorder.record(r)
    limit = 64 * 1024
    fits, size = 0, 0
    for r in rows:
        size += len(row_json(r)) + 1
        if size > limit:
            break
        fits += 1
    with caplog.at_level(logging.ERROR, logger="bluesminds.usage"), file_size_limit(limit):
        await recorder.stop()
    assert 0 < fits < 1500
    # Whole lines only (the cut one was truncated away), and exactly the ones reported.
    assert spill_ids(spill) == [f"req_{i}" for i in range(fits)]
    assert os.path.getsize(spill) == sum(len(row_json(r)) + 1 for r in rows[:fits])
    assert (recorder.spilled, recorder.unsaved_rows) == (fits, 1500 - fits)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"1500 usage rows queued; {fits} saved to {spill}, {1500 - fits} not saved" in m
               for m in errors)
    assert sum(m.startswith("unsaved usage row: ") for m in errors) == 1500 - fits


async def test_a_cut_spill_line_drops_only_itself(db, caplog):
    spill = spill_path_for(db.path)
    assert append_rows(spill, [rec(0), rec(1)]) == (2, None)
    with open(spill, "ab") as f:
        f.write(row_json(rec(2))[:40])  # a crash mid-row: no newline
    # The next writer appends after it; its first row must not be glued to the cut one.
    assert append_rows(spill, [rec(3), rec(4)]) == (2, None)
    with open(spill, "ab") as f:
        f.write(b"[1, 2]\nnot json at all\n")
    assert append_rows(spill, [rec(5)]) == (1, None)

    recorder = UsageRecorder(db, settings=settings(), spill_path=spill)
    with caplog.at_level(logging.ERROR, logger="bluesminds.usage"):
        await recorder.start()
    assert recorder.queue_depth == 5 and recorder.spill_lines_skipped == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [m.split(" is not a usage row")[0] for m in errors] == [
        f"{spill} line 3", f"{spill} line 6", f"{spill} line 7"]
    await recorder.flush()
    assert request_ids(db.path) == ["req_0", "req_1", "req_3", "req_4", "req_5"]
    assert not os.path.exists(spill)
    with open(spill + ".corrupt", "rb") as f:
        assert f.read() == row_json(rec(2))[:40] + b"\n[1, 2]\nnot json at all\n"
    await recorder.stop()


async def test_a_crash_after_the_spill_was_written_does_not_write_it_twice(db):
    spill = spill_path_for(db.path)
    append_rows(spill, [rec(i) for i in range(3)])
    shutil.copy(spill, spill + ".copy")
    first = UsageRecorder(db, settings=settings(), spill_path=spill)
    await first.start()
    await first.flush()
    await first.stop()
    os.replace(spill + ".copy", spill)  # as if the process died before deleting it

    second = UsageRecorder(db, settings=settings(), spill_path=spill)
    await second.start()
    second.record(rec(3))
    await second.flush()
    await second.stop()
    assert request_ids(db.path) == ["req_0", "req_1", "req_2", "req_3"]
    assert not os.path.exists(spill)


@pytest.mark.sqlite_only("deletes the SQLite file under the recorder")
async def test_a_deleted_database_keeps_rows_in_memory_then_spills_them_at_once(tmp_path, caplog):
    db = Database(str(tmp_path / "usage.db"))
    await db.open()
    spill = spill_path_for(db.path)
    failed = asyncio.Event()
    resume = asyncio.Event()

    async def sleep(delay: float) -> None:
        failed.set()
        await resume.wait()

    # drain_timeout is long: no wait can bring a deleted file back, so none is made.
    recorder = UsageRecorder(db, settings=settings(), spill_path=spill, drain_timeout=3600,
                             sleep=sleep)
    await recorder.start()
    for i in range(10):
        recorder.record(rec(i))
    await recorder.flush()
    with sqlite3.connect(db.path) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    keep = db.path + ".keep"
    os.link(db.path, keep)
    os.remove(db.path)

    with caplog.at_level(logging.ERROR):
        for i in range(10, 25):
            recorder.record(rec(i))
        flushing = asyncio.ensure_future(recorder.flush())
        await asyncio.wait_for(failed.wait(), 10)
        assert recorder.queue_depth == 15 and recorder.written == 10
        assert recorder.store_problem == "the database file was deleted while the gateway was running"
        resume.set()
        await asyncio.wait_for(recorder.stop(), 10)
    await flushing  # released by the stop, not left hanging
    await db.close()
    assert spill_ids(spill) == [f"req_{i}" for i in range(10, 25)]
    assert os.path.getsize(db.path + "-wal") == 0  # nothing went into the unlinked inode
    assert sqlite_ids(keep) == [f"req_{i}" for i in range(10)]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("usage batch of 15 rows failed (the database file was deleted" in m for m in errors)
    assert any(f"15 usage rows queued; 15 saved to {spill}, 0 not saved" in m for m in errors)

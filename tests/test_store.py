"""The store: one writer, explicit migration sets, idempotent writes, and a deleted file noticed."""

from __future__ import annotations

import logging
import os
import sqlite3

import pytest
import sqlite_utils

from proxy.errors import StoreUnavailable
from proxy.store import Database, Store, gateway_migrations


@pytest.fixture
async def db(tmp_path):
    database = Database(str(tmp_path / "store.db"))
    await database.open()
    yield database
    await database.close()


def tables(path: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_database_is_a_store(db):
    assert isinstance(db, Store)


def test_migration_sets_are_listed_not_registered_by_import():
    assert [m.name for m in gateway_migrations()] == [
        "bluesminds.store", "bluesminds.auth", "bluesminds.usage", "bluesminds.webhooks", "bluesminds.responses",
        "bluesminds.billing", "bluesminds.capture", "bluesminds.cache"]


async def test_a_database_applies_exactly_the_sets_it_is_given(tmp_path):
    only = sqlite_utils.Migrations("test.only")

    @only()
    def m001(db):
        db.execute("CREATE TABLE only_this (x)")

    database = Database(str(tmp_path / "one.db"), migrations=[only])
    await database.open()
    await database.close()
    assert tables(database.path) - {"_sqlite_migrations"} == {"only_this"}


async def test_by_default_every_gateway_table_exists_whatever_was_imported(db):
    assert {"users", "api_keys", "usage", "usage_daily", "idempotency_keys"} <= tables(db.path)


async def test_write_once_runs_a_keyed_transaction_at_most_once(db):
    await db.write(lambda conn: conn.execute("CREATE TABLE charges (n INTEGER)"))
    insert = lambda conn: conn.execute("INSERT INTO charges VALUES (1)")  # noqa: E731
    assert await db.write_once("evt_1", insert) is True
    assert await db.write_once("evt_1", insert) is False
    assert await db.write_once("evt_2", insert) is True
    assert await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM charges").fetchone()[0]) == 2


async def test_write_once_that_fails_records_no_key(db):
    def boom(conn):
        raise ValueError("no")

    with pytest.raises(ValueError):
        await db.write_once("evt_1", boom)
    assert await db.write_once("evt_1", lambda conn: None) is True


@pytest.mark.sqlite_only("deletes the SQLite file under the writer")
async def test_a_deleted_database_file_refuses_writes_and_says_why(tmp_path, caplog):
    db = Database(str(tmp_path / "store.db"))
    await db.open()
    await db.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    with sqlite3.connect(db.path) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL is empty from here on
    keep = db.path + ".keep"
    os.link(db.path, keep)  # the test's window into the inode the writer holds
    os.remove(db.path)
    with caplog.at_level(logging.ERROR, logger="bluesminds.store"):
        for _ in range(3):
            with pytest.raises(StoreUnavailable) as caught:
                await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
    assert caught.value.status == 503 and caught.value.code == "store_unavailable"
    assert db.path not in caught.value.message
    assert db.problem == "the database file was deleted while the gateway was running"
    assert db.refused_writes == 3
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1 and db.path in logged[0] and "refusing every write" in logged[0]
    await db.close()
    # Nothing went into the unlinked inode: its WAL got no frame.
    assert os.path.getsize(db.path + "-wal") == 0
    with sqlite3.connect(keep) as conn:
        assert conn.execute("SELECT group_concat(n) FROM t").fetchone() == ("1",)


@pytest.mark.sqlite_only("deletes the SQLite file before a reader opens")
async def test_a_reader_opened_after_the_file_is_deleted_refuses_and_creates_no_empty_file(tmp_path):
    db = Database(str(tmp_path / "store.db"))
    await db.open()  # no read yet: every reader connection opens after the deletion
    await db.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    keep = db.path + ".keep"
    os.link(db.path, keep)
    os.remove(db.path)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await db.read(lambda conn: conn.execute("SELECT n FROM t").fetchall())
        assert caught.value.status == 503 and caught.value.code == "store_unavailable"
        assert db.path not in caught.value.message
        assert not os.path.exists(db.path)  # an empty database here would hide every table
    finally:
        await db.close()


@pytest.mark.sqlite_only("deletes and restores the SQLite file's inode")
async def test_writes_resume_when_the_same_file_is_back(db):
    await db.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    keep = db.path + ".keep"
    os.link(db.path, keep)
    os.remove(db.path)
    with pytest.raises(StoreUnavailable):
        await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    os.link(keep, db.path)
    await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
    assert db.problem is None
    assert await db.read(lambda conn: conn.execute("SELECT group_concat(n) FROM t").fetchone()[0]) == "2"


@pytest.mark.sqlite_only("replaces the SQLite file under the writer")
async def test_a_replaced_database_file_refuses_writes(db):
    os.remove(db.path)
    with sqlite3.connect(db.path) as other:
        other.execute("CREATE TABLE impostor (x)")
    with pytest.raises(StoreUnavailable):
        await db.write(lambda conn: None)
    assert db.problem == "the database file was replaced by another file while the gateway was running"


@pytest.mark.sqlite_only("SQLite's :memory: database")
async def test_an_in_memory_database_has_no_file_to_check():
    database = Database(":memory:")
    await database.open()
    await database.write(lambda conn: conn.execute("CREATE TABLE t (n)"))
    assert database.problem is None
    await database.close()

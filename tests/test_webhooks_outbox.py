"""The outbox seam: an event exists exactly when the transaction that emitted it committed."""

from __future__ import annotations

import sqlite3

import pytest

from proxy.store import Database
from proxy.webhooks.outbox import emit

from .db_access import query, store_at


async def _db(tmp_path) -> Database:
    db = store_at(str(tmp_path / "gw.db"))
    await db.open()
    return db


def _events(path: str) -> list[tuple]:
    return query(path, "SELECT type, account_id, data, created_at FROM webhook_events ORDER BY created_at")


async def test_an_event_commits_with_the_change_that_caused_it(tmp_path):
    db = await _db(tmp_path)
    try:
        await db.write(lambda conn: emit(conn, "key.created", {"key_id": 7}, now=100.0, account_id=3))
        assert _events(db.path) == [("key.created", 3, '{"key_id":7}', 100.0)]
    finally:
        await db.close()


async def test_an_event_in_a_transaction_that_fails_is_never_recorded(tmp_path):
    db = await _db(tmp_path)

    def change_then_fail(conn):
        emit(conn, "key.revoked", {"key_id": 7}, now=100.0, account_id=3)
        raise RuntimeError("the change itself failed")

    try:
        with pytest.raises(RuntimeError):
            await db.write(change_then_fail)
        assert _events(db.path) == []
    finally:
        await db.close()


async def test_the_same_event_id_twice_is_one_event(tmp_path):
    db = await _db(tmp_path)
    try:
        for _ in range(2):
            await db.write(lambda conn: emit(conn, "payment.succeeded", {"payment_id": 1}, now=5.0,
                                             account_id=1, event_id="evt_fixed"))
        assert len(_events(db.path)) == 1
    finally:
        await db.close()


@pytest.mark.parametrize("event_type, account_id, problem", [
    ("key.exploded", 1, "unknown webhook event type"),
    ("upstream.down", 1, "account_id must be None"),
    ("key.created", None, "account_id must be given"),
])
def test_emit_refuses_what_no_endpoint_could_receive(event_type, account_id, problem):
    conn = sqlite3.connect(":memory:")
    with pytest.raises(ValueError, match=problem):
        emit(conn, event_type, {}, now=0.0, account_id=account_id)

"""`bluesminds serve` as a real process: SIGTERM loses no usage row, kill -9 at most one flush interval."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

import aiohttp
import orjson
import pytest

from proxy.fake_upstream import start_fake_upstream

from .db_access import on_postgres, query
from .gateway_harness import GatewayHarness, serve_process, upstream_entry
from .litellm_process import free_port

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
FLUSH_S = 0.1
# The kill test's bound holds while a batch writes within one interval: the default
# interval, which a loaded PostgreSQL keeps up with; killed after enough answers that
# the last two intervals' rows are a minority of them.
KILL_FLUSH_S, KILL_AFTER = 0.25, 600


async def _load_until(url: str, key: str, stop_after: int, action) -> list[float]:
    """Load with 16 clients; run `action` after `stop_after` answers; return each answer's time."""
    answered: list[float] = []
    fired = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in range(5000):
            if fired.is_set() and len(answered) > stop_after + 200:
                return
            try:
                async with session.post(url + "/v1/chat/completions", data=CHAT,
                                        headers={"Authorization": f"Bearer {key}"}) as resp:
                    await resp.read()
                    answered.append(time.monotonic())
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # the server is gone
            if len(answered) >= stop_after and not fired.is_set():
                fired.set()
                action()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(16)))
    return answered


def _rows_and_integrity(db_path: str) -> tuple[int, str]:
    with sqlite3.connect(db_path) as conn:
        return (conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0],
                conn.execute("PRAGMA integrity_check").fetchone()[0])


def _row_count(db_path: str) -> int:
    """Usage rows; on SQLite the file must also pass its integrity check (a file of ours
    that a kill could tear; PostgreSQL's own crash safety is not under test here)."""
    if on_postgres():
        return query(db_path, "SELECT COUNT(*) FROM usage")[0][0]
    count, integrity = _rows_and_integrity(db_path)
    assert integrity == "ok"
    return count


async def _prepare(tmp_path, flush_s: float = FLUSH_S):
    fake = await start_fake_upstream(name="u")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)],
                                   database={"path": "gateway.db", "flush_interval": f"{int(flush_s * 1000)}ms"},
                                   server={"metrics": {"access": "open"}})
    from proxy.cli.accounts import create_user_and_key

    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "t@example.com", "correct horse battery",
                                                       "test", "k", bcrypt_rounds=4)
    return fake, harness


async def test_sigterm_under_load_keeps_a_row_for_every_answered_request(tmp_path):
    fake, harness = await _prepare(tmp_path)
    port = free_port()
    proc = await serve_process(harness.config_dir, port)
    try:
        answered = await _load_until(f"http://127.0.0.1:{port}", harness.key, 300,
                                     lambda: proc.send_signal(signal.SIGTERM))
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await fake.stop()
    count = _row_count(harness.db_path)
    assert count == len(answered), (count, len(answered))


async def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path):
    fake, harness = await _prepare(tmp_path, KILL_FLUSH_S)
    port = free_port()
    proc = await serve_process(harness.config_dir, port)
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(proc.pid, signal.SIGKILL)

    try:
        answered = await _load_until(f"http://127.0.0.1:{port}", harness.key, KILL_AFTER, kill)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        await fake.stop()
    count = _row_count(harness.db_path)
    lost = len(answered) - count
    # Rows still queued when the process died: answered within the last flush
    # interval (twice it, for the batch that was being written at that moment).
    recent = sum(1 for t in answered if t >= killed_at[0] - 2 * KILL_FLUSH_S)
    assert 0 <= lost <= recent, (lost, recent, len(answered))


def _spilled_ids(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [orjson.loads(line)["request_id"] for line in f.read().splitlines()]


def _db_ids(db_path: str) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM usage")]


async def _load_n(url: str, key: str, n: int) -> list[int]:
    """n requests from 8 clients; the statuses."""
    statuses: list[int] = []
    started = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal started
        while started < n:
            started += 1
            async with session.post(url + "/v1/chat/completions", data=CHAT,
                                    headers={"Authorization": f"Bearer {key}"}) as resp:
                await resp.read()
                statuses.append(resp.status)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(8)))
    return statuses


@pytest.mark.sqlite_only("fills the disk under the SQLite file")
async def test_sigterm_with_the_disk_full_accounts_for_every_row_exactly(tmp_path):
    """The disk fills while serving (a file size limit on the process: every write past
    it fails, as on a full disk), rows queue, SIGTERM: each answered request's row is in
    the database, in the spill file, or in the log as an unsaved row, and the log's
    counts are the files' counts."""
    import resource

    from proxy.store import Database
    from proxy.usage import UsageRecorder
    from proxy.usage.recorder import spill_path_for

    fake, harness = await _prepare(tmp_path)
    spill = spill_path_for(harness.db_path)
    port = free_port()
    proc = await serve_process(harness.config_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        before = await _load_n(url, harness.key, 200)
        limit = 48 * 1024  # room for about a hundred spilled rows, not for the database
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        during = await _load_n(url, harness.key, 1000)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        await fake.stop()
    assert set(before + during) == {200}
    log = stderr.decode()
    in_db, spilled = _db_ids(harness.db_path), _spilled_ids(spill)
    unsaved = [orjson.loads(line.split("unsaved usage row: ", 1)[1])["request_id"]
               for line in log.splitlines() if "unsaved usage row: " in line]
    answered = len(before) + len(during)
    assert len(in_db) + len(spilled) + len(unsaved) == answered, log[-2000:]
    assert len(set(in_db) | set(spilled) | set(unsaved)) == answered
    assert spilled and unsaved  # the disk took some rows, then no more
    queued = len(spilled) + len(unsaved)
    assert (f"{queued} usage rows queued; {len(spilled)} saved to {spill}, "
            f"{len(unsaved)} not saved") in log
    assert f"{len(unsaved)} usage rows could not be saved to the database or the spill file" in log
    assert _rows_and_integrity(harness.db_path)[1] == "ok"

    # Room again: the next start writes the spill file first.
    db = Database(harness.db_path)
    await db.open()
    recorder = UsageRecorder(db, spill_path=spill)
    await recorder.start()
    await recorder.flush()
    await recorder.stop()
    await db.close()
    assert sorted(_db_ids(harness.db_path)) == sorted(in_db + spilled)
    assert not os.path.exists(spill)


@pytest.mark.sqlite_only("deletes the SQLite file under a running gateway")
async def test_a_database_deleted_while_serving_loses_no_row_and_says_so(tmp_path):
    fake, harness = await _prepare(tmp_path)
    from proxy.usage.recorder import spill_path_for

    spill = spill_path_for(harness.db_path)
    keep = harness.db_path + ".keep"
    port = free_port()
    proc = await serve_process(harness.config_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        before = await _load_n(url, harness.key, 200)
        os.link(harness.db_path, keep)  # the operator's backup of the inode, for the count below
        os.remove(harness.db_path)
        during = await _load_n(url, harness.key, 300)
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # noticed by the next usage batch, within a flush interval
                async with session.get(url + "/healthz") as resp:
                    health = await resp.json()
                    if resp.status == 503:
                        break
                await asyncio.sleep(FLUSH_S)
            async with session.get(url + "/metrics") as resp:
                metrics = await resp.text()
        assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=20)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        await fake.stop()
    assert set(before + during) == {200}
    assert health["status"] == "degraded"
    assert health["store"] == "the database file was deleted while the gateway was running"
    assert "bluesminds_store_writable 0.0" in metrics
    log = stderr.decode()
    assert "was deleted while the gateway was running" in log and "refusing every write" in log
    assert stopped_in < 8  # no drain wait: waiting cannot bring a deleted file back
    os.replace(keep, harness.db_path)  # with its WAL, as the gateway left it
    in_db, spilled = _db_ids(harness.db_path), _spilled_ids(spill)
    assert len(in_db) + len(spilled) == 500, log[-2000:]
    assert len(set(in_db) | set(spilled)) == 500
    assert f"{len(spilled)} usage rows queued; {len(spilled)} saved to {spill}, 0 not saved" in log

"""Usage accounting: rows written per second, and query times at one million rows.

    python bench/usage_bench.py [--rows 1000000] [--recorder-rows 200000] [--db PATH]

1. record() cost on the hot path, and end-to-end rows/s through the
   UsageRecorder with the default flush settings (250 ms / 500 rows), from
   the first record() to the last row committed with its rollups.
2. write_batch rows/s at a few batch sizes (one transaction each).
3. A database of --rows rows over 90 days (97 users, 3 keys each, 5 models),
   then the time of each stats, logs, key and quota query the gateway makes.
Timings are the median of several runs of each query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.config.snapshot import DatabaseSettings  # noqa: E402
from proxy.store import Database  # noqa: E402
from proxy.usage import UsageRecord, UsageRecorder, key_stats, window_totals, write_batch  # noqa: E402
from proxy.usage.stats import LogsQuery, StatsQuery, usage_logs, usage_stats  # noqa: E402

START = 1_756_684_800.0  # 2025-09-01T00:00:00Z
SPAN = 90 * 86400.0
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "embed-3")
STATUSES = (200,) * 17 + (429, 500, 502)


def records(lo: int, hi: int, total: int):
    for i in range(lo, hi):
        h = (i * 2654435761) & 0xFFFFFFFF
        prompt, completion = h % 3000, (h >> 12) % 900
        status = STATUSES[h % len(STATUSES)]
        user = 1 + (h >> 5) % 97
        yield UsageRecord(
            START + i * (SPAN / total), f"req_{i}", user, None if h % 11 == 0 else user * 100 + h % 3,
            "chat", "alias", MODELS[(h >> 7) % len(MODELS)], None if status == 429 else "a", status,
            None, prompt, completion, prompt + completion, None, False, False,
            (prompt * 2.5 + completion * 10.0) / 1_000_000, 5.0 + (h >> 3) % 60_000 / 2.0, None, False,
        )


async def bench_recorder(path: str, rows: int) -> None:
    db = Database(path)
    await db.open()
    # A burst far above any real request rate; the soft bound is raised so it does not warn.
    recorder = UsageRecorder(db, settings=lambda: DatabaseSettings(path=path, queue_size=rows))
    await recorder.start()
    batch = list(records(0, rows, rows))
    started = time.perf_counter()
    recording = 0.0
    for lo in range(0, rows, 1000):
        t = time.perf_counter()
        for rec in batch[lo:lo + 1000]:
            recorder.record(rec)
        recording += time.perf_counter() - t
        await asyncio.sleep(0)  # let the event loop (and the flusher) run, as between requests
    await recorder.flush()
    elapsed = time.perf_counter() - started
    print(f"record(): {recording / rows * 1e6:.2f} µs per call")
    print(f"recorder end to end: {rows:,} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s "
          f"({recorder.batches} transactions, {rows / recorder.batches:,.0f} rows each)")
    await recorder.stop()
    await db.close()


def bench_batches(directory: str) -> None:
    for size in (100, 500, 2_000, 10_000):
        db = Database(os.path.join(directory, f"batch{size}.db"))
        db.open_sync()
        total = max(size * 20, 100_000)
        rows = list(records(0, total, total))
        started = time.perf_counter()
        for lo in range(0, total, size):
            chunk = rows[lo:lo + size]
            db.write_sync(lambda conn, c=chunk: write_batch(conn, c))
        elapsed = time.perf_counter() - started
        print(f"write_batch of {size:>6,} rows: {total / elapsed:,.0f} rows/s")
        db.close_sync()


def fill(path: str, rows: int) -> Database:
    db = Database(path)
    db.open_sync()
    have = db.read_sync(lambda conn: conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
    if have != rows:
        if have:
            raise SystemExit(f"{path} holds {have:,} rows, not {rows:,}; pick another --db")
        started = time.perf_counter()
        for lo in range(0, rows, 50_000):
            chunk = list(records(lo, min(lo + 50_000, rows), rows))
            db.write_sync(lambda conn, c=chunk: write_batch(conn, c))
        elapsed = time.perf_counter() - started
        print(f"filled {rows:,} rows in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s (batches of 50,000)")
    rollups = db.read_sync(lambda conn: conn.execute("SELECT COUNT(*) FROM usage_daily").fetchone()[0])
    size = os.path.getsize(path) / 1e6
    print(f"database: {rows:,} usage rows, {rollups:,} rollup rows, {size:,.0f} MB")
    return db


def timed(db: Database, label: str, fn, runs: int = 7, *, on_reader: bool = True) -> None:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        db.read_sync(fn) if on_reader else fn()
        times.append(time.perf_counter() - started)
    print(f"  {label:<58} {statistics.median(times) * 1000:8.2f} ms")


def bench_queries(db: Database) -> None:
    middle = START + SPAN / 2
    print("stats (from rollups):")
    for group in ("day", "model", "key", "user"):
        q = StatsQuery("2025-09-01", "2025-11-29", group)
        timed(db, f"admin, all users, 90 days, group_by={group}", lambda c, q=q: usage_stats(c, q))
    q = StatsQuery("2025-11-01", "2025-11-29", "day")
    timed(db, "admin, all users, 29 days, group_by=day", lambda c: usage_stats(c, q))
    for group in ("day", "model", "key"):
        q = StatsQuery("2025-09-01", "2025-11-29", group, user_id=42)
        timed(db, f"one user, 90 days, group_by={group}", lambda c, q=q: usage_stats(c, q))
    print("logs (one page of 50, newest first):")
    for label, q in (
        ("admin, everyone, first page", LogsQuery()),
        ("admin, everyone, page at mid-range cursor", LogsQuery(before=(middle, 10**9))),
        ("one user, first page", LogsQuery(user_id=42)),
        ("one user, page at mid-range cursor", LogsQuery(user_id=42, before=(middle, 10**9))),
        ("one user, one key", LogsQuery(user_id=42, key_id=4201)),
        ("one user, status=5xx", LogsQuery(user_id=42, status_min=500, status_max=599)),
        ("one user, model=gpt-4o, one week", LogsQuery(user_id=42, model="gpt-4o", since=middle,
                                                        until=middle + 7 * 86400)),
    ):
        timed(db, label, lambda c, q=q: usage_logs(c, q))
    print("others:")
    timed(db, "key_stats, 3 keys of one user",
          lambda: asyncio.run(key_stats(db, 42, [4200, 4201, 4202], now=START + SPAN)), on_reader=False)
    timed(db, "window_totals (limiter seed at startup)", lambda c: window_totals(c, START + SPAN - 3600))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--recorder-rows", type=int, default=200_000)
    parser.add_argument("--db", help="Keep the large database here (reused when it already has --rows rows).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench_recorder(os.path.join(tmp, "recorder.db"), args.recorder_rows))
        bench_batches(tmp)
        db = fill(args.db or os.path.join(tmp, "million.db"), args.rows)
        bench_queries(db)
        db.close_sync()


if __name__ == "__main__":
    main()

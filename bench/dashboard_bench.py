"""Dashboard speed at a million usage rows: every page and its data route, and Export CSV.

    python bench/dashboard_bench.py [--rows 1000000] [--runs 30] [--dir PATH]

Builds a database of --rows usage rows over 90 days, half of them one tenant's
(the worst case a tenant's pages meet) and the rest spread over 96 others, with
the rollups the gateway keeps; starts the real gateway on it (in this process,
on 127.0.0.1, with its clock at the end of the data); logs in as the tenant and
as an administrator; then times each page and API route --runs times. Times are
server time (a middleware around every handler, read with perf_counter), p50,
p95 and max in ms. Last, the administrator exports every row as CSV: rows,
seconds, and the resident memory of the process during the export.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy import server  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.cli.accounts import create_user_and_key  # noqa: E402
from proxy.store import Database  # noqa: E402
from proxy.usage import rebuild_rollups  # noqa: E402
from proxy.usage.rollup import INSERT  # noqa: E402

START = 1_756_684_800.0  # 2025-09-01T00:00:00Z
SPAN = 90 * 86400.0
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "embed-3")
STATUSES = (200,) * 17 + (429, 500, 502)
PASSWORD = "correct horse battery"
BATCH = 100_000


def generated(lo: int, hi: int, total: int):
    """Rows as tuples in UsageRecord order. User 1 (the tenant) has keys 1-3 and half the rows."""
    span = SPAN / total
    for i in range(lo, hi):
        h = (i * 2654435761) & 0xFFFFFFFF
        prompt, completion = h % 3000, (h >> 12) % 900
        status = STATUSES[h % len(STATUSES)]
        user = 1 if h % 2 == 0 else 3 + (h >> 5) % 96
        key = 1 + (h >> 9) % 3 if user == 1 else user * 100 + h % 3
        yield (START + i * span, f"req_{i}", user, key, "chat", "m", MODELS[(h >> 7) % len(MODELS)],
               None if status == 429 else "a", status, None, prompt, completion, prompt + completion,
               None, False, False, (prompt * 2.5 + completion * 10.0) / 1_000_000,
               5.0 + (h >> 3) % 60_000 / 2.0, None, False, None, None)


def build(config_dir: Path, rows: int) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    sections = {
        "server": {"host": "127.0.0.1", "port": 0, "log_level": "warning"},
        "database": {"path": "bench.db"},
        "auth": {"bcrypt_rounds": 4, "default_plan": "pro"},
        "health": {"interval": "1h"},
        "models": {m: {"pricing": {"input": 2.5, "output": 10}} for m in MODELS},
        "plans": {"pro": {"rpm": 1000, "requests_per_day": 100000, "monthly_budget_usd": 500, "models": "*"}},
        "upstreams": [{"name": "a", "url": "http://127.0.0.1:9", "models": "*"}],
    }
    (config_dir / "gateway.yaml").write_text(yaml.safe_dump(sections))
    db_path = str(config_dir / "bench.db")
    for name in ("laptop", "ci", "staging"):
        create_user_and_key(db_path, "tenant@example.com", PASSWORD, "pro", name, bcrypt_rounds=4)
    create_user_and_key(db_path, "root@example.com", PASSWORD, "pro", "ops", bcrypt_rounds=4)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE users SET role = 'admin' WHERE email = 'root@example.com'")
    db = Database(db_path)
    db.open_sync()
    started = time.perf_counter()
    for lo in range(0, rows, BATCH):
        batch = list(generated(lo, min(rows, lo + BATCH), rows))
        db.write_sync(lambda conn, b=batch: conn.executemany(INSERT, b))
    db.write_sync(rebuild_rollups)
    db.close_sync()
    print(f"{rows:,} usage rows written and rolled up in {time.perf_counter() - started:.1f} s")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def log_in(url: str, email: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Origin": url})
    async with http.post(url + "/api/auth/login", json={"email": email, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
    return http


async def run(config_dir: Path, runs: int) -> None:
    timings: list[float] = []

    @web.middleware
    async def server_time(request, handler):
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            timings.append((time.perf_counter() - started) * 1000)

    app = create_app(str(config_dir), clock=lambda: START + SPAN - 3600, watch=False)
    app.middlewares.insert(0, server_time)
    runner, port = await server.start(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    tenant, admin = await log_in(url, "tenant@example.com"), await log_in(url, "root@example.com")
    try:
        async with tenant.get(url + "/api/usage/logs?limit=50") as r:
            cursor = (await r.json())["next_cursor"]
        targets = [
            ("tenant", "/dashboard"), ("tenant", "/dashboard/api-keys"), ("tenant", "/dashboard/usage"),
            ("tenant", "/dashboard/usage?days=90"), ("tenant", "/dashboard/usage?key_id=2"),
            ("tenant", "/dashboard/logs"), ("tenant", "/dashboard/logs?model=gpt-4o&status=5xx"),
            ("tenant", "/dashboard/logs?key_id=3&status=429"), ("tenant", "/dashboard/logs?status=429"), ("tenant", f"/dashboard/logs?cursor={cursor}"),
            ("tenant", "/dashboard/billing"), ("tenant", "/dashboard/settings"),
            ("tenant", "/api/usage/stats?group_by=day"), ("tenant", "/api/usage/stats?group_by=model&from=2025-09-01"),
            ("tenant", "/api/usage/stats?group_by=key"), ("tenant", "/api/usage/stats?key_id=2"),
            ("tenant", "/api/usage/logs"), ("tenant", "/api/usage/logs?model=gpt-4o&status=5xx"),
            ("tenant", "/api/keys"), ("tenant", "/api/auth/sessions"),
            ("admin", "/dashboard"), ("admin", "/dashboard/usage?days=90"), ("admin", "/dashboard/logs"),
            ("admin", "/dashboard/logs?status=502"), ("admin", "/dashboard/logs?status=503"),
            ("admin", "/dashboard/admin"),
            ("admin", "/api/usage/stats?group_by=key"), ("admin", "/api/admin/users"),
            ("admin", "/api/admin/health"),
        ]
        print(f"\n{'who':7} {'route':52} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        worst = 0.0
        for who, path in targets:
            http = tenant if who == "tenant" else admin
            timings.clear()
            for _ in range(runs):
                async with http.get(url + path) as r:
                    await r.read()
                    assert r.status == 200, (path, r.status)
            ordered = sorted(timings)
            p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
            worst = max(worst, p95)
            print(f"{who:7} {path[:52]:52} {statistics.median(ordered):8.1f} {p95:8.1f} {ordered[-1]:8.1f}")
        print(f"worst p95: {worst:.1f} ms")

        before = rss_mb()
        peak, size, lines = before, 0, 0
        started = time.perf_counter()
        async with admin.get(url + "/dashboard/logs/export.csv") as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 16):
                size += len(chunk)
                lines += chunk.count(b"\n")
                peak = max(peak, rss_mb())
        seconds = time.perf_counter() - started
        print(f"\nExport CSV, every row as the admin: {lines - 1:,} rows, {size / 2**20:.0f} MiB in "
              f"{seconds:.1f} s; RSS {before:.0f} MiB before, {peak:.0f} MiB at most during")
    finally:
        await tenant.close()
        await admin.close()
        await runner.cleanup()


def static_weight() -> None:
    import gzip
    root = Path(__file__).resolve().parent.parent / "proxy" / "dashboard" / "static"
    total = gz = 0
    print("\nstatic file                    bytes   gzipped")
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".js", ".css")):
        body = path.read_bytes()
        total, gz = total + len(body), gz + len(gzip.compress(body, 9))
        print(f"{path.relative_to(root).as_posix():28} {len(body):7,} {len(gzip.compress(body, 9)):9,}")
    print(f"{'all JS and CSS':28} {total:7,} {gz:9,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--dir", help="keep the config and database here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(args.dir or tmp) / "config"
        if not (config_dir / "bench.db").exists():
            build(config_dir, args.rows)
        asyncio.run(run(config_dir, args.runs))
    static_weight()


if __name__ == "__main__":
    main()

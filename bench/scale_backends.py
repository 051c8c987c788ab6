"""SQLite+memory against PostgreSQL+Redis, `--workers 1` and `--workers 2`, next to the bare proxy.

    python -m bench.scale_backends [--seconds 2] [--rounds 2] [--connections 32] [--admits 2000] [--json]

Starts a redis-server, a PostgreSQL (initdb into a temporary directory, as the
`postgres` user when root, fsync off), the fake upstream, the bare proxy and
five gateways at once, then alternates the wrk loads over them round after
round (the machine may be busy with other work: alternating spreads that over
every target alike) and reports the median of the rounds:

    bare                 the aiohttp floor (bench/bare_proxy.py)
    sqlite+memory w1     the single-node default
    sqlite+redis w2      two workers on SQLite (N > 1 needs the shared limiter)
    postgres+redis w1
    postgres+redis w2

For each: requests/s, p50/p99, and gateway CPU per request (every process of
the target, from /proc), which is what the README's 10,000 req/s estimate is
built on. Then one Redis admission's latency (admit + settle, sequential).
Bounded: about (targets x rounds x (seconds + 0.5)) + start-up, under 60 s at
the defaults. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from . import wrk
from .procs import ProcessSet, cpu_seconds
from .scale_workers import _free_port, _wait_port, admission_latency

PLAN = {"rpm": 10**8, "tpm": 10**11, "requests_per_day": 10**9, "monthly_budget_usd": 10**6, "models": "*"}


def _pg_bindir() -> str:
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def start_postgres(procs: ProcessSet, work: str) -> str:
    """A throwaway server under `work`; its URL. Stopped with the ProcessSet."""
    bindir = _pg_bindir()
    home = os.path.join(work, "pg")
    os.makedirs(home)
    as_postgres = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    if as_postgres:
        shutil.chown(work, "postgres", "postgres")
        shutil.chown(home, "postgres", "postgres")
    data = os.path.join(home, "data")
    subprocess.run([*prefix, os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--locale=C.UTF-8"], check=True, capture_output=True, timeout=120)
    port = _free_port()
    procs.spawn("postgres", [*prefix, os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
                             "-h", "127.0.0.1", "-k", home, "-c", "fsync=off", "-c", "synchronous_commit=off",
                             "-c", "max_connections=100"])
    _wait_port(port)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _config(directory: str, upstream: str, *, database: dict, limits: str) -> None:
    os.makedirs(directory)
    config = {
        "server": {"host": "127.0.0.1", "log_level": "warning", "access_log": False},
        "database": {"path": "gateway.db", **database},
        "auth": {"bcrypt_rounds": 4, "default_plan": "bench"},
        "health": {"interval": "1h"},
        "limits": {"backend": limits},
        "models": {"gpt-4o-mini": {"pricing": {"input": 0.15, "output": 0.6}}},
        "plans": {"bench": PLAN},
        "upstreams": [{"name": "fake", "url": upstream, "models": "*"}],
    }
    with open(os.path.join(directory, "gateway.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)


def _create_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + "/" + name


def start_targets(procs: ProcessSet, work: str, upstream: str, redis_url: str, pg_url: str) -> dict:
    from proxy.cli.accounts import create_user_and_key
    from proxy.config.build import load_config

    shapes = [("sqlite+memory w1", 1, {}, "memory"),
              ("sqlite+redis w2", 2, {}, redis_url),
              ("postgres+redis w1", 1, {"url": _create_database(pg_url, "bench_w1")}, redis_url),
              ("postgres+redis w2", 2, {"url": _create_database(pg_url, "bench_w2")}, redis_url)]
    targets = {}
    bare_port = _free_port()
    bare = procs.spawn("bare", [sys.executable, "-m", "bench.bare_proxy", "--port", str(bare_port),
                                "--upstream", upstream])
    targets["bare"] = {"url": f"http://127.0.0.1:{bare_port}", "auth": "Bearer x", "proc": bare}
    for index, (name, workers, database, limits) in enumerate(shapes):
        cfg = os.path.join(work, f"cfg{index}")
        _config(cfg, upstream, database=database, limits=limits)
        _, key = create_user_and_key(load_config(cfg).database, "bench@example.com", "correct horse battery",
                                     "bench", "bench", bcrypt_rounds=4)
        port = _free_port()
        proc = procs.spawn(f"gateway{index}", [sys.executable, "-m", "proxy", "serve", "--config", cfg,
                                               "--port", str(port), "--workers", str(workers)])
        targets[name] = {"url": f"http://127.0.0.1:{port}", "auth": f"Bearer {key}", "proc": proc,
                         "workers": workers}
    for target in targets.values():
        _wait_port(int(target["url"].rsplit(":", 1)[1]), 60)
    return targets


def measure(targets: dict, work: str, *, seconds: float, rounds: int, connections: int) -> dict:
    scripts = {name: wrk.write_script(work, f"chat-{i}", wrk.CHAT_BODY, t["auth"])
               for i, (name, t) in enumerate(targets.items())}
    for name, target in targets.items():  # warm-up: each worker has seen traffic and cached the key
        wrk.run(target["url"] + "/v1/chat/completions", scripts[name], connections=connections, seconds=1)
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            before = cpu_seconds(target["proc"].pid)
            result = wrk.run(target["url"] + "/v1/chat/completions", scripts[name],
                             connections=connections, seconds=seconds)
            used = cpu_seconds(target["proc"].pid) - before
            runs[name].append({"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                               "non_2xx": result.non_2xx + result.socket_errors,
                               "cpu_us_per_request": used / max(result.requests, 1) * 1e6})
    return {name: {key: statistics.median(r[key] for r in got) if key != "non_2xx" else sum(r[key] for r in got)
                   for key in got[0]} for name, got in runs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--admits", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="One JSON line at the end, for bench/run.py.")
    args = parser.parse_args(argv)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="bm-backends-")
    try:
        with ProcessSet(work) as procs:
            redis_port = _free_port()
            procs.spawn("redis", [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", work])
            _wait_port(redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            pg_url = start_postgres(procs, work)
            fake_port = _free_port()
            procs.spawn("fake", [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(fake_port)])
            _wait_port(fake_port)
            targets = start_targets(procs, work, f"http://127.0.0.1:{fake_port}", redis_url, pg_url)
            figures = measure(targets, work, seconds=args.seconds, rounds=args.rounds,
                              connections=args.connections)
            latency = asyncio.run(admission_latency(redis_url, args.admits))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"targets": figures, "admission": latency, "connections": args.connections,
              "seconds": args.seconds, "rounds": args.rounds, "wall_s": time.monotonic() - started}
    for name, f in figures.items():
        print(f"{name:18s} {f['rps']:7.0f} req/s  p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  "
              f"CPU {f['cpu_us_per_request']:5.0f} us/request  errors {f['non_2xx']}")
    print(f"one Redis admission (admit + settle): p50 {latency['redis_p50_us']:.0f} us, "
          f"p99 {latency['redis_p99_us']:.0f} us; in-process p50 {latency['memory_p50_us']:.1f} us")
    print(f"wall time {result['wall_s']:.1f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

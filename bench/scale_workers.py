"""More than one process: the cost of a Redis admission, and `--workers 1` vs `--workers 2`.

    python -m bench.scale_workers [--seconds 5] [--connections 64] [--admits 2000]

1. Redis admission latency: one `RedisLimiter.admit` (one EVALSHA round trip
   plus the wording of its answer) and its settle, sequentially against a
   local redis-server; p50 and p99 over `--admits` calls, next to the
   in-process limiter's admit for scale.
2. Requests/s of `bluesminds serve --workers N` with limits.backend: redis,
   N = 1 and 2, driven by wrk for `--seconds` against the fake upstream.

Every process it starts (redis-server, the fake upstream, the gateways) listens
on 127.0.0.1 and is stopped by PID at the end; each load run is bounded in
time by wrk's -d.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from . import wrk
from .procs import ProcessSet


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, seconds: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # a process start has no event to await
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def admission_latency(redis_url: str, admits: int) -> dict[str, float]:
    from proxy.auth.principal import Principal
    from proxy.config.snapshot import PlanConfig
    from proxy.limits import Limiter
    from proxy.limits.redis_backend import RedisLimiter

    plan = PlanConfig(name="bench", rpm=10**9, tpm=10**12, requests_per_day=10**9,
                      monthly_budget_usd=10**6, max_concurrent=10**6)
    principal = Principal(user_id=1, key_id=1, plan="bench")
    limiter = RedisLimiter(redis_url, grace=0.0)
    await limiter.start()
    times = []
    try:
        for _ in range(admits):
            t0 = time.perf_counter()
            hold = await limiter.admit(principal, plan, estimated_tokens=100, estimated_cost=0.001)
            times.append(time.perf_counter() - t0)
            await limiter.finish(hold, "settle", 80, 0.0008)
    finally:
        await limiter.close()
    memory = Limiter()
    local = []
    for _ in range(admits):
        t0 = time.perf_counter()
        r = memory.admit(principal, plan, estimated_tokens=100, estimated_cost=0.001)
        local.append(time.perf_counter() - t0)
        memory.settle(r, tokens=80, cost=0.0008)
    return {"redis_p50_us": _percentile(times, 0.5) * 1e6, "redis_p99_us": _percentile(times, 0.99) * 1e6,
            "redis_mean_us": statistics.fmean(times) * 1e6,
            "memory_p50_us": _percentile(local, 0.5) * 1e6, "memory_p99_us": _percentile(local, 0.99) * 1e6}


def _write_config(directory: str, redis_url: str, upstream_url: str) -> None:
    config = {
        "server": {"host": "127.0.0.1", "log_level": "warning", "access_log": False},
        "database": {"path": "gateway.db"},
        "auth": {"bcrypt_rounds": 4, "default_plan": "bench"},
        "health": {"interval": "1h"},
        "limits": {"backend": redis_url},
        "models": {"gpt-4o-mini": {"pricing": {"input": 0.15, "output": 0.6}},
                   "text-embedding-3-small": {"kind": "embedding", "pricing": {"input": 0.02, "output": 0}}},
        "plans": {"bench": {"rpm": 10**8, "tpm": 10**11, "requests_per_day": 10**9,
                            "monthly_budget_usd": 10**6, "models": "*"}},
        "upstreams": [{"name": "fake", "url": upstream_url, "models": "*"}],
    }
    with open(os.path.join(directory, "gateway.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)


def workers_rps(procs: ProcessSet, work: str, redis_url: str, upstream_url: str, workers: int,
                *, seconds: float, connections: int) -> wrk.WrkResult:
    from proxy.cli.accounts import create_user_and_key

    cfg = os.path.join(work, f"cfg{workers}")
    os.makedirs(cfg)
    _write_config(cfg, redis_url, upstream_url)
    _, key = create_user_and_key(os.path.join(cfg, "gateway.db"), "bench@example.com", "correct horse battery",
                                 "bench", "bench", bcrypt_rounds=4)
    port = _free_port()
    gateway = procs.spawn(f"gateway-w{workers}", [sys.executable, "-m", "proxy", "serve", "--config", cfg,
                                                  "--port", str(port), "--workers", str(workers)])
    try:
        _wait_port(port)
        script = wrk.write_script(work, f"chat-w{workers}", wrk.CHAT_BODY, f"Bearer {key}")
        wrk.run(f"http://127.0.0.1:{port}/v1/chat/completions", script, connections=connections,
                seconds=1)  # warm-up: every worker has seen traffic
        return wrk.run(f"http://127.0.0.1:{port}/v1/chat/completions", script, connections=connections,
                       seconds=seconds)
    finally:
        procs.stop(gateway)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--admits", type=int, default=2000)
    args = parser.parse_args(argv)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    work = tempfile.mkdtemp(prefix="bm-scale-")
    with ProcessSet(work) as procs:
        redis_port = _free_port()
        procs.spawn("redis", [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", work])
        _wait_port(redis_port)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        latency = asyncio.run(admission_latency(redis_url, args.admits))
        print(f"admission latency over {args.admits} sequential admits: "
              f"redis p50 {latency['redis_p50_us']:.0f} us, p99 {latency['redis_p99_us']:.0f} us; "
              f"in-process p50 {latency['memory_p50_us']:.1f} us, p99 {latency['memory_p99_us']:.1f} us")
        fake_port = _free_port()
        procs.spawn("fake", [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(fake_port)])
        _wait_port(fake_port)
        upstream = f"http://127.0.0.1:{fake_port}"
        for workers in (1, 2):
            subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"], capture_output=True, check=False)
            result = workers_rps(procs, work, redis_url, upstream, workers, seconds=args.seconds,
                                 connections=args.connections)
            print(f"--workers {workers} (limits in Redis): {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                  f"p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

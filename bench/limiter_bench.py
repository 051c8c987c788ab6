"""Micro-benchmark: µs per admit + headers + settle on the limiter's hot path.

    python bench/limiter_bench.py [requests]

Replays a few shapes of traffic against realistic limits (rpm in the
thousands, tpm in the millions) with a clock that moves 1 ms per request, so
buckets drain and refill, reset headers vary from request to request, and
nothing is refused: this is the path every admitted request takes.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.auth.principal import KeyLimits, Principal  # noqa: E402
from proxy.config.snapshot import PlanConfig  # noqa: E402
from proxy.limits import Limiter  # noqa: E402

START = 1_795_000_000.0  # a Tuesday in November 2026, UTC
STEP = 0.001  # clock advance per clock read


def scenarios():
    rate_only = PlanConfig(name="rate", rpm=600_000, tpm=900_000_000)
    everything = PlanConfig(
        name="full", rpm=600_000, tpm=900_000_000, requests_per_day=10**9, tokens_per_day=10**12,
        requests_per_month=10**10, tokens_per_month=10**13, monthly_budget_usd=10**6,
        max_concurrent=100,
    )
    shared = PlanConfig(name="shared", rpm=600_000, tpm=900_000_000, per_user=True,
                        requests_per_day=10**9)
    tight = KeyLimits(rpm=300_000, tokens_per_day=10**12)
    yield "rpm+tpm, one key", rate_only, [Principal(user_id=1, key_id=1, plan="rate")]
    # A busy key near its tpm: every request leaves a different level, so the
    # reset header is a different duration each time (the formatter's cache
    # misses often).
    busy = PlanConfig(name="busy", rpm=600_000, tpm=45_000_000)
    yield "rpm+tpm, one busy key, varied sizes", busy, [
        Principal(user_id=1, key_id=1, plan="busy")]
    yield "rpm+tpm, 10k keys", rate_only, [
        Principal(user_id=i // 4, key_id=i, plan="rate") for i in range(10_000)]
    yield "all quotas + concurrency, 1k keys", everything, [
        Principal(user_id=i // 4, key_id=i, plan="full") for i in range(1_000)]
    yield "per-user plan + tighter key limits", shared, [
        Principal(user_id=i // 4, key_id=i, plan="shared", limits=tight) for i in range(1_000)]


def run(plan, principals, n: int, sizes) -> float:
    clock = itertools.count(START, STEP).__next__
    limiter = Limiter(clock=clock)
    admit, settle, headers = limiter.admit, limiter.settle, limiter.headers
    count = len(principals)
    for i in range(min(n, 20_000)):  # warm up: every key's state exists
        r = admit(principals[i % count], plan, estimated_tokens=1200, estimated_cost=0.002)
        headers(r)
        settle(r, tokens=900, cost=0.0015)
    start = time.perf_counter()
    for i in range(n):
        estimate, used = sizes[i % len(sizes)]
        r = admit(principals[i % count], plan, estimated_tokens=estimate, estimated_cost=0.002)
        headers(r)
        settle(r, tokens=used, cost=0.0015)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"python {sys.version.split()[0]}, {n} requests per scenario, best of 3")
    uniform = [(1200, 900)]
    varied = [(200 + (i * 7919) % 3000, 100 + (i * 104729) % 2500) for i in range(1000)]
    for name, plan, principals in scenarios():
        sizes = varied if "varied" in name else uniform
        best = min(run(plan, principals, n, sizes) for _ in range(3))
        print(f"{name:40s} {best:6.2f} µs per admit+headers+settle")


if __name__ == "__main__":
    main()

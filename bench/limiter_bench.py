"""Micro-benchmark: µs per admit + settle + headers on the limiter's hot path.

    python bench/limiter_bench.py [iterations]

Runs a few shapes of traffic (one key; many keys; a per-user plan with a
tighter key limit; every quota set) and prints the cost per request. The
limits are high enough that nothing is refused: this measures the path every
admitted request takes.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.auth.principal import KeyLimits, Principal  # noqa: E402
from proxy.config.snapshot import PlanConfig  # noqa: E402
from proxy.limits import Limiter  # noqa: E402

BIG = 10**12


def scenarios():
    rate_only = PlanConfig(name="rate", rpm=BIG, tpm=BIG)
    everything = PlanConfig(
        name="full", rpm=BIG, tpm=BIG, requests_per_day=BIG, tokens_per_day=BIG,
        requests_per_month=BIG, tokens_per_month=BIG, monthly_budget_usd=1e9, max_concurrent=1000,
    )
    shared = PlanConfig(name="shared", rpm=BIG, tpm=BIG, per_user=True, requests_per_day=BIG)
    tight = KeyLimits(rpm=BIG // 2, tokens_per_day=BIG)
    yield "rpm+tpm, one key", rate_only, [Principal(user_id=1, key_id=1, plan="rate")]
    yield "rpm+tpm, 10k keys", rate_only, [
        Principal(user_id=i // 4, key_id=i, plan="rate") for i in range(10_000)]
    yield "all quotas + concurrency, 1k keys", everything, [
        Principal(user_id=i // 4, key_id=i, plan="full") for i in range(1_000)]
    yield "per-user plan + tighter key", shared, [
        Principal(user_id=i // 4, key_id=i, plan="shared", limits=tight) for i in range(1_000)]


def run(plan, principals, n: int) -> float:
    limiter = Limiter()
    admit, settle, headers = limiter.admit, limiter.settle, limiter.headers
    count = len(principals)
    for i in range(min(n, 10_000)):  # warm up: create every key's state
        r = admit(principals[i % count], plan, estimated_tokens=1200, estimated_cost=0.002)
        headers(r)
        settle(r, tokens=900, cost=0.0015)
    start = time.perf_counter()
    for i in range(n):
        r = admit(principals[i % count], plan, estimated_tokens=1200, estimated_cost=0.002)
        headers(r)
        settle(r, tokens=900, cost=0.0015)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"python {sys.version.split()[0]}, {n} requests per scenario")
    for name, plan, principals in scenarios():
        best = min(run(plan, principals, n) for _ in range(3))
        print(f"{name:40s} {best:6.2f} µs per admit+headers+settle")


if __name__ == "__main__":
    main()

"""Micro-benchmark: µs per admit + headers + settle on the limiter's hot path.

    python bench/limiter_bench.py [requests]

Replays a few shapes of traffic with a clock that moves 1 ms per clock read
and limits high enough that nothing is refused: this is the path every
admitted request takes. The machine's load shows in the numbers; run it on a
quiet machine and compare best-of-3 figures only.
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
    yield "rpm+tpm, 10k keys", rate_only, [
        Principal(user_id=i // 4, key_id=i, plan="rate") for i in range(10_000)]
    yield "all quotas + concurrency, 1k keys", everything, [
        Principal(user_id=i // 4, key_id=i, plan="full") for i in range(1_000)]
    yield "per-user plan + tighter key limits", shared, [
        Principal(user_id=i // 4, key_id=i, plan="shared", limits=tight) for i in range(1_000)]


def run(plan, principals, n: int) -> float:
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
        r = admit(principals[i % count], plan, estimated_tokens=1200, estimated_cost=0.002)
        headers(r)
        settle(r, tokens=900, cost=0.0015)
    return (time.perf_counter() - start) / n * 1e6


class _NoOp:
    """The same calls doing nothing: the benchmark loop's own cost."""

    def admit(self, principal, plan, *, estimated_tokens, estimated_cost):
        return self

    def headers(self, reservation):
        return {}

    def settle(self, reservation, *, tokens, cost):
        pass


def floor(n: int) -> float:
    noop = _NoOp()
    admit, settle, headers = noop.admit, noop.settle, noop.headers
    principal, plan = Principal(user_id=1, key_id=1, plan="p"), PlanConfig(name="p")
    start = time.perf_counter()
    for _ in range(n):
        r = admit(principal, plan, estimated_tokens=1200, estimated_cost=0.002)
        headers(r)
        settle(r, tokens=900, cost=0.0015)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"python {sys.version.split()[0]}, {n} requests per scenario, best of 15")
    for name, plan, principals in scenarios():
        best = min(run(plan, principals, n) for _ in range(15))
        print(f"{name:40s} {best:6.2f} µs per admit+headers+settle")
    print(f"{'(loop with no-op calls, included above)':40s} {min(floor(n) for _ in range(15)):6.2f} µs")


if __name__ == "__main__":
    main()

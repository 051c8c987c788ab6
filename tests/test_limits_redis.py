"""What only the shared limiter has: the limits config section, hold deadlines
and their renewal, seeding from the database when Redis is empty, Redis down,
and a clock injected into the app driving it. The behaviours both backends
share are in test_limits_limiter.py."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import aiohttp
import pytest

from proxy.appkeys import LIMITER
from proxy.auth.principal import Principal
from proxy.config.build import LIMITS_BACKEND_ENV, load_config
from proxy.config.source import ConfigError
from proxy.config.snapshot import PlanConfig
from proxy.errors import LimitsUnavailable, QuotaExceeded, RateLimited
from proxy.limits import WindowTotals
from proxy.limits.redis_backend import RedisLimiter

from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import RedisServer, needs_redis, redis_server, redis_url  # noqa: F401

T0 = datetime(2026, 11, 26, 12, tzinfo=timezone.utc).timestamp()
KEY = Principal(user_id=1, key_id=10, plan="p")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_config(tmp_path, limits: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text("upstreams: [{name: a, url: 'http://127.0.0.1:9', models: '*'}]\n" + limits)
    return str(path)


# -- config ------------------------------------------------------------------------


def test_limits_default_to_memory_with_a_30s_hold(tmp_path, monkeypatch):
    # The default of a config that names no backend, not the suite's Redis pass.
    monkeypatch.delenv(LIMITS_BACKEND_ENV, raising=False)
    limits = load_config(write_config(tmp_path, "")).limits
    assert (limits.backend, limits.hold_ttl, limits.shared) == ("memory", 30.0, False)


def test_limits_backend_and_hold_ttl_are_read(tmp_path):
    limits = load_config(write_config(
        tmp_path, "limits: {backend: 'redis://10.0.0.5:6380/2', hold_ttl: 5s}\n")).limits
    assert (limits.backend, limits.hold_ttl, limits.shared) == ("redis://10.0.0.5:6380/2", 5.0, True)


@pytest.mark.parametrize("text, message", [
    ("limits: {backend: 'postgres://x'}",
     "'postgres://x' does not have the expected format (memory, or redis://host:port/db)"),
    ("limits: {backend: memory, hold_ttl: 100ms}", "must be at least 300ms"),
    ("limits: {hold_ttl: 0.1}", "0.1 is too small: it must be at least 0.3"),
    ("limits: {backend: memory, ttl: 5s}", "unknown field 'ttl' (known: backend, hold_ttl)"),
])
def test_bad_limits_are_refused_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, text + "\n"))
    assert [p.message for p in info.value.problems] == [message]


# -- holds -------------------------------------------------------------------------------


@pytest.fixture
async def make(redis_url):
    made = []

    async def make(clock=None, **kwargs) -> RedisLimiter:
        limiter = RedisLimiter(redis_url, clock=clock or Clock(), grace=0.0, **kwargs)
        await limiter.start()
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


@needs_redis
async def test_a_hold_that_is_not_renewed_expires_and_keeps_its_estimate(make):
    clock = Clock()
    limiter = await make(clock, hold_ttl=2.0)
    plan = PlanConfig(name="p", max_concurrent=1, tokens_per_day=1000)
    hold = await limiter.admit(KEY, plan, estimated_tokens=300, estimated_cost=0)
    with pytest.raises(RateLimited):
        await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    clock.now += 2.0  # the deadline itself: the slot is free
    second = await limiter.admit(KEY, plan, estimated_tokens=100, estimated_cost=0)
    # The expired hold's settle changes nothing: its 300 stay charged, once.
    await limiter.finish(hold, "settle", 10, 0.0)
    await limiter.finish(second, "settle", 100, 0.0)
    clock.now += 1
    with pytest.raises(QuotaExceeded) as info:
        await limiter.admit(KEY, plan, estimated_tokens=601, estimated_cost=0)
    assert "limit 1000, used 400, this request may use up to 601" in info.value.message


@needs_redis
async def test_renewal_keeps_a_live_hold_past_its_ttl(make):
    clock = Clock()
    limiter = await make(clock, hold_ttl=2.0)
    plan = PlanConfig(name="p", max_concurrent=1)
    hold = await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    for _ in range(5):
        clock.now += 1.5
        await limiter.renew()
    with pytest.raises(RateLimited) as info:
        await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    assert info.value.message.startswith("Too many requests in flight on this key: limit 1 at a time.")
    await limiter.finish(hold, "release", 0, 0.0)
    await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)


@needs_redis
async def test_holds_of_other_processes_count_in_the_same_redis(make):
    clock = Clock()
    one, two = await make(clock), await make(clock)
    plan = PlanConfig(name="p", requests_per_day=3)
    for limiter in (one, two, one):
        await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    with pytest.raises(QuotaExceeded):
        await two.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)


# -- seeding ---------------------------------------------------------------------------------


def totals(scope, ident, rd=0, td=0, rm=0, tm=0, cost=0.0):
    return WindowTotals(scope, ident, "2026-11-26", rd, td, "2026-11", rm, tm, cost)


@needs_redis
async def test_an_empty_redis_is_seeded_from_the_database_once(make):
    loads = []

    async def load(now):
        loads.append(now)
        return [totals("user", 1, rd=98, rm=98)]

    clock = Clock()
    first = await make(clock, load_totals=load)
    await make(clock, load_totals=load)  # finds the marker: no second seed on top
    assert loads == [T0]
    plan = PlanConfig(name="p", requests_per_day=100)
    await first.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    await first.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    with pytest.raises(QuotaExceeded) as info:
        await first.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    assert "Daily request quota reached for this account: limit 100, used 100." in info.value.message


@needs_redis
async def test_a_redis_that_lost_its_data_is_reseeded_with_the_holds_in_flight(make, redis_server):
    clock = Clock()
    in_db = []

    async def load(now):
        return in_db

    limiter = await make(clock, load_totals=load)
    plan = PlanConfig(name="p", requests_per_day=10)
    done = [await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0) for _ in range(6)]
    for hold in done[:4]:
        await limiter.finish(hold, "settle", 0, 0.0)
    in_db.append(totals("user", 1, rd=4, rm=4))  # the four finished ones are in the rollups
    redis_server.flush()  # Redis restarted empty; two requests are still in flight
    with pytest.raises(LimitsUnavailable) as info:
        await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
    assert info.value.status == 503 and info.value.code == "limits_unavailable"
    await limiter._restoring  # noqa: SLF001 - the restore the refusal started
    assert limiter.state == "up"
    # 4 from the database + 2 held = 6 used: exactly 4 more, never 5.
    admitted = 0
    for _ in range(10):
        try:
            await limiter.admit(KEY, plan, estimated_tokens=0, estimated_cost=0)
            admitted += 1
        except QuotaExceeded:
            pass
    assert admitted == 4


@needs_redis
async def test_close_ends_the_renewal_even_if_a_redis_call_swallowed_the_cancel(make):
    # Python 3.11's wait_for, which redis-py bounds each send with, loses a cancellation
    # that arrives as the send completes (CPython gh-86296): close must still return.
    limiter = await make(hold_ttl=0.3)
    entered = asyncio.Event()
    sent = asyncio.get_running_loop().create_future()

    async def renew():
        entered.set()
        await asyncio.wait_for(sent, 10)

    limiter.renew = renew
    await entered.wait()
    sent.set_result(None)  # completes in the same iteration as close's cancel
    closing = asyncio.create_task(limiter.close())
    # Waited for without cancelling it: a cancel from here would end the renewal itself.
    done, _ = await asyncio.wait({closing}, timeout=10)
    if not done:
        for task in limiter._tasks:  # noqa: SLF001 - leave no renewal behind
            task.cancel()
    assert closing in done, "close() waited for a renewal loop that never ended"
    await closing


# -- Redis down ------------------------------------------------------------------------------


@needs_redis
async def test_redis_down_fails_quotas_closed_shares_rpm_and_recovers(tmp_path):
    server = RedisServer()
    server.start()
    try:
        limiter = RedisLimiter(server.url, clock=Clock(), grace=0.0, workers=4, probe_interval=0.05)
        await limiter.start()
        quota = PlanConfig(name="q", rpm=100, monthly_budget_usd=5)
        rpm_only = PlanConfig(name="r", rpm=40)
        await limiter.admit(KEY, quota, estimated_tokens=0, estimated_cost=0.01)
        server.stop()
        with pytest.raises(LimitsUnavailable) as info:
            await limiter.admit(KEY, quota, estimated_tokens=0, estimated_cost=0.01)
        assert info.value.headers == {"retry-after-ms": "1000", "Retry-After": "1"}
        assert limiter.state == "down"
        # 40 rpm over 4 workers: this one admits its 10.
        other = Principal(user_id=2, key_id=20, plan="r")
        admitted = 0
        for _ in range(15):
            try:
                hold = await limiter.admit(other, rpm_only, estimated_tokens=0, estimated_cost=0)
                limiter.settle(hold, tokens=0, cost=0.0)
                admitted += 1
            except RateLimited as exc:
                assert "limit 10, used 10" in exc.message
        assert (admitted, limiter.fail_closed, limiter.fallbacks) == (10, 1, 15)

        server.start()
        await limiter._restoring  # noqa: SLF001 - the reconnect loop finishes by itself
        assert limiter.state == "up"
        await limiter.admit(KEY, quota, estimated_tokens=0, estimated_cost=0.01)
        await limiter.close()
    finally:
        server.close()
    assert os.path.isdir(server.dir) is False


# -- the app's clock -------------------------------------------------------------------------


@needs_redis
async def test_a_clock_injected_into_the_app_drives_the_shared_limiter(tmp_path, redis_url, fake):
    # Windows and refills follow the clock the usage rows are stamped with, as the
    # in-process limiter's do; only the wall clock is left to Redis's TIME.
    clock = Clock()
    harness = GatewayHarness.write(
        str(tmp_path / "config"), [upstream_entry("a", fake.url)], limits={"backend": redis_url},
        plans={"one": {"rpm": 1, "requests_per_day": 2, "models": "*"}}, auth={"default_plan": "one"})
    await harness.start(plan="one", clock=clock)
    try:
        assert isinstance(harness.app[LIMITER], RedisLimiter)
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

        async def one() -> tuple[int, dict]:
            async with aiohttp.ClientSession() as session:
                async with session.post(harness.url + "/v1/chat/completions", json=chat,
                                        headers=harness.headers()) as resp:
                    return resp.status, await resp.json()

        assert (await one())[0] == 200
        assert (await one())[0] == 429  # the clock stands still: no refill
        clock.now += 60  # a minute by the app's clock refills the one request
        assert (await one())[0] == 200
        clock.now += 60
        status, body = await one()
        assert status == 429
        assert body["error"]["message"].startswith(
            "Daily request quota reached for this account: limit 2, used 2. "
            "It resets at 2026-11-27 00:00 UTC (in 11h58m0s)")
        clock.now += 12 * 3600  # the next day by the app's clock
        assert (await one())[0] == 200
    finally:
        await harness.stop()

import asyncio
from datetime import datetime, timezone

import pytest

from proxy.auth.principal import KeyLimits, Principal
from proxy.config.snapshot import PlanConfig
from proxy.errors import QuotaExceeded, RateLimited
from proxy.limits import Limiter, WindowTotals

from .redis_server import REDIS_SERVER, SKIP_REASON, SyncRedisLimiter, redis_server  # noqa: F401


def ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


T0 = ts(2026, 11, 26, 12)  # a Thursday noon, UTC


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["memory", "redis"])
def limiter(request, clock):
    """Every behaviour below holds for both backends: the in-process limiter, and
    the Redis one (a real redis-server) with the same injected clock."""
    if request.param == "memory":
        yield Limiter(clock=clock)
        return
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    server = request.getfixturevalue("redis_server")
    server.flush()
    backend = SyncRedisLimiter(server.url, clock)
    yield backend
    backend.close()


@pytest.fixture
def memory_limiter(clock):
    return Limiter(clock=clock)


def key(key_id=10, user_id=1, plan="p", **limits):
    return Principal(user_id=user_id, key_id=key_id, plan=plan, limits=KeyLimits(**limits))


def admit(limiter, principal, plan, tokens=0, cost=0.0):
    return limiter.admit(principal, plan, estimated_tokens=tokens, estimated_cost=cost)


def count_admitted(limiter, principal, plan, n, tokens=0, cost=0.0):
    admitted = []
    for _ in range(n):
        try:
            admitted.append(admit(limiter, principal, plan, tokens, cost))
        except (RateLimited, QuotaExceeded):
            pass
    return admitted


# -- rpm ----------------------------------------------------------------------


async def test_rpm_is_exact_under_200_concurrent_tasks(limiter, clock):
    plan = PlanConfig(name="p", rpm=60)
    principal = key()
    admitted = refused = 0

    async def one():
        nonlocal admitted, refused
        await asyncio.sleep(0)
        try:
            r = admit(limiter, principal, plan)
        except RateLimited:
            refused += 1
            return
        admitted += 1
        await asyncio.sleep(0)
        limiter.settle(r, tokens=0, cost=0.0)

    await asyncio.gather(*(one() for _ in range(200)))
    assert (admitted, refused) == (60, 140)

    # A quarter second at a time, 200 more contenders each step: the total
    # admitted is exactly capacity + refill × elapsed, rounded down.
    for step in range(1, 41):
        clock.now += 0.25
        await asyncio.gather(*(one() for _ in range(200)))
        elapsed = step * 0.25
        assert admitted <= 60 + 1.0 * elapsed
        assert admitted == 60 + int(elapsed)


def test_rpm_refusal_names_the_limit_and_the_wait(limiter, clock):
    plan = PlanConfig(name="p", rpm=60)
    assert len(count_admitted(limiter, key(), plan, 60)) == 60
    clock.now += 0.25
    with pytest.raises(RateLimited) as info:
        admit(limiter, key(), plan)
    exc = info.value
    assert exc.status == 429
    assert exc.body() == {"error": {
        "message": "Rate limit reached for requests per minute (rpm) on this key: limit 60, "
                   "used 60. Please try again in 750ms.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    assert exc.retry_after == 0.75
    assert exc.headers == {
        "retry-after-ms": "750",
        "Retry-After": "1",
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59.75s",
    }


def test_rejected_request_consumes_nothing(limiter, clock):
    plan = PlanConfig(name="p", rpm=60, tpm=1000, requests_per_day=100)
    principal = key()
    admit(limiter, principal, plan, tokens=900)
    with pytest.raises(RateLimited):
        admit(limiter, principal, plan, tokens=200)  # tpm refuses it
    r = admit(limiter, principal, plan, tokens=100)
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "58"
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "0"


# -- tpm ----------------------------------------------------------------------


def test_tpm_reserves_then_settles_down_and_up(limiter):
    plan = PlanConfig(name="p", tpm=1000)
    principal = key()
    r = admit(limiter, principal, plan, tokens=400)
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "600"
    limiter.settle(r, tokens=100, cost=0.0)  # used less: 300 come back
    r = admit(limiter, principal, plan, tokens=100)
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "800"
    limiter.settle(r, tokens=500, cost=0.0)  # used more: 400 more charged
    r = admit(limiter, principal, plan, tokens=0)
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "400"


def test_tpm_release_refunds_the_reservation(limiter):
    plan = PlanConfig(name="p", tpm=1000)
    principal = key()
    r = admit(limiter, principal, plan, tokens=700)
    limiter.release(r)
    r = admit(limiter, principal, plan, tokens=1000)
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "0"


def test_tpm_refusal_says_what_was_requested(limiter):
    plan = PlanConfig(name="p", tpm=1000)
    admit(limiter, key(), plan, tokens=400)
    with pytest.raises(RateLimited) as info:
        admit(limiter, key(), plan, tokens=700)
    exc = info.value
    assert exc.type == "tokens"
    assert exc.code == "rate_limit_exceeded"
    assert exc.message == ("Rate limit reached for tokens per minute (tpm) on this key: limit "
                           "1000, used 400, requested 700. Please try again in 6s.")
    assert exc.headers["Retry-After"] == "6"
    assert exc.headers["retry-after-ms"] == "6000"
    assert exc.headers["x-ratelimit-remaining-tokens"] == "600"


def test_estimate_above_capacity_is_clamped_and_real_usage_becomes_debt(limiter, clock):
    plan = PlanConfig(name="p", tpm=1000)
    r = admit(limiter, key(), plan, tokens=5000)  # larger than the bucket: still admitted
    assert r.reserved_a == 1000
    limiter.settle(r, tokens=6000, cost=0.0)  # 5000 tokens of debt
    with pytest.raises(RateLimited) as info:
        admit(limiter, key(), plan, tokens=1)
    assert info.value.headers["x-ratelimit-reset-tokens"] == "6m0s"
    clock.now += 300  # the debt is paid back at 1000 per minute...
    with pytest.raises(RateLimited):
        admit(limiter, key(), plan, tokens=1)
    clock.now += 0.75  # ...then 12.5 tokens' worth
    r = admit(limiter, key(), plan, tokens=1)
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "11"


# -- settle / release bookkeeping -------------------------------------------------


def test_settle_and_release_are_idempotent_and_exclusive(limiter):
    plan = PlanConfig(name="p", rpm=10, tpm=1000, requests_per_day=10, max_concurrent=1)
    principal = key()
    r = admit(limiter, principal, plan, tokens=300)
    limiter.settle(r, tokens=100, cost=0.0)
    limiter.settle(r, tokens=900, cost=0.0)
    limiter.release(r)
    r = admit(limiter, principal, plan, tokens=0)  # the concurrency slot was freed once
    headers = limiter.headers(r)
    assert headers["x-ratelimit-remaining-tokens"] == "900"
    limiter.release(r)
    limiter.release(r)
    limiter.settle(r, tokens=500, cost=0.0)
    r = admit(limiter, principal, plan, tokens=0)
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "900"


def test_release_keeps_the_rpm_token_but_returns_the_quota(limiter):
    plan = PlanConfig(name="p", rpm=10, requests_per_day=1000)
    principal = key()
    limiter.release(admit(limiter, principal, plan))
    r = admit(limiter, principal, plan)
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "8"
    assert r.user.usage.requests_day == 1


# -- concurrency ------------------------------------------------------------------


def test_max_concurrent_counts_in_flight_requests(limiter):
    plan = PlanConfig(name="p", max_concurrent=2)
    a = admit(limiter, key(), plan)
    admit(limiter, key(), plan)
    with pytest.raises(RateLimited) as info:
        admit(limiter, key(), plan)
    assert info.value.type == "requests"
    assert info.value.message == ("Too many requests in flight on this key: limit 2 at a time. "
                                  "Please try again in 1s.")
    assert admit(limiter, key(key_id=11), plan)  # another key has its own slots
    limiter.settle(a, tokens=0, cost=0.0)
    assert admit(limiter, key(), plan)


# -- quotas -----------------------------------------------------------------------


async def test_daily_quota_admits_exactly_the_quota_under_500_concurrent_admits(limiter):
    plan = PlanConfig(name="p", requests_per_day=100)
    admitted = refused = 0

    async def one(i):
        nonlocal admitted, refused
        await asyncio.sleep(0)
        try:
            r = admit(limiter, key(key_id=i % 7), plan)  # many keys, one user
        except QuotaExceeded:
            refused += 1
            return
        admitted += 1
        await asyncio.sleep(0)  # still in flight while the others try
        limiter.settle(r, tokens=10, cost=0.0)

    await asyncio.gather(*(one(i) for i in range(500)))
    assert (admitted, refused) == (100, 400)


async def test_daily_tokens_count_in_flight_reservations(limiter):
    plan = PlanConfig(name="p", tokens_per_day=10_000)
    admitted = []
    arrived = 0
    all_arrived = asyncio.Event()
    gate = asyncio.Event()

    async def one():
        nonlocal arrived
        await asyncio.sleep(0)
        try:
            r = admit(limiter, key(), plan, tokens=300)
        except QuotaExceeded:
            r = None
        else:
            admitted.append(r)
        arrived += 1
        if arrived == 500:
            all_arrived.set()
        if r is not None:
            await gate.wait()
            limiter.settle(r, tokens=100, cost=0.0)

    tasks = [asyncio.create_task(one()) for _ in range(500)]
    await all_arrived.wait()
    assert len(admitted) == 33  # 33 × 300 = 9900; one more would pass 10000
    gate.set()
    await asyncio.gather(*tasks)
    assert admitted[0].user.usage.tokens_day == 3300
    assert len(count_admitted(limiter, key(), plan, 100, tokens=300)) == 22


def test_quota_refusal_names_the_quota_and_the_reset(limiter):
    plan = PlanConfig(name="p", requests_per_day=2)
    count_admitted(limiter, key(), plan, 2)
    with pytest.raises(QuotaExceeded) as info:
        admit(limiter, key(), plan)
    exc = info.value
    assert exc.status == 429
    assert exc.body() == {"error": {
        "message": "Daily request quota reached for this account: limit 2, used 2. It resets at "
                   "2026-11-27 00:00 UTC (in 12h0m0s); upgrade the plan or wait until then.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    assert exc.headers == {
        "retry-after-ms": "43200000",
        "Retry-After": "43200",
        "x-should-retry": "false",
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "12h0m0s",
    }


@pytest.mark.parametrize("limits,principal_limits,tokens,cost,message", [
    (dict(tokens_per_day=1000), {}, 600, 0.0,
     "Daily token quota reached for this account: limit 1000, used 600, this request may use "
     "up to 600. It resets at 2026-11-27 00:00 UTC (in 12h0m0s); lower max_tokens, upgrade the "
     "plan or wait until then."),
    (dict(requests_per_month=1), {}, 0, 0.0,
     "Monthly request quota reached for this account: limit 1, used 1. It resets at "
     "2026-12-01 00:00 UTC (in 108h0m0s); upgrade the plan or wait until then."),
    (dict(tokens_per_month=1000), {}, 600, 0.0,
     "Monthly token quota reached for this account: limit 1000, used 600, this request may use "
     "up to 600. It resets at 2026-12-01 00:00 UTC (in 108h0m0s); lower max_tokens, upgrade "
     "the plan or wait until then."),
    (dict(monthly_budget_usd=1.0), {}, 0, 0.75,
     "Monthly budget reached for this account: limit $1.00, spent $0.75, this request may cost "
     "up to $0.75. It resets at 2026-12-01 00:00 UTC (in 108h0m0s); upgrade the plan or wait "
     "until then."),
    ({}, dict(requests_per_day=1), 0, 0.0,
     "Daily request quota reached for this key: limit 1, used 1. It resets at 2026-11-27 00:00 "
     "UTC (in 12h0m0s); upgrade the plan or wait until then."),
])
def test_each_quota_has_its_own_message(limiter, limits, principal_limits, tokens, cost,
                                        message):
    plan = PlanConfig(name="p", **limits)
    principal = key(**principal_limits)
    admit(limiter, principal, plan, tokens, cost)
    with pytest.raises(QuotaExceeded) as info:
        admit(limiter, principal, plan, tokens, cost)
    assert info.value.message == message
    assert info.value.code == "insufficient_quota"


def test_monthly_budget_counts_reservations_then_real_cost(limiter):
    plan = PlanConfig(name="p", monthly_budget_usd=1.0)
    held = count_admitted(limiter, key(), plan, 10, cost=0.25)
    assert len(held) == 4
    for r in held:
        limiter.settle(r, tokens=0, cost=0.1)  # spent 0.40 in all
    assert len(count_admitted(limiter, key(), plan, 10, cost=0.25)) == 2


def test_free_requests_stop_once_the_budget_is_spent(limiter):
    plan = PlanConfig(name="p", monthly_budget_usd=0.5)
    limiter.settle(admit(limiter, key(), plan, cost=0.1), tokens=0, cost=0.5)
    with pytest.raises(QuotaExceeded):
        admit(limiter, key(), plan, cost=0.0)


def test_zero_rpm_is_a_quota_not_a_retry(limiter):
    plan = PlanConfig(name="p", rpm=0)
    with pytest.raises(QuotaExceeded) as info:
        admit(limiter, key(), plan)
    assert info.value.message == ("The limits of this key allow 0 requests per minute (rpm); "
                                  "ask for a plan or key limit above 0.")
    assert info.value.headers["x-should-retry"] == "false"


# -- calendar windows --------------------------------------------------------------


def test_day_counters_reset_at_utc_midnight(limiter, clock):
    plan = PlanConfig(name="p", requests_per_day=2, requests_per_month=5)
    clock.now = ts(2026, 11, 26, 23, 59, 59)
    assert len(count_admitted(limiter, key(), plan, 5)) == 2
    clock.now = ts(2026, 11, 27) - 0.001
    with pytest.raises(QuotaExceeded):
        admit(limiter, key(), plan)
    clock.now = ts(2026, 11, 27)
    assert len(count_admitted(limiter, key(), plan, 5)) == 2
    clock.now = ts(2026, 11, 28, 8)
    # The month holds 4: one left for the month, not the new day's two.
    assert len(count_admitted(limiter, key(), plan, 1)) == 1
    with pytest.raises(QuotaExceeded) as info:
        admit(limiter, key(), plan)
    assert info.value.message.startswith("Monthly request quota reached for this account: "
                                         "limit 5, used 5.")


def test_month_turn_resets_month_counters_and_budget(limiter, clock):
    plan = PlanConfig(name="p", requests_per_month=3, monthly_budget_usd=1.0)
    clock.now = ts(2026, 11, 30, 23)
    count_admitted(limiter, key(), plan, 3, cost=0.25)
    with pytest.raises(QuotaExceeded):
        admit(limiter, key(), plan)
    clock.now = ts(2026, 12, 1)
    assert len(count_admitted(limiter, key(), plan, 5, cost=0.25)) == 3


def test_a_request_spanning_midnight_settles_into_the_day_it_was_counted_in(limiter, clock):
    plan = PlanConfig(name="p", tokens_per_day=1000, tokens_per_month=10_000)
    clock.now = ts(2026, 11, 26, 23, 59, 59)
    r = admit(limiter, key(), plan, tokens=500)
    clock.now = ts(2026, 11, 27, 0, 0, 5)
    fresh = admit(limiter, key(), plan, tokens=100)
    limiter.settle(r, tokens=900, cost=0.0)  # the 26th is over: today's counter is untouched
    usage = fresh.user.usage
    assert usage.tokens_day == 100
    assert usage.tokens_month == 1000  # 900 real on the 26th + 100 reserved today
    limiter.release(fresh)
    usage = fresh.user.usage  # read again: a Redis hold's counters are read, not shared
    assert (usage.tokens_day, usage.tokens_month) == (0, 900)


def test_a_request_spanning_the_month_turn_leaves_the_new_month_alone(limiter, clock):
    plan = PlanConfig(name="p", monthly_budget_usd=10.0)
    clock.now = ts(2026, 11, 30, 23, 59)
    r = admit(limiter, key(), plan, cost=1.0)
    clock.now = ts(2026, 12, 1, 0, 1)
    fresh = admit(limiter, key(), plan, cost=0.5)
    limiter.settle(r, tokens=0, cost=9.0)
    assert fresh.user.usage.cost_month == 500_000_000


# -- seed -----------------------------------------------------------------------------


def totals(scope, ident, day="2026-11-26", month="2026-11", rd=0, td=0, rm=0, tm=0, cost=0.0):
    return WindowTotals(scope=scope, id=ident, day=day, requests_day=rd, tokens_day=td,
                        month=month, requests_month=rm, tokens_month=tm, cost_month=cost)


def test_seed_restores_persisted_usage(limiter):
    plan = PlanConfig(name="p", requests_per_day=100, tokens_per_month=10_000,
                      monthly_budget_usd=5.0)
    limiter.seed([totals("user", 1, rd=99, td=2000, rm=400, tm=9000, cost=4.5)])
    r = admit(limiter, key(), plan, tokens=500, cost=0.25)
    assert (r.user.usage.requests_day, r.user.usage.tokens_month) == (100, 9500)
    with pytest.raises(QuotaExceeded) as info:
        admit(limiter, key(), plan)
    assert info.value.message.startswith("Daily request quota reached for this account: "
                                         "limit 100, used 100.")


def test_seed_restores_key_usage_for_key_limits(limiter):
    plan = PlanConfig(name="p")
    limiter.seed([totals("key", 10, rd=5, rm=5)])
    principal = key(requests_per_day=6)
    admit(limiter, principal, plan)
    with pytest.raises(QuotaExceeded) as info:
        admit(limiter, principal, plan)
    assert "for this key: limit 6, used 6." in info.value.message
    assert admit(limiter, key(key_id=11, requests_per_day=6), plan)


def test_seed_ignores_windows_that_are_over(limiter):
    plan = PlanConfig(name="p", requests_per_day=10, requests_per_month=500)
    limiter.seed([
        totals("user", 1, day="2026-11-25", rd=10, rm=495),  # yesterday: only the month counts
        totals("user", 2, day="2026-10-31", month="2026-10", rd=10, rm=500),  # last month
    ])
    assert len(count_admitted(limiter, key(user_id=1), plan, 20)) == 5
    assert len(count_admitted(limiter, key(key_id=20, user_id=2), plan, 20)) == 10


def test_seed_rejects_an_unknown_scope(limiter):
    with pytest.raises(ValueError) as info:
        limiter.seed([totals("team", 1)])
    assert str(info.value) == "WindowTotals.scope must be 'user' or 'key', got 'team'"


# -- key limits tighten, never loosen ----------------------------------------------------


@pytest.mark.parametrize("plan_rpm,key_rpm,expected", [
    (60, 10, 10), (60, 100, 60), (None, 5, 5), (60, None, 60),
])
def test_key_rpm_only_tightens(limiter, plan_rpm, key_rpm, expected):
    plan = PlanConfig(name="p", rpm=plan_rpm)
    assert len(count_admitted(limiter, key(rpm=key_rpm), plan, 200)) == expected


@pytest.mark.parametrize("plan_tpm,key_tpm,expected", [(1000, 300, 3), (1000, 5000, 10)])
def test_key_tpm_only_tightens(limiter, plan_tpm, key_tpm, expected):
    plan = PlanConfig(name="p", tpm=plan_tpm)
    assert len(count_admitted(limiter, key(tpm=key_tpm), plan, 20, tokens=100)) == expected


@pytest.mark.parametrize("plan_max,key_max,expected", [(4, 2, 2), (4, 8, 4), (None, 3, 3)])
def test_key_concurrency_only_tightens(limiter, plan_max, key_max, expected):
    plan = PlanConfig(name="p", max_concurrent=plan_max)
    assert len(count_admitted(limiter, key(max_concurrent=key_max), plan, 10)) == expected


def test_key_quota_tightens_and_the_plan_quota_still_binds_the_user(limiter):
    plan = PlanConfig(name="p", requests_per_day=5)
    assert len(count_admitted(limiter, key(key_id=10, requests_per_day=3), plan, 10)) == 3
    assert len(count_admitted(limiter, key(key_id=11, requests_per_day=50), plan, 10)) == 2


def test_key_budget_tightens(limiter):
    plan = PlanConfig(name="p", monthly_budget_usd=10.0)
    assert len(count_admitted(limiter, key(monthly_budget_usd=1.0), plan, 10, cost=0.5)) == 2
    assert len(count_admitted(limiter, key(key_id=11, monthly_budget_usd=100.0), plan, 100,
                              cost=0.5)) == 18


def test_editing_a_key_applies_its_new_limits_on_the_next_request(limiter):
    plan = PlanConfig(name="p", rpm=60)
    assert len(count_admitted(limiter, key(), plan, 40)) == 40  # 20 left
    assert len(count_admitted(limiter, key(rpm=10), plan, 40)) == 10  # clipped to 10
    with pytest.raises(RateLimited):
        admit(limiter, key(rpm=None), plan)  # loosened again: the level is not topped up


# -- per-user plans and principals without a key ------------------------------------


def test_per_user_plan_shares_buckets_across_a_users_keys(limiter):
    plan = PlanConfig(name="p", rpm=10, per_user=True)
    assert len(count_admitted(limiter, key(key_id=10), plan, 6)) == 6
    assert len(count_admitted(limiter, key(key_id=11), plan, 6)) == 4
    with pytest.raises(RateLimited) as info:
        admit(limiter, key(key_id=12), plan)
    assert "on this account: limit 10, used 10." in info.value.message
    assert len(count_admitted(limiter, key(key_id=20, user_id=2), plan, 20)) == 10


def test_per_user_plan_keeps_a_stricter_key_limit(limiter):
    plan = PlanConfig(name="p", rpm=10, per_user=True)
    assert len(count_admitted(limiter, key(key_id=10, rpm=3), plan, 6)) == 3
    with pytest.raises(RateLimited) as info:
        admit(limiter, key(key_id=10, rpm=3), plan)
    assert "on this key: limit 3, used 3." in info.value.message
    assert len(count_admitted(limiter, key(key_id=11), plan, 10)) == 7


def test_per_user_headers_report_whichever_bucket_has_less_left(limiter):
    plan = PlanConfig(name="p", rpm=10, per_user=True)
    count_admitted(limiter, key(key_id=11), plan, 5)
    r = admit(limiter, key(key_id=10, rpm=3), plan)
    assert limiter.headers(r)["x-ratelimit-limit-requests"] == "3"
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "2"
    r = admit(limiter, key(key_id=12), plan)
    assert limiter.headers(r)["x-ratelimit-limit-requests"] == "10"
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "3"


def test_a_principal_without_a_key_is_limited_as_its_user(limiter):
    plan = PlanConfig(name="p", rpm=5, max_concurrent=3)
    session = Principal(user_id=1, key_id=None, plan="p")
    held = count_admitted(limiter, session, plan, 10)
    assert len(held) == 3
    with pytest.raises(RateLimited) as info:
        admit(limiter, session, plan)
    assert info.value.message.startswith("Too many requests in flight on this account")
    for r in held:
        limiter.settle(r, tokens=0, cost=0.0)
    assert len(count_admitted(limiter, session, plan, 10)) == 2
    assert len(count_admitted(limiter, key(), plan, 3)) == 3  # the user's keys are separate


# -- headers ---------------------------------------------------------------------------


def test_headers_after_admission_in_openai_format(limiter):
    plan = PlanConfig(name="p", rpm=60, tpm=150_000)
    r = admit(limiter, key(), plan, tokens=1500)
    assert limiter.headers(r) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "148500",
        "x-ratelimit-reset-tokens": "600ms",
    }


def test_headers_are_as_of_admission(limiter):
    plan = PlanConfig(name="p", rpm=60)
    r = admit(limiter, key(), plan)
    count_admitted(limiter, key(), plan, 10)
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "59"


def test_headers_fall_back_to_the_calendar_quota_that_binds_first(limiter, clock):
    plan = PlanConfig(name="p", rpm=60, requests_per_day=3, tokens_per_month=100_000)
    clock.now = ts(2026, 11, 26, 22, 30)
    r = admit(limiter, key(), plan, tokens=40_000)
    assert limiter.headers(r) == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1h30m0s",
        "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-tokens": "60000",
        "x-ratelimit-reset-tokens": "97h30m0s",
    }


def test_no_limits_no_headers(limiter):
    r = admit(limiter, key(), PlanConfig(name="p"), tokens=10)
    assert limiter.headers(r) == {}


# -- reload ----------------------------------------------------------------------------


def test_reload_carries_bucket_state_for_unchanged_plans(limiter):
    plan = PlanConfig(name="p", rpm=60, tpm=10_000)
    count_admitted(limiter, key(), plan, 50, tokens=100)
    reloaded = PlanConfig(name="p", rpm=60, tpm=10_000)  # equal, but a new object
    limiter.forget_plans({"p": reloaded})
    r = admit(limiter, key(), reloaded, tokens=100)
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "9"
    assert limiter.headers(r)["x-ratelimit-remaining-tokens"] == "4900"


def test_reload_with_a_smaller_capacity_clips_the_level(limiter, clock):
    plan = PlanConfig(name="p", rpm=60)
    count_admitted(limiter, key(), plan, 50)
    smaller = PlanConfig(name="p", rpm=5)
    limiter.forget_plans({"p": smaller})
    r = admit(limiter, key(), smaller)
    assert limiter.headers(r)["x-ratelimit-limit-requests"] == "5"
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "4"
    larger = PlanConfig(name="p", rpm=600)
    limiter.forget_plans({"p": larger})
    r = admit(limiter, key(), larger)
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "3"  # never topped up
    clock.now += 1  # refills at the new rate, 10 per second
    r = admit(limiter, key(), larger)
    assert limiter.headers(r)["x-ratelimit-remaining-requests"] == "12"


def test_removing_a_plan_cannot_be_used_to_refill_a_bucket(limiter):
    plan = PlanConfig(name="old", rpm=60)
    count_admitted(limiter, key(plan="old"), plan, 60)
    limiter.forget_plans({"new": PlanConfig(name="new", rpm=60)})
    with pytest.raises(RateLimited):
        admit(limiter, key(plan="new"), PlanConfig(name="new", rpm=60))


def test_prune_drops_only_state_with_nothing_to_remember(memory_limiter, clock):
    # The in-process limiter's memory bound; Redis keeps its own state.
    limiter = memory_limiter
    plan = PlanConfig(name="p", rpm=60)
    quota_plan = PlanConfig(name="q", rpm=60, requests_per_day=10)
    for i in range(100):
        limiter.settle(admit(limiter, key(key_id=i, user_id=i), plan), tokens=0, cost=0.0)
    held = admit(limiter, key(key_id=500, user_id=500), plan)
    assert len(limiter) == 202
    clock.now += 1  # every bucket full again
    assert limiter.prune() == 0  # usage this month is still remembered
    clock.now = ts(2026, 12, 1)
    assert limiter.prune() == 200
    assert len(limiter) == 2  # the open reservation keeps its user and key
    limiter.settle(held, tokens=0, cost=0.0)
    assert limiter.prune() == 2
    admit(limiter, key(), quota_plan)
    limiter.forget_plans({"q": quota_plan})
    assert len(limiter) == 2


def test_the_in_process_limiter_implements_the_limiter_seam():
    from proxy.limits import Limiter, RateLimiter

    limiter = Limiter(clock=lambda: 1_795_000_000.0)
    assert isinstance(limiter, RateLimiter)
    plan = PlanConfig(name="p", rpm=10, tpm=1000)
    hold = limiter.admit(Principal(user_id=1, key_id=1, plan="p"), plan, estimated_tokens=100,
                         estimated_cost=0.5)
    assert (hold.estimated_tokens, hold.estimated_cost) == (100, 0.5)

"""Limits hold exactly under concurrency, through the real gateway, with the clock injected."""

from __future__ import annotations

import asyncio
import calendar

import aiohttp
import openai
import orjson
import pytest

from proxy.appkeys import USAGE

from .db_access import query
from .gateway_harness import GatewayHarness, upstream_entry

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


NOON = calendar.timegm((2026, 11, 26, 12, 0, 0))

# Window and quota behaviour must not depend on the day the suite runs: each of
# these runs at a month end, a year end, a leap day and a European DST change,
# with the process in a time zone that has DST, so local time never leaks in.
DATES = {
    "month-end": (2026, 11, 30),
    "year-end": (2026, 12, 31),
    "leap-day": (2028, 2, 29),
    "dst-change": (2027, 3, 28),
}


@pytest.fixture(params=sorted(DATES), ids=sorted(DATES))
def day(request, monkeypatch):
    import time as _time
    monkeypatch.setenv("TZ", "Europe/Berlin")
    _time.tzset()
    yield DATES[request.param]
    monkeypatch.undo()
    _time.tzset()


async def start(tmp_path, upstreams, plan: dict, *, clock=None, name="cfg") -> GatewayHarness:
    harness = GatewayHarness.write(str(tmp_path / name), [upstream_entry("a", upstreams[0].url)],
                                   plans={"limited": plan}, auth={"default_plan": "limited"})
    return await harness.start(plan="limited", clock=clock or Clock(NOON))


async def burst(harness: GatewayHarness, n: int, body: dict = CHAT) -> list[tuple[int, dict, dict]]:
    data = orjson.dumps(body)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one():
            async with session.post(harness.url + "/v1/chat/completions", data=data,
                                    headers=harness.headers()) as resp:
                raw = await resp.read()
                return resp.status, dict(resp.headers), raw
        results = await asyncio.gather(*(one() for _ in range(n)))
    out = []
    for status, headers, raw in results:
        parsed = orjson.loads(raw) if raw and not raw.startswith(b"data:") else {"raw": raw}
        out.append((status, headers, parsed))
    return out


async def test_200_concurrent_clients_on_rpm_60_admit_exactly_60(tmp_path, upstreams):
    harness = await start(tmp_path, upstreams, {"rpm": 60})
    try:
        results = await burst(harness, 200)
        statuses = [s for s, _, _ in results]
        assert statuses.count(200) == 60  # the clock stands still: no refill, no overshoot
        assert statuses.count(429) == 140
        rejected = next(body for s, _, body in results if s == 429)
        assert rejected["error"]["type"] == "requests"
        assert rejected["error"]["code"] == "rate_limit_exceeded"
        assert upstreams[0].stats()["requests"] == 60
    finally:
        await harness.stop()


async def test_refill_admits_capacity_plus_rate_times_elapsed(tmp_path, upstreams):
    clock = Clock(NOON)
    harness = await start(tmp_path, upstreams, {"rpm": 60}, clock=clock)
    try:
        assert [s for s, _, _ in await burst(harness, 70)].count(200) == 60
        clock.now += 10.5  # 1 request per second refills
        assert [s for s, _, _ in await burst(harness, 30)].count(200) == 10
    finally:
        await harness.stop()


async def test_rate_limit_headers_and_429_in_openai_shape(tmp_path, upstreams):
    harness = await start(tmp_path, upstreams, {"rpm": 2, "tpm": 10000})
    try:
        results = await burst(harness, 1)
        status, headers, _ = results[0]
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "1"
        assert headers["x-ratelimit-reset-requests"] == "30s"
        assert headers["x-ratelimit-limit-tokens"] == "10000"
        assert int(headers["x-ratelimit-remaining-tokens"]) < 10000
        assert headers["x-ratelimit-reset-tokens"].endswith(("s", "ms"))
        await burst(harness, 1)
        status, headers, body = (await burst(harness, 1))[0]
        assert status == 429
        assert headers["Retry-After"] == "30"
        assert headers["retry-after-ms"] == "30000"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert "requests per minute" in body["error"]["message"]

        client = openai.AsyncOpenAI(base_url=harness.url + "/v1", api_key=harness.key, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(**CHAT)
        assert info.value.body["code"] == "rate_limit_exceeded"
    finally:
        await harness.stop()


async def test_tpm_with_streaming_requests_never_overshoots(tmp_path, upstreams):
    # Each request reserves its prompt estimate + max_tokens (100) and settles to the real usage.
    harness = await start(tmp_path, upstreams, {"tpm": 1000})
    try:
        body = {**CHAT, "stream": True, "max_tokens": 100}
        results = await burst(harness, 200, body)
        ok = [s for s, _, _ in results].count(200)
        rejected = [b for s, _, b in results if s == 429]
        assert rejected and rejected[0]["error"]["type"] == "tokens"
        await harness.app[USAGE].flush()
        [(used, served)] = query(harness.db_path, "SELECT SUM(total_tokens), COUNT(*) FROM usage WHERE status = 200")
        assert used <= 1000, used  # the clock stands still: capacity is all there is
        assert ok == served
    finally:
        await harness.stop()


async def test_daily_quota_under_500_concurrent_requests_admits_exactly_the_quota(tmp_path, upstreams):
    harness = await start(tmp_path, upstreams, {"requests_per_day": 100})
    try:
        results = await burst(harness, 500)
        statuses = [s for s, _, _ in results]
        assert statuses.count(200) == 100
        body = next(b for s, _, b in results if s == 429)
        assert body["error"]["code"] == "insufficient_quota"
        assert body["error"]["type"] == "insufficient_quota"
    finally:
        await harness.stop()


async def test_daily_window_resets_at_utc_midnight(tmp_path, upstreams, day):
    clock = Clock(calendar.timegm((*day, 23, 59, 0)))
    harness = await start(tmp_path, upstreams, {"requests_per_day": 5}, clock=clock)
    try:
        assert [s for s, _, _ in await burst(harness, 8)].count(200) == 5
        clock.now += 61  # 00:00:01 the next day
        assert [s for s, _, _ in await burst(harness, 8)].count(200) == 5
    finally:
        await harness.stop()


async def test_restart_mid_window_keeps_quota(tmp_path, upstreams, day):
    clock = Clock(calendar.timegm((*day, 12, 0, 0)))
    harness = await start(tmp_path, upstreams, {"requests_per_day": 50, "tokens_per_month": 100000}, clock=clock)
    assert [s for s, _, _ in await burst(harness, 30)].count(200) == 30
    await harness.stop()  # graceful: flushes usage

    clock.now += 3600
    again = await harness.start(plan="limited", clock=clock)
    try:
        statuses = [s for s, _, _ in await burst(again, 30)]
        assert statuses.count(200) == 20  # neither reset nor double-counted
        await again.app[USAGE].flush()
    finally:
        await again.stop()


async def test_restart_after_midnight_resets_the_day_and_the_month_only_when_it_ends(tmp_path, upstreams, day):
    clock = Clock(calendar.timegm((*day, 23, 30, 0)))
    harness = await start(tmp_path, upstreams, {"requests_per_day": 50, "requests_per_month": 70}, clock=clock)
    assert [s for s, _, _ in await burst(harness, 30)].count(200) == 30
    await harness.stop()

    clock.now += 3600  # 00:30 the next day, after a restart
    again = await harness.start(plan="limited", clock=clock)
    try:
        admitted = [s for s, _, _ in await burst(again, 60)].count(200)
        month_ended = day[2] == calendar.monthrange(day[0], day[1])[1]
        # A new day always; a new month only after the month's last day.
        assert admitted == (50 if month_ended else 40)
        await again.app[USAGE].flush()
    finally:
        await again.stop()


async def test_per_key_limit_tightens_the_plan(tmp_path, upstreams):
    harness = await start(tmp_path, upstreams, {"rpm": 100})
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/api/auth/login", json={
                    "email": "tenant@example.com", "password": "correct horse battery"}) as resp:
                token = (await resp.json())["token"]
            async with session.post(harness.url + "/api/keys", json={"name": "tight", "limits": {"rpm": 3}},
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 201, await resp.text()
                harness.key = (await resp.json())["key"]
        assert [s for s, _, _ in await burst(harness, 10)].count(200) == 3
    finally:
        await harness.stop()

"""Retries, failover, the retry budget and readmission, with real upstreams killed and revived."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from proxy.appkeys import CONFIG, HEALTH, RETRY_BUDGET, TRANSPORT

from .gateway_harness import GatewayHarness, upstream_entry

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def _load(gateway, session: aiohttp.ClientSession, total: int, concurrency: int,
                on_progress=None) -> tuple[int, list[int]]:
    """Send `total` chat requests, `concurrency` at a time; return (ok count, failure statuses)."""
    ok = 0
    failures: list[int] = []
    sent = 0
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal ok, sent
        while True:
            async with lock:
                if sent >= total:
                    return
                sent += 1
                n = sent
            if on_progress is not None:
                await on_progress(n)
            async with session.post(gateway.url + "/v1/chat/completions", data=CHAT,
                                    headers={**gateway.headers(), "Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    failures.append(resp.status)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failures


async def test_killing_one_of_three_upstreams_under_load_loses_under_one_in_a_thousand(gateway, upstreams):
    victim = upstreams[1]
    total = 3000

    async def chaos(n: int) -> None:
        if n == total // 3:
            await victim.stop()

    async with aiohttp.ClientSession() as session:
        ok, failures = await _load(gateway, session, total, 16, chaos)
    print(f"failover: {ok}/{total} succeeded with one of three upstreams killed; failures {failures}")  # for the record
    assert ok / total >= 0.999, f"{len(failures)} failed: {failures[:10]}"
    served = [u.stats()["requests"] for u in upstreams]
    assert served[1] < total // 3  # the victim stopped taking traffic once it was gone
    assert served[0] > total // 3 and served[2] > total // 3


async def test_recovered_upstream_is_readmitted(gateway, upstreams):
    victim = upstreams[0]
    await victim.stop()
    async with aiohttp.ClientSession() as session:
        ok, failures = await _load(gateway, session, 60, 4)
        assert ok == 60, failures
        health = gateway.app[HEALTH]
        assert health.summary(gateway.app[CONFIG].current)[0]["state"] in ("ejected", "down")

        await victim.start()
        victim.reset_stats()
        snapshot = gateway.app[CONFIG].current
        for _ in range(snapshot.health.rise):  # active probes prove it is back
            await health.probe_all(snapshot, gateway.app[TRANSPORT])
        assert health.summary(snapshot)[0]["state"] == "healthy"
        ok, failures = await _load(gateway, session, 30, 3)
    assert ok == 30, failures
    assert victim.stats()["requests"] == 10  # its exact third again


async def test_5xx_and_429_are_retried_on_another_upstream(gateway, upstreams):
    await upstreams[0].set_fault({"status": 500})
    await upstreams[1].set_fault({"status": 429})
    async with aiohttp.ClientSession() as session:
        ok, failures = await _load(gateway, session, 30, 1)
    assert ok == 30, failures


async def test_upstream_4xx_is_passed_through_not_retried(gateway, upstreams):
    for u in upstreams:
        await u.set_fault({"status": 400})
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=CHAT,
                                headers=gateway.headers()) as resp:
            body = await resp.json()
    assert resp.status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert sum(u.stats()["requests"] for u in upstreams) == 1


async def test_no_healthy_upstream_is_503_at_once(gateway, upstreams):
    for u in upstreams:
        await u.stop()
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(4):  # the first requests eject everything; then nothing is left to try
            async with session.post(gateway.url + "/v1/chat/completions", data=CHAT,
                                    headers=gateway.headers()) as resp:
                statuses.append(resp.status)
                body = await resp.json()
    assert statuses[-1] == 503
    assert body["error"]["code"] == "no_healthy_upstream"
    assert resp.headers["Retry-After"] == "1"


async def test_timeout_before_first_byte_is_504_when_nothing_else_answers(tmp_path):
    from proxy.fake_upstream import start_fake_upstream

    fake = await start_fake_upstream(name="slow")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("slow", fake.url, timeouts={"first_byte": "100ms"})])
    await harness.start()
    try:
        await fake.set_fault({"hang": True})
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", data=CHAT,
                                    headers=harness.headers()) as resp:
                body = await resp.json()
        assert resp.status == 504
        assert body["error"]["code"] == "upstream_timeout"
    finally:
        await harness.stop()
        await fake.stop()


async def test_permanently_failing_upstreams_get_no_more_retries_than_the_budget(tmp_path):
    from proxy.fake_upstream import start_fake_upstream

    bad = [await start_fake_upstream(name=n) for n in ("x", "y")]
    harness = GatewayHarness.write(
        str(tmp_path / "cfg"), [upstream_entry(f"x{i}", f.url) for i, f in enumerate(bad)],
        # Ejection would also stop retries; switch it off to see the budget alone.
        health={"eject_after": 1000, "interval": "1h"},
        retry={"attempts": 3, "backoff": "1ms", "max_backoff": "1ms", "budget_ratio": 0.2, "min_retries": 3})
    await harness.start()
    try:
        for f in bad:
            await f.set_fault({"status": 503, "latency": 0.2})
        clients = 50
        async with aiohttp.ClientSession() as session:
            async def one() -> int:
                async with session.post(harness.url + "/v1/chat/completions", data=CHAT,
                                        headers=harness.headers()) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(one() for _ in range(clients)))
        assert set(statuses) == {502}
        hits = sum(f.stats()["requests"] for f in bad)
        # 50 first tries; at most max(3, 20 % of 50) = 10 requests may hold a retry, each for 2 more tries.
        allowed = clients + 10 * 2
        assert clients < hits <= allowed, hits
        assert harness.app[RETRY_BUDGET].denied >= clients - 10
        assert harness.app[RETRY_BUDGET].active_retries == 0
    finally:
        await harness.stop()
        for f in bad:
            await f.stop()


async def test_the_retry_budget_grows_with_the_requests_in_flight(gateway, upstreams):
    budget = gateway.app[RETRY_BUDGET]
    for u in upstreams:
        await u.set_fault({"hang": True})
    async with aiohttp.ClientSession() as session:
        async def one():
            async with session.post(gateway.url + "/v1/chat/completions", data=CHAT,
                                    headers=gateway.headers()) as resp:
                return resp.status

        tasks = [asyncio.create_task(one()) for _ in range(40)]
        while sum(u.stats()["in_flight"] for u in upstreams) < 40:
            await asyncio.sleep(0.01)  # the fakes' counters have no event to await
        assert budget.active_requests == 40
        settings = gateway.app[CONFIG].current.retry
        assert max(settings.min_retries, int(budget.active_requests * settings.budget_ratio)) == 8
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    while budget.active_requests:
        await asyncio.sleep(0.01)  # the gateway notices each departed client
    assert budget.active_retries == 0


async def _dead_url() -> str:
    """A port that was just listening and is now closed: connections are refused."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("retry", [{"attempts": 1}, {"attempts": 3, "budget_ratio": 0, "min_retries": 0}],
                         ids=["no-attempts-left", "no-budget-left"])
@pytest.mark.parametrize("death", ["refused", "closed-before-a-byte"])
async def test_a_connection_that_failed_before_any_byte_moves_once_beyond_the_retry_bounds(tmp_path, retry, death):
    from proxy.fake_upstream import start_fake_upstream

    from .canned_upstream import CannedUpstream

    canned = None
    if death == "refused":
        dying_url = await _dead_url()
    else:
        canned = await CannedUpstream(b"").start()
        dying_url = canned.url
    fake = await start_fake_upstream(name="good")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("dying", dying_url, priority=1), upstream_entry("good", fake.url, priority=2)],
        retry=retry, health={"eject_after": 1000})  # keep the dying one first in line for every request
    await harness.start()
    try:
        async with aiohttp.ClientSession() as session:
            ok, failures = await _load(harness, session, 5, 1)
        assert (ok, failures) == (5, [])
        assert fake.stats()["requests"] == 5
        assert harness.app[HEALTH].get("dying").errors == 5
    finally:
        await harness.stop()
        await fake.stop()
        if canned is not None:
            await canned.stop()


async def test_a_timeout_is_not_moved_beyond_the_retry_bounds(tmp_path):
    from proxy.fake_upstream import start_fake_upstream

    slow = await start_fake_upstream(name="slow")
    good = await start_fake_upstream(name="good")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("slow", slow.url, priority=1, timeouts={"first_byte": "100ms"}),
        upstream_entry("good", good.url, priority=2)], retry={"attempts": 1})
    await harness.start()
    try:
        await slow.set_fault({"hang": True})  # the upstream may be working on it: a second run could bill twice
        async with aiohttp.ClientSession() as session:
            ok, failures = await _load(harness, session, 1, 1)
        assert (ok, failures) == (0, [504])
        assert good.stats()["requests"] == 0
    finally:
        await harness.stop()
        await slow.stop()
        await good.stop()

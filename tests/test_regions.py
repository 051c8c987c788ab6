"""Regions: the local region is preferred, another takes over only while none is healthy
locally, the move is counted, and traffic returns; real upstreams killed and revived."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from proxy.appkeys import BALANCER, CONFIG, HEALTH, TRANSPORT
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
ADMIN_KEY = "admin-key-for-regions-test-0123456789"


@pytest.fixture
async def regional(tmp_path, monkeypatch):
    """eu1 and eu2 in the local region eu, us1 in us, and an untagged shared upstream off by default."""
    monkeypatch.setenv("BM_TEST_ADMIN_KEY", ADMIN_KEY)
    fakes = {name: await start_fake_upstream(name=name) for name in ("eu1", "eu2", "us1")}
    ups = [upstream_entry("eu1", fakes["eu1"].url, region="eu"), upstream_entry("eu2", fakes["eu2"].url, region="eu"),
           upstream_entry("us1", fakes["us1"].url, region="us")]
    # Ejected stays ejected until the test's own probes readmit it: a cooldown that ran
    # out during a slow run would put a dead upstream on probation, counted as healthy.
    gateway = await GatewayHarness.write(str(tmp_path / "config"), ups, server={"region": "eu"},
                                         admin={"key_env": "BM_TEST_ADMIN_KEY"},
                                         health={"interval": "1h", "cooldown": "1h", "max_cooldown": "1h"}).start()
    yield gateway, fakes
    await gateway.stop()
    for fake in fakes.values():
        await fake.stop()


async def _load(gateway, session, total: int, concurrency: int, on_progress=None) -> tuple[int, list[int]]:
    ok, failures, sent = 0, [], 0

    async def worker() -> None:
        nonlocal ok, sent
        while sent < total:
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


async def _metric(gateway, session, name: str) -> str:
    async with session.get(gateway.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
        assert resp.status == 200
        text = await resp.text()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_local_region_preferred_failover_counted_and_traffic_returns(regional):
    gateway, fakes = regional
    async with aiohttp.ClientSession() as session:
        ok, failures = await _load(gateway, session, 40, 4)
        assert ok == 40, failures
        assert fakes["us1"].stats()["requests"] == 0  # local first, both local upstreams in turn
        assert fakes["eu1"].stats()["requests"] == 20 and fakes["eu2"].stats()["requests"] == 20

        # Both local upstreams die part-way through 2000 requests.
        total = 2000

        async def chaos(n: int) -> None:
            if n == 200:
                await fakes["eu1"].stop()
                await fakes["eu2"].stop()

        for fake in fakes.values():
            fake.reset_stats()
        ok, failures = await _load(gateway, session, total, 16, chaos)
        print(f"regions: {ok}/{total} succeeded with the local region killed; failures {failures}")
        assert ok / total >= 0.999, f"{len(failures)} failed: {failures[:10]}"
        assert fakes["us1"].stats()["requests"] >= total - 200 - 16
        moved = await _metric(gateway, session, "bluesminds_region_failover_total")
        count = int(float(moved.split()[-1]))
        assert moved.startswith('bluesminds_region_failover_total{local="eu",region="us"} ')
        assert count >= total - 200 - 16

        async with session.get(gateway.url + "/api/admin/health",
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
            assert resp.status == 200
            regions = (await resp.json())["regions"]
        assert regions["local"] == "eu"
        by_name = {r["region"]: r for r in regions["regions"]}
        assert by_name["eu"]["upstreams"] == ["eu1", "eu2"] and by_name["eu"]["healthy_count"] == 0
        assert by_name["us"] == {"region": "us", "local": False, "upstreams": ["us1"], "healthy": ["us1"],
                                 "healthy_count": 1, "total": 1}

        # The local region comes back: active probes readmit it, and traffic returns.
        await fakes["eu1"].start()
        await fakes["eu2"].start()
        snapshot = gateway.app[CONFIG].current
        health = gateway.app[HEALTH]
        for _ in range(snapshot.health.rise):
            await health.probe_all(snapshot, gateway.app[TRANSPORT])
        for fake in fakes.values():
            fake.reset_stats()
        ok, failures = await _load(gateway, session, 40, 4)
        assert ok == 40, failures
        assert fakes["us1"].stats()["requests"] == 0
        assert fakes["eu1"].stats()["requests"] + fakes["eu2"].stats()["requests"] == 40


async def test_untagged_upstream_belongs_to_every_region(tmp_path):
    fakes = [await start_fake_upstream(name=n) for n in ("any", "us1")]
    ups = [upstream_entry("any", fakes[0].url), upstream_entry("us1", fakes[1].url, region="us")]
    gateway = await GatewayHarness.write(str(tmp_path / "config"), ups, server={"region": "eu"}).start()
    try:
        async with aiohttp.ClientSession() as session:
            ok, failures = await _load(gateway, session, 10, 2)
        assert ok == 10, failures
        assert [f.stats()["requests"] for f in fakes] == [10, 0]
        assert gateway.app[BALANCER].region_moves == {}
    finally:
        await gateway.stop()
        for fake in fakes:
            await fake.stop()

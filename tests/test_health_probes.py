"""Health probes go through the gateway's own transport, pass on 2xx only, do
not follow redirects, and explain themselves without URLs."""

from __future__ import annotations

import asyncio

import pytest

from proxy.appkeys import CONFIG, HEALTH, TRANSPORT
from proxy.config import load_config
from proxy.fake_upstream import start_fake_upstream
from proxy.routing.health import HealthMonitor
from proxy.appkeys import FORWARDER
from proxy.upstream.http1 import ConnectionPool

from .gateway_harness import GatewayHarness, upstream_entry


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch):
    monkeypatch.setenv("PROBE_TEST_KEY", "sk-up")


@pytest.fixture
async def fake():
    up = await start_fake_upstream(name="demo-a")
    yield up
    await up.stop()


async def probed(tmp_path, url: str, **health):
    """A monitor and snapshot for one upstream `demo-a`, probed once with rise=fall=1."""
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("demo-a", url, api_key_env="PROBE_TEST_KEY")],
                                   health={"rise": 1, "fall": 1, **health})
    snapshot = load_config(harness.config_dir)
    monitor = HealthMonitor()
    monitor.reconcile(snapshot)
    pool = ConnectionPool()
    try:
        await monitor.probe_all(snapshot, pool)
    finally:
        await pool.aclose()
    return monitor, snapshot


async def test_a_probe_is_a_get_on_the_shared_transport(tmp_path):
    seen: list[bytes] = []

    async def serve(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"I\'m alive!"')
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monitor, _ = await probed(tmp_path, f"http://127.0.0.1:{port}/litellm")
    server.close()
    await server.wait_closed()
    assert seen == [b"GET /litellm/health/liveliness HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    b"Authorization: Bearer sk-up\r\n\r\n" % port]
    assert monitor.get("demo-a").last_check_ok is True
    assert monitor.reason("demo-a") is None


async def test_a_probe_answered_404_says_to_set_health_path(tmp_path, fake):
    monitor, snapshot = await probed(tmp_path, fake.url, path="/no/such/health")
    row = monitor.summary(snapshot)[0]
    assert (row["state"], row["last_error"]) == ("down", "probe answered 404; set health.path")
    assert monitor.reason("demo-a") == "probe answered 404; set health.path"


async def test_a_redirecting_probe_is_not_followed(tmp_path, fake):
    await fake.set_fault({"raw_status": 302, "health": True})
    monitor, snapshot = await probed(tmp_path, fake.url)
    assert monitor.summary(snapshot)[0]["state"] == "down"
    assert monitor.reason("demo-a") == "probe answered 302; redirects are not followed, set health.path or the URL"
    assert fake.stats()["health_checks"] == 1


async def test_a_refused_probe_names_the_cause_without_the_url(tmp_path, fake):
    url = fake.url
    await fake.stop()
    monitor, _ = await probed(tmp_path, url)
    assert monitor.reason("demo-a") == "probe failed: connection refused"
    assert "127.0.0.1" not in monitor.reason("demo-a")


async def test_reason_for_an_ejected_upstream_names_the_last_failure(tmp_path):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("demo-a", "http://127.0.0.1:9")],
                                   health={"eject_after": 2, "cooldown": "10s", "max_cooldown": "30s"})
    now = [500.0]
    monitor = HealthMonitor(clock=lambda: now[0])
    monitor.reconcile(load_config(harness.config_dir))
    assert monitor.reason("demo-a") is None
    monitor.failure("demo-a", "upstream answered 500")
    monitor.failure("demo-a", "upstream answered 500")
    assert monitor.reason("demo-a") == "ejected for 10s after upstream answered 500"
    now[0] += 10.5
    assert monitor.reason("demo-a") is None
    assert monitor.reason("unknown") is None


async def test_the_gateway_probes_through_the_transport_that_serves_v1(tmp_path, fake):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("demo-a", fake.url)])
    await harness.start()
    try:
        app = harness.app
        assert isinstance(app[TRANSPORT], ConnectionPool)
        assert app[TRANSPORT] is app[FORWARDER].pool
        await app[HEALTH].probe_all(app[CONFIG].current, app[TRANSPORT])
        assert app[HEALTH].get("demo-a").last_check_ok is True
        assert fake.stats()["health_checks"] >= 1
    finally:
        await harness.stop()

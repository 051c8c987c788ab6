"""GET /metrics exposes every series, from a registry that belongs to one app."""

from __future__ import annotations

import socket
import timeit
from types import SimpleNamespace

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics as metrics_module
from proxy.appkeys import HEALTH
from proxy.errors import PortInUse
from proxy.metrics import Metrics
from proxy.appkeys import METRICS, METRICS_LISTENER
from proxy.appkeys import USAGE

from .gateway_harness import GatewayHarness, upstream_entry


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_text_exposes_the_series(aiohttp_client):
    app = web.Application()
    metrics_module.setup(app)
    m = app[METRICS]
    m.observe_request("chat", 200, "gpt-4o", "a", 0.3)
    m.observe_request("chat", 200, "gpt-4o", "a", 1.7)
    m.observe_request("embeddings", 503, "embed-3", None, 0.01)
    m.observe_tokens("gpt-4o", 120, 30)
    m.observe_tokens("gpt-4o", 80, 0)
    m.limiter_rejected("tokens")
    m.limiter_rejected("insufficient_quota")
    m.limiter_rejected("tokens")
    m.set_upstream_health("a", "healthy")
    m.set_upstream_health("b", "ejected")
    m.set_upstream_health("b", True)
    app[USAGE] = SimpleNamespace(queue_depth=42, written=1000, batches=3, failed_batches=1, rejected=0)

    client = await aiohttp_client(app)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    got = samples(await response.text())

    assert got[("bluesminds_requests_total", (("model", "gpt-4o"), ("route", "chat"),
                                               ("status", "200"), ("upstream", "a")))] == 2
    assert got[("bluesminds_requests_total", (("model", "embed-3"), ("route", "embeddings"),
                                               ("status", "503"), ("upstream", "")))] == 1
    assert got[("bluesminds_request_duration_seconds_count", (("model", "gpt-4o"), ("route", "chat")))] == 2
    assert got[("bluesminds_request_duration_seconds_sum", (("model", "gpt-4o"), ("route", "chat")))] == 2.0
    assert got[("bluesminds_request_duration_seconds_bucket",
                (("le", "0.5"), ("model", "gpt-4o"), ("route", "chat")))] == 1
    assert got[("bluesminds_tokens_total", (("kind", "prompt"), ("model", "gpt-4o")))] == 200
    assert got[("bluesminds_tokens_total", (("kind", "completion"), ("model", "gpt-4o")))] == 30
    assert got[("bluesminds_limiter_rejections_total", (("kind", "tokens"),))] == 2
    assert got[("bluesminds_limiter_rejections_total", (("kind", "insufficient_quota"),))] == 1
    assert got[("bluesminds_upstream_up", (("upstream", "a"),))] == 1
    assert got[("bluesminds_upstream_up", (("upstream", "b"),))] == 1
    assert got[("bluesminds_upstream_health", (("state", "healthy"), ("upstream", "b")))] == 1
    assert got[("bluesminds_upstream_health", (("state", "ejected"), ("upstream", "b")))] == 0
    assert got[("bluesminds_usage_queue_depth", ())] == 42
    assert got[("bluesminds_usage_rows_written_total", ())] == 1000
    assert got[("bluesminds_usage_failed_batches_total", ())] == 1
    assert got[("bluesminds_usage_rows_rejected_total", ())] == 0

    app[USAGE].queue_depth = 7  # read at scrape time, not copied at startup
    got = samples(await (await client.get("/metrics")).text())
    assert got[("bluesminds_usage_queue_depth", ())] == 7


async def test_upstreams_that_leave_the_config_stop_being_exported():
    m = Metrics()
    m.set_upstream_health("gone", "unhealthy")
    assert b'bluesminds_upstream_up{upstream="gone"} 0.0' in m.render()
    m.forget_upstream("gone")
    assert b'upstream="gone"' not in m.render()


def test_each_app_has_its_own_registry():
    first, second = Metrics(), Metrics()
    first.observe_request("chat", 200, "m", "a", 0.1)
    assert b'bluesminds_requests_total{model="m"' in first.render()
    assert b'bluesminds_requests_total{model="m"' not in second.render()


def test_usage_metrics_read_zero_before_the_recorder_starts():
    m = Metrics()
    m.watch_usage(lambda: None)
    assert b"bluesminds_usage_queue_depth 0.0" in m.render()


def test_latency_buckets_are_cumulative_and_inclusive_of_their_bound():
    m = Metrics()
    for latency in (0.025, 0.026, 0.3, 400.0):
        m.observe_request("chat", 200, "m", "a", latency)
    text = m.render().decode()
    assert 'bluesminds_request_duration_seconds_bucket{le="0.025",model="m",route="chat"} 1.0' in text
    assert 'bluesminds_request_duration_seconds_bucket{le="0.05",model="m",route="chat"} 2.0' in text
    assert 'bluesminds_request_duration_seconds_bucket{le="0.5",model="m",route="chat"} 3.0' in text
    assert 'bluesminds_request_duration_seconds_bucket{le="300.0",model="m",route="chat"} 3.0' in text
    assert 'bluesminds_request_duration_seconds_bucket{le="+Inf",model="m",route="chat"} 4.0' in text
    assert 'bluesminds_request_duration_seconds_count{model="m",route="chat"} 4.0' in text
    assert 'bluesminds_requests_total{model="m",route="chat",status="200",upstream="a"} 4.0' in text
    # Printed for the record, not asserted: timings vary with the machine.
    per_call = timeit.timeit(lambda: m.observe_request("chat", 200, "m", "a", 0.2), number=20_000) / 20_000
    print(f"observe_request: {per_call * 1e6:.2f} µs")


def test_setup_follows_the_health_monitors_state_changes():
    app = web.Application()
    app[HEALTH] = SimpleNamespace(on_change=[])
    metrics_module.setup(app)
    for callback in app[HEALTH].on_change:
        callback("a", "ejected")
    assert b'bluesminds_upstream_health{state="ejected",upstream="a"} 1.0' in app[METRICS].render()


def test_client_chosen_model_names_cannot_grow_the_series_without_bound(monkeypatch):
    monkeypatch.setattr(metrics_module, "MAX_LABEL_SETS", 3)
    m = Metrics()
    for i in range(10):
        m.observe_request("chat", 404, f"no-such-model-{i}", None, 0.001)
        m.observe_tokens(f"no-such-model-{i}", 1, 0)
    got = samples(m.render().decode())
    requests = {labels: v for (name, labels), v in got.items() if name == "bluesminds_requests_total"}
    assert len(requests) == 4
    assert requests[(("model", "_other"), ("route", "chat"), ("status", "404"), ("upstream", ""))] == 7
    assert got[("bluesminds_tokens_total", (("kind", "prompt"), ("model", "_other")))] == 7


# -- who may scrape (server.metrics.access), through a real gateway ------------------------

ADMIN_ENV = "BLUESMINDS_METRICS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-metrics-tests"


async def metrics_gateway(tmp_path, monkeypatch, fake, **metrics) -> GatewayHarness:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    server = {"metrics": metrics} if metrics else {}
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", fake.url)],
                                   server=server, admin={"key_env": ADMIN_ENV})
    return await harness.start()


async def scrape(url: str, key: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics", headers=headers) as resp:
            return resp.status, await resp.text()


async def test_by_default_only_an_admin_may_scrape(tmp_path, monkeypatch, fake):
    harness = await metrics_gateway(tmp_path, monkeypatch, fake)
    try:
        anonymous = await scrape(harness.url)
        tenant = await scrape(harness.url, harness.key)
        admin = await scrape(harness.url, ADMIN_KEY)
    finally:
        await harness.stop()
    assert anonymous[0] == 401
    assert orjson.loads(anonymous[1])["error"]["code"] == "not_authenticated"
    assert tenant[0] == 401  # a bm- key is for /v1 only
    assert admin[0] == 200
    assert "bluesminds_upstream_up" in admin[1]


async def test_open_access_needs_no_key(tmp_path, monkeypatch, fake):
    harness = await metrics_gateway(tmp_path, monkeypatch, fake, access="open")
    try:
        status, text = await scrape(harness.url)
    finally:
        await harness.stop()
    assert status == 200
    assert 'bluesminds_upstream_up{upstream="a"} 1.0' in text


async def test_listener_mode_serves_metrics_only_on_the_separate_address(tmp_path, monkeypatch, fake):
    harness = await metrics_gateway(tmp_path, monkeypatch, fake, access="listener", listen="127.0.0.1:0")
    try:
        listener = harness.app[METRICS_LISTENER]
        on_main = await scrape(harness.url, ADMIN_KEY)
        on_listener = await scrape(f"http://127.0.0.1:{listener.port}")
    finally:
        await harness.stop()
    assert on_main[0] == 404
    assert orjson.loads(on_main[1])["error"]["message"] == (
        "Metrics are served on the separate metrics listener (server.metrics.listen), not on this port.")
    assert on_listener[0] == 200
    assert 'bluesminds_upstream_up{upstream="a"} 1.0' in on_listener[1]
    with pytest.raises(aiohttp.ClientConnectionError):  # stopped with the app
        await scrape(f"http://127.0.0.1:{listener.port}")


async def test_a_busy_metrics_port_names_the_setting(tmp_path, monkeypatch, fake):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        with pytest.raises(PortInUse) as caught:
            await metrics_gateway(tmp_path, monkeypatch, fake, access="listener", listen=f"127.0.0.1:{port}")
    finally:
        busy.close()
    assert str(caught.value) == (f"Port {port} on 127.0.0.1 is already in use; stop the process using it "
                                 "or choose another with server.metrics.listen.")

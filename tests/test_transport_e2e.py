"""Large, capped and broken upstream answers through the whole gateway, on real
servers: the transport's bounds as a tenant sees them."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from proxy.appkeys import CONFIG, HEALTH, TRANSPORT
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# Short enough that a hang shows as a failure quickly, long enough for a loaded machine.
TIMEOUTS = {"connect": "2s", "first_byte": "3s", "total": "20s"}


@pytest.fixture
async def fake():
    up = await start_fake_upstream(name="solo")
    yield up
    await up.stop()


@pytest.fixture
async def gateway(tmp_path, fake):
    harness = GatewayHarness.write(str(tmp_path / "config"),
                                   [upstream_entry("solo", fake.url, timeouts=TIMEOUTS)])
    await harness.start()
    yield harness
    await harness.stop()


async def post(gateway, session, path, body):
    async with session.post(gateway.url + path, json=body, headers=gateway.headers()) as r:
        return r.status, await r.json()


async def test_batch_embeddings_of_800_kib_are_answered_and_the_connection_serves_on(gateway, fake):
    async with aiohttp.ClientSession() as session:
        status, body = await post(gateway, session, "/v1/embeddings", {
            "model": "text-embedding-3-small", "input": [f"text {i}" for i in range(8)], "dimensions": 8192})
        assert status == 200, body
        assert [len(item["embedding"]) for item in body["data"]] == [8192] * 8
        status, body = await post(gateway, session, "/v1/chat/completions", CHAT)
        assert status == 200, body
    health = gateway.app[HEALTH].get("solo")
    assert (health.errors, health.ejections) == (0, 0)


async def test_a_1_mb_chat_answer_then_small_ones_on_the_same_upstream(gateway, fake):
    async with aiohttp.ClientSession() as session:
        await fake.set_fault({"huge": 1024 * 1024, "count": 1})
        status, body = await post(gateway, session, "/v1/chat/completions", CHAT)
        assert status == 200
        assert len(body["choices"][0]["message"]["content"]) > 1_000_000
        for _ in range(3):
            status, body = await post(gateway, session, "/v1/chat/completions", CHAT)
            assert (status, body["choices"][0]["message"]["content"]) == (200, "solo says hello from the")
    assert gateway.app[HEALTH].get("solo").errors == 0


async def test_an_answer_over_the_body_cap_is_a_502_that_does_not_blame_the_upstream(gateway, fake):
    gateway.app[TRANSPORT].max_body = 50_000
    await fake.set_fault({"huge": 60_000})
    async with aiohttp.ClientSession() as session:
        for _ in range(4):  # more than eject_after: a healthy upstream must stay in rotation
            status, body = await post(gateway, session, "/v1/chat/completions", CHAT)
            assert status == 502
            assert body["error"]["code"] == "upstream_response_too_large"
            assert "larger than the gateway's limit of 50000 bytes" in body["error"]["message"]
        fake.clear_faults()
        status, _ = await post(gateway, session, "/v1/chat/completions", CHAT)
        assert status == 200
    health = gateway.app[HEALTH].get("solo")
    assert (health.errors, health.ejections) == (0, 0)
    assert fake.stats()["requests"] == 5  # never retried: another try would get the same answer


async def test_an_error_body_is_read_only_up_to_a_bound(tmp_path):
    sent = asyncio.Event()

    async def huge_error(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        # Announces 50 MB, sends 200 KB, then stalls: an unbounded read would wait it out.
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 50000000\r\n\r\n"
                     + b"e" * 200_000)
        await writer.drain()
        sent.set()
        await reader.read()

    server = await asyncio.start_server(huge_error, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("raw", url, timeouts=TIMEOUTS)])
    await harness.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await post(harness, session, "/v1/chat/completions", CHAT)
        assert status == 400
        assert body["error"]["message"] == "The upstream rejected the request: " + "e" * 200
    finally:
        await harness.stop()
        server.close()
        await server.wait_closed()


async def test_a_body_cut_by_a_reset_is_never_relayed_as_whole(gateway, fake):
    await fake.set_fault({"cut_body": 9})
    async with aiohttp.ClientSession() as session:
        status, body = await post(gateway, session, "/v1/chat/completions", CHAT)
    assert (status, body["error"]["code"]) == (502, "upstream_unreachable")


async def test_the_upstream_body_cap_comes_from_config_and_follows_a_reload(tmp_path, fake):
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("solo", fake.url)],
                                   server={"max_upstream_body": "50KB"})
    await harness.start()
    try:
        assert harness.app[TRANSPORT].max_body == 50_000
        harness.sections["server"]["max_upstream_body"] = "2MiB"
        harness.save()
        await harness.app[CONFIG].reload()
        assert harness.app[TRANSPORT].max_body == 2 * 1024 * 1024
    finally:
        await harness.stop()

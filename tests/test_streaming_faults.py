"""Streams never end cleanly when they were cut, and a departed client frees its upstream at once."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import orjson
import pytest

from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

STREAM = orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})


async def _events(resp: aiohttp.ClientResponse) -> list[bytes]:
    raw = await resp.read()
    return [e for e in raw.split(b"\n\n") if e]


async def _wait_until(predicate, within: float) -> float:
    """Poll a condition that has no event to await (the fake's counters); return the time taken."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def slow_gateway(tmp_path):
    fake = await start_fake_upstream(name="slow", stream_chunks=200, chunk_delay=0.02)
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("slow", fake.url)])
    await harness.start()
    yield harness, fake
    await harness.stop()
    await fake.stop()


async def test_client_disconnect_mid_stream_closes_the_upstream_connection_within_a_second(slow_gateway):
    harness, fake = slow_gateway
    session = aiohttp.ClientSession()
    resp = await session.post(harness.url + "/v1/chat/completions", data=STREAM, headers=harness.headers())
    assert resp.status == 200
    await resp.content.readline()  # the stream is flowing
    assert fake.stats()["open_streams"] == 1
    resp.close()
    await session.close()
    await _wait_until(lambda: fake.stats()["open_streams"] == 0, within=1.0)
    assert fake.stats()["cancelled"] == 1


async def test_upstream_cut_mid_stream_gives_an_error_event_not_done(tmp_path):
    fake = await start_fake_upstream(name="cut", stream_chunks=10)
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("cut", fake.url)])
    await harness.start()
    try:
        await fake.set_fault({"cut_after": 3})
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", data=STREAM,
                                    headers=harness.headers()) as resp:
                events = await _events(resp)
        assert resp.status == 200
        assert b"data: [DONE]" not in events
        last = orjson.loads(events[-1][len(b"data: "):])
        assert last["error"]["code"] == "upstream_stream_interrupted"
        assert len(events) == 4  # three relayed chunks, then the error

        client = openai.AsyncOpenAI(base_url=harness.url + "/v1", api_key=harness.key, max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
    finally:
        await harness.stop()
        await fake.stop()


async def test_failure_before_the_first_byte_fails_over(tmp_path):
    broken = await start_fake_upstream(name="broken")
    good = await start_fake_upstream(name="good")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("broken", broken.url, priority=1), upstream_entry("good", good.url, priority=2)])
    await harness.start()
    try:
        for fault in ({"reset": True, "count": 1}, {"status": 500, "count": 1}, {"cut_after": 0, "count": 1}):
            await broken.set_fault(fault)
            async with aiohttp.ClientSession() as session:
                async with session.post(harness.url + "/v1/chat/completions", data=STREAM,
                                        headers=harness.headers()) as resp:
                    events = await _events(resp)
            assert resp.status == 200, fault
            assert events[-1] == b"data: [DONE]", fault
            assert resp.headers["x-bluesminds-upstream"] == "good", fault
    finally:
        await harness.stop()
        await broken.stop()
        await good.stop()


async def test_stream_chunks_are_relayed_as_they_arrive(slow_gateway):
    harness, fake = slow_gateway
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/chat/completions", data=STREAM,
                                headers=harness.headers()) as resp:
            # The first content arrives long before the 4 s the whole stream takes.
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=2.0)
            assert first.startswith(b"data: {")
            resp.close()

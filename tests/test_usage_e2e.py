"""One exact usage row per request, streams included: cut, abandoned, with and without include_usage."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest

from proxy.appkeys import USAGE
from proxy.fake_upstream import start_fake_upstream

from .db_access import query_dicts
from .gateway_harness import GatewayHarness, upstream_entry


def rows(harness: GatewayHarness) -> list[dict]:
    return query_dicts(harness.db_path, "SELECT * FROM usage ORDER BY id")


async def settled(harness: GatewayHarness) -> list[dict]:
    await harness.app[USAGE].flush()
    return rows(harness)


@pytest.fixture
async def fake():
    upstream = await start_fake_upstream(name="u", stream_chunks=10)
    yield upstream
    await upstream.stop()


@pytest.fixture
async def harness(tmp_path, fake):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)])
    await h.start()
    yield h
    await h.stop()


def client(h: GatewayHarness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=h.key, max_retries=0)


async def test_non_stream_row_has_upstream_usage_and_cost(harness):
    await client(harness).chat.completions.create(
        model="mini", messages=[{"role": "user", "content": "one two three"}], max_tokens=4)
    [row] = await settled(harness)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (4, 4, 8)
    assert row["estimated"] == 0 and row["partial"] == 0 and row["stream"] == 0
    assert row["requested_model"] == "mini" and row["served_model"] == "gpt-4o-mini"
    assert row["upstream"] == "u" and row["status"] == 200
    assert row["cost_nano"] == 4 * 150 + 4 * 600  # nano-dollars, exactly: $0.15 and $0.60 per 1M
    assert row["user_id"] == harness.user_id and row["key_id"] is not None


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_row_uses_upstream_usage_whether_or_not_the_client_asked(harness, fake, include_usage):
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await client(harness).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True, **extra)
    chunks = [c async for c in stream]
    assert (chunks[-1].usage is not None) is include_usage
    assert fake.stats()["last_body"]["stream_options"] == {"include_usage": True}  # always asked upstream
    [row] = await settled(harness)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 10)
    assert row["estimated"] == 0 and row["partial"] == 0 and row["stream"] == 1
    assert row["ttfb_ms"] is not None and row["ttfb_ms"] <= row["latency_ms"]


async def test_cut_stream_is_billed_for_what_was_delivered_and_marked(harness, fake):
    await fake.set_fault({"cut_after": 4})
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/chat/completions", headers=harness.headers(),
                                data=orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                                                   "messages": [{"role": "user", "content": "hi"}]})) as resp:
            await resp.read()
    [row] = await settled(harness)
    assert row["partial"] == 1 and row["estimated"] == 1
    assert row["status"] == 502 and row["error_type"] == "cut"
    assert row["completion_tokens"] >= 1  # three content pieces reached the client
    assert row["cost_nano"] > 0


async def test_client_that_leaves_mid_stream_gets_a_partial_row(tmp_path):
    slow = await start_fake_upstream(name="slow", stream_chunks=100, chunk_delay=0.02)
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("slow", slow.url)])
    await h.start()
    try:
        session = aiohttp.ClientSession()
        resp = await session.post(h.url + "/v1/chat/completions", headers=h.headers(),
                                  data=orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                                                     "messages": [{"role": "user", "content": "hi"}]}))
        for _ in range(3):
            await resp.content.readuntil(b"\n\n")
        resp.close()
        await session.close()
        recorder = h.app[USAGE]
        while recorder.accepted == 0:  # the handler's cancellation records the row
            await asyncio.sleep(0.01)
        [row] = await settled(h)
        assert row["status"] == 499 and row["partial"] == 1 and row["error_type"] == "client_left"
        assert row["completion_tokens"] >= 1
    finally:
        await h.stop()
        await slow.stop()


async def test_error_rows_are_kept_with_their_type(harness, fake):
    await fake.set_fault({"status": 400})
    with pytest.raises(openai.BadRequestError):
        await client(harness).chat.completions.create(model="gpt-4o-mini",
                                                      messages=[{"role": "user", "content": "hi"}])
    [row] = await settled(harness)
    assert row["status"] == 400 and row["total_tokens"] == 0 and row["cost_nano"] == 0


async def test_embeddings_row(harness):
    await client(harness).embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    [row] = await settled(harness)
    assert (row["route"], row["prompt_tokens"], row["completion_tokens"]) == ("embeddings", 3, 0)


async def test_keys_api_reports_each_keys_usage(harness):
    await client(harness).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    await client(harness).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    await harness.app[USAGE].flush()
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/api/auth/login", json={
                "email": "tenant@example.com", "password": "correct horse battery"}) as resp:
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        async with session.get(harness.url + "/api/keys", headers=auth) as resp:
            [key] = (await resp.json())["data"]
        async with session.get(harness.url + f"/api/keys/{key['id']}", headers=auth) as resp:
            one = await resp.json()
    for view in (key, one):
        assert view["usage"]["requests"] == 2
        assert view["usage"]["tokens"] == 2 * (2 + 10)
        assert view["usage"]["last_30d"]["requests"] == 2
        assert view["usage"]["cost"] == pytest.approx(2 * (2 * 0.15 + 10 * 0.6) / 1e6)

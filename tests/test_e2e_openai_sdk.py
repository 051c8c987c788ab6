"""The official openai SDK through the gateway to three fake upstreams: every route works as against OpenAI."""

from __future__ import annotations

import base64
import struct

import openai
import pytest


def client(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)


async def test_chat_completion(gateway):
    reply = await client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}])
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.split()[0] in {"a", "b", "c"}
    assert reply.usage.prompt_tokens == 3  # two words + one per message
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_alias_resolves_and_upstream_gets_canonical_name(gateway, upstreams):
    reply = await client(gateway).chat.completions.create(
        model="mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "gpt-4o-mini"
    bodies = [u.stats()["last_body"] for u in upstreams if u.stats()["requests"]]
    assert bodies[0]["model"] == "gpt-4o-mini"


async def test_chat_stream_without_include_usage_carries_no_usage(gateway):
    stream = await client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks, "the stream delivered nothing"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach a client that did not ask"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.split()[0] in {"a", "b", "c"}


async def test_chat_stream_with_include_usage_ends_with_usage_chunk(gateway):
    stream = await client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


async def test_legacy_completions(gateway):
    reply = await client(gateway).completions.create(model="gpt-4o-mini", prompt="say hi", max_tokens=3)
    assert reply.object == "text_completion"
    assert reply.usage.completion_tokens == 3
    assert reply.choices[0].finish_reason == "length"


async def test_legacy_completions_stream(gateway):
    stream = await client(gateway).completions.create(model="gpt-4o-mini", prompt="say hi", stream=True)
    texts = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(texts).split()[0] in {"a", "b", "c"}


async def test_embeddings_base64_passes_through_untouched(gateway):
    # The SDK asks for base64 by default and decodes it itself.
    reply = await client(gateway).embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 8
    assert reply.usage.prompt_tokens == 2


async def test_embeddings_float(gateway):
    reply = await client(gateway).embeddings.create(model="text-embedding-3-small", input="one",
                                                    encoding_format="float")
    assert isinstance(reply.data[0].embedding[0], float)


async def test_models_lists_configured_models(gateway):
    page = await client(gateway).models.list()
    ids = sorted(m.id for m in page.data)
    assert ids == ["gpt-4o-mini", "text-embedding-3-small"]
    assert all(m.object == "model" and m.owned_by and m.created for m in page.data)


async def test_same_routes_under_api_v1(gateway):
    c = openai.AsyncOpenAI(base_url=gateway.url + "/api/v1", api_key=gateway.key, max_retries=0)
    reply = await c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content


async def test_request_id_is_honoured_sent_upstream_and_returned(gateway, upstreams):
    c = client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-request-id": "trace-123"})
    assert raw.headers["x-request-id"] == "trace-123"
    seen = [u.stats()["last_headers"].get("x-request-id") for u in upstreams if u.stats()["requests"]]
    assert seen == ["trace-123"]


async def test_client_credentials_never_reach_upstream(gateway, upstreams):
    await client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        extra_headers={"Cookie": "session=abc", "X-Forwarded-For": "1.2.3.4"})
    headers = next(u.stats()["last_headers"] for u in upstreams if u.stats()["requests"])
    assert "authorization" not in headers  # these upstreams have no key configured
    assert "cookie" not in headers
    assert gateway.key not in str(headers)


async def test_wrong_key_is_401_in_openai_shape(gateway):
    c = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="bm-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "invalid_api_key"
    assert "bm-wrong" not in info.value.message


async def test_unknown_model_is_404_model_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as info:
        await client(gateway).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"
    assert "`gpt-9`" in info.value.message


def _floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))

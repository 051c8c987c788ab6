"""The gateway in front of a real LiteLLM proxy, driven by the official openai SDK."""

from __future__ import annotations

import openai
import pytest

from . import litellm_process
from .gateway_harness import GatewayHarness, upstream_entry

pytestmark = pytest.mark.skipif(
    not litellm_process.available(),
    reason=f"LiteLLM is not installed at {litellm_process.EXECUTABLE}; run scripts/install-litellm",
)


@pytest.fixture
async def litellm_gateway(tmp_path, monkeypatch):
    config = str(tmp_path / "litellm.yaml")
    litellm_process.write_config(config)
    proc = litellm_process.LiteLLMProcess(config)
    proc.start()
    try:
        await proc.wait_ready()
        monkeypatch.setenv("BM_TEST_LITELLM_KEY", litellm_process.MASTER_KEY)
        harness = GatewayHarness.write(str(tmp_path / "cfg"), [
            upstream_entry("litellm", proc.url, api_key_env="BM_TEST_LITELLM_KEY")])
        await harness.start()
        yield harness
        await harness.stop()
    finally:
        proc.stop()


async def test_every_route_through_litellm(litellm_gateway):
    client = openai.AsyncOpenAI(base_url=litellm_gateway.url + "/v1", api_key=litellm_gateway.key, max_retries=0)

    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from LiteLLM"
    assert reply.usage.total_tokens > 0

    chunks = [c async for c in await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from LiteLLM"
    assert all(c.usage is None for c in chunks), "usage leaked to a client that did not ask for it"
    assert all(c.choices for c in chunks)

    chunks = [c async for c in await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []

    completion = await client.completions.create(model="gpt-4o-mini", prompt="hi")
    assert completion.choices[0].text == "Hello from LiteLLM"

    embedding = await client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert embedding.data[0].embedding == [0.25, 0.5, 0.75]

    models = await client.models.list()
    assert {m.id for m in models.data} == {"gpt-4o-mini", "text-embedding-3-small"}



@pytest.fixture
async def litellm_over_fake(tmp_path, monkeypatch, upstreams):
    """LiteLLM forwarding to the project's fake upstream, which serves the Responses API natively."""
    config = str(tmp_path / "litellm.yaml")
    litellm_process.write_config(config, upstream_base=upstreams[0].url + "/v1")
    proc = litellm_process.LiteLLMProcess(config)
    proc.start()
    try:
        await proc.wait_ready()
        monkeypatch.setenv("BM_TEST_LITELLM_KEY", litellm_process.MASTER_KEY)
        harness = GatewayHarness.write(str(tmp_path / "cfg"), [
            upstream_entry("litellm", proc.url, api_key_env="BM_TEST_LITELLM_KEY")])
        await harness.start()
        yield harness
        await harness.stop()
    finally:
        proc.stop()


async def test_responses_through_litellm(litellm_over_fake, upstreams):
    """A real LiteLLM as the gateway's upstream for /v1/responses: typed events relayed,
    usage read from the terminal event, and a follow-up by previous_response_id."""
    client = openai.AsyncOpenAI(base_url=litellm_over_fake.url + "/v1", api_key=litellm_over_fake.key,
                                max_retries=0)
    reply = await client.responses.create(model="gpt-4o-mini", input="hi there")
    assert reply.output_text == "a says hello from the"
    assert reply.usage.input_tokens == 3

    stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "a says hello from the"
    assert events[-1].response.usage.output_tokens == 5
    assert upstreams[0].stats()["by_path"]["/v1/responses"] == 2

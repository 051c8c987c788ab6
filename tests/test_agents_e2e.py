"""The OpenAI Agents SDK (`openai-agents`) with the gateway as its OpenAI client: it speaks
the Responses API by default."""

from __future__ import annotations

import openai
import pytest

agents = pytest.importorskip("agents", reason="openai-agents is not installed (pip install '.[test]')")


async def test_runner_run_through_the_gateway(gateway, upstreams):
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(
        openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0),
        use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agent = agents.Agent(name="helper", instructions="Answer briefly.", model="gpt-4o-mini")
    result = await agents.Runner.run(agent, "Say hello")
    assert result.final_output.split()[0] in {"a", "b", "c"}
    assert sum(u.stats()["by_path"].get("/v1/responses", 0) for u in upstreams) == 1
    usage = result.context_wrapper.usage
    assert usage.requests == 1
    assert usage.output_tokens == 5


async def test_runner_run_streamed_through_the_gateway(gateway):
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(
        openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0),
        use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agent = agents.Agent(name="helper", instructions="Answer briefly.", model="gpt-4o-mini")
    result = agents.Runner.run_streamed(agent, "Say hello")
    kinds = [event.type async for event in result.stream_events()]
    assert "raw_response_event" in kinds
    assert result.final_output.split()[0] in {"a", "b", "c"}

"""POST /v1/messages and /v1/messages/count_tokens through a real gateway, with the `anthropic` SDK."""

from __future__ import annotations

import aiohttp
import anthropic
import orjson
import pytest

from proxy.appkeys import USAGE
from proxy.fake_upstream import start_fake_upstream

from .db_access import execute, query_dicts
from .gateway_harness import GatewayHarness, upstream_entry

MODELS = {
    # The public name differs from the upstream's, so every answer shows which one the tenant sees.
    "claude-sonnet": {"upstream_model": "anthropic/claude-upstream-x",
                      "pricing": {"input": 3.0, "output": 15.0, "cached_input": 0.3}},
    "gpt-4o-mini": {"pricing": {"input": 0.15, "output": 0.6}},
}
MESSAGES = [{"role": "user", "content": "one two three"}]


@pytest.fixture
async def fake():
    upstream = await start_fake_upstream(name="u", stream_chunks=6)
    yield upstream
    await upstream.stop()


@pytest.fixture
async def harness(tmp_path, fake):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)], models=MODELS)
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
async def clients():
    made: list[anthropic.AsyncAnthropic] = []

    def make(h: GatewayHarness, key: str | None = None) -> anthropic.AsyncAnthropic:
        # The SDK sends the key as x-api-key and appends /v1/messages to base_url.
        made.append(anthropic.AsyncAnthropic(base_url=h.url, api_key=key or h.key, max_retries=0))
        return made[-1]
    yield make
    for c in made:
        await c.close()


async def settled(h: GatewayHarness) -> list[dict]:
    await h.app[USAGE].flush()
    return query_dicts(h.db_path, "SELECT * FROM usage ORDER BY id")


async def test_sdk_non_stream_with_x_api_key_sees_the_public_model_and_is_billed_with_the_cache(clients, harness, fake):
    message = await clients(harness).messages.create(
        model="claude-sonnet", max_tokens=100, messages=MESSAGES,
        system=[{"type": "text", "text": "cached words here", "cache_control": {"type": "ephemeral"}}])
    assert message.model == "claude-sonnet"
    assert message.content[0].text == "u says hello from the fake"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 6)
    assert message.usage.cache_read_input_tokens == 3
    assert fake.stats()["last_body"]["model"] == "anthropic/claude-upstream-x"
    assert fake.stats()["by_path"] == {"/v1/messages": 1}
    [row] = await settled(harness)
    assert (row["route"], row["status"], row["upstream"], row["served_model"]) == ("messages", 200, "u", "claude-sonnet")
    # input_tokens excludes the cache: the prompt billed is input + cache reads, the reads at the cached price.
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (7, 6, 3)
    assert row["estimated"] == 0 and row["partial"] == 0
    assert row["cost_nano"] == 4 * 3_000 + 3 * 300 + 6 * 15_000  # cache reads at the cached price


async def test_sdk_stream_yields_typed_events_with_the_public_model_and_usage(clients, harness):
    events = []
    async with clients(harness).messages.stream(model="claude-sonnet", max_tokens=100, messages=MESSAGES) as stream:
        async for event in stream:
            events.append(event.type)
        final = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "message_delta" in events and events.count("text") == 6
    assert final.model == "claude-sonnet"
    assert final.content[0].text == "u says hello from the fake"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 6)
    [row] = await settled(harness)
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"], row["partial"]) == (4, 6, 1, 0)
    assert row["estimated"] == 0 and row["status"] == 200


async def test_bearer_authorization_works_as_well_as_x_api_key(harness):
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/messages", headers=harness.headers(),
                                json={"model": "claude-sonnet", "max_tokens": 5, "messages": MESSAGES}) as resp:
            assert resp.status == 200
            assert (await resp.json())["type"] == "message"


async def test_errors_come_in_anthropics_shape_and_the_sdk_raises_its_own_classes(clients, harness):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await clients(harness, key="bm-not-a-key").messages.create(model="claude-sonnet", max_tokens=5,
                                                                    messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert set(caught.value.body["error"]) == {"type", "message"}

    with pytest.raises(anthropic.NotFoundError) as caught:
        await clients(harness).messages.create(model="no-such-model", max_tokens=5, messages=MESSAGES)
    assert caught.value.body["error"] == {
        "type": "not_found_error",
        "message": "The model `no-such-model` does not exist or you do not have access to it."}

    with pytest.raises(anthropic.BadRequestError) as caught:
        await clients(harness).messages.create(model="claude-sonnet", max_tokens=0, messages=MESSAGES)
    assert caught.value.body["error"] == {"type": "invalid_request_error",
                                          "message": "Invalid 'max_tokens': expected an integer of at least 1."}


async def test_bad_bodies_answer_400_in_anthropics_shape(harness):
    cases = [
        ({"max_tokens": 5, "messages": MESSAGES}, "Missing required parameter: 'model'."),
        ({"model": "claude-sonnet", "max_tokens": 5}, "Missing required parameter: 'messages'."),
        ({"model": "claude-sonnet", "messages": MESSAGES}, "Missing required parameter: 'max_tokens'."),
        ({"model": "claude-sonnet", "max_tokens": "5", "messages": MESSAGES},
         "Invalid type for 'max_tokens': expected an integer."),
        ({"model": "claude-sonnet", "max_tokens": 5, "messages": MESSAGES, "api_base": "http://evil"},
         "Unrecognized request argument supplied: api_base. The gateway chooses the upstream; remove this field."),
    ]
    async with aiohttp.ClientSession() as session:
        for body, message in cases:
            async with session.post(harness.url + "/v1/messages", json=body,
                                    headers={"x-api-key": harness.key}) as resp:
                assert (resp.status, await resp.json()) == (
                    400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        async with session.post(harness.url + "/v1/messages", data=b"{not json",
                                headers={"x-api-key": harness.key}) as resp:
            answer = await resp.json()
            assert resp.status == 400 and answer["error"]["type"] == "invalid_request_error"
            assert answer["error"]["message"].startswith("The request body is not valid JSON")


async def test_count_tokens_answers_the_upstreams_count_and_charges_no_tokens(clients, harness, fake):
    counted = await clients(harness).messages.count_tokens(model="claude-sonnet", messages=MESSAGES)
    assert counted.input_tokens == 4
    assert fake.stats()["by_path"] == {"/v1/messages/count_tokens": 1}
    [row] = await settled(harness)
    assert (row["route"], row["status"], row["prompt_tokens"], row["completion_tokens"]) == (
        "messages_count_tokens", 200, 0, 0)


async def test_a_stream_cut_before_message_stop_ends_with_an_error_event_and_is_billed_partial(harness, fake):
    await fake.set_fault({"cut_after": 5})  # message_start, block start, ping, two deltas
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/messages", headers={"x-api-key": harness.key},
                                json={"model": "claude-sonnet", "max_tokens": 100, "messages": MESSAGES,
                                      "stream": True}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
            raw = await resp.read()
    events = raw.split(b"\n\n")
    assert events[0].startswith(b"event: message_start\n")
    assert b'"model":"claude-sonnet"' in events[0] and b"claude-upstream-x" not in raw
    assert events[-2] == b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {
        "type": "api_error", "message": "The upstream connection failed mid-stream; the answer is incomplete."}})
    assert b"message_stop" not in raw
    [row] = await settled(harness)
    assert (row["status"], row["partial"], row["estimated"], row["error_type"]) == (502, 1, 1, "cut")
    assert row["completion_tokens"] == 2  # "u" and " says": what was delivered


async def test_the_sdk_raises_on_a_cut_stream(clients, harness, fake):
    await fake.set_fault({"cut_after": 5})
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with clients(harness).messages.stream(model="claude-sonnet", max_tokens=100,
                                                   messages=MESSAGES) as stream:
            async for _ in stream:
                pass
    assert "incomplete" in str(caught.value)


async def test_malformed_upstream_answers_are_502_in_anthropics_shape(clients, harness, fake):
    await fake.set_fault({"not_json": True})
    with pytest.raises(anthropic.APIStatusError) as caught:
        await clients(harness).messages.create(model="claude-sonnet", max_tokens=5, messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body == {"type": "error", "error": {
        "type": "api_error",
        "message": "The upstream answered with something that is not an OpenAI-compatible response."}}


async def test_upstream_garbage_events_pass_through_and_end_with_an_error_event(harness, fake):
    await fake.set_fault({"sse_garbage": True})
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/messages", headers={"x-api-key": harness.key},
                                json={"model": "claude-sonnet", "max_tokens": 5, "messages": MESSAGES,
                                      "stream": True}) as resp:
            raw = await resp.read()
    assert raw.endswith(b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {
        "type": "api_error", "message": "The upstream closed the stream before it finished; the answer is incomplete."}})
        + b"\n\n")
    [row] = await settled(harness)
    assert (row["status"], row["partial"]) == (502, 1)


async def test_a_key_without_the_messages_scope_gets_permission_error(clients, harness):
    execute(harness.db_path, "UPDATE api_keys SET scopes = ?", (orjson.dumps(["chat"]).decode(),))
    app_harness = GatewayHarness(config_dir=harness.config_dir, key=harness.key, sections=harness.sections)
    await harness.stop()
    await app_harness.start()  # a fresh key cache reads the narrowed scopes
    try:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            await clients(app_harness).messages.create(model="claude-sonnet", max_tokens=5, messages=MESSAGES)
        assert caught.value.body["error"] == {
            "type": "permission_error", "message": "This API key lacks the 'messages' scope; create a key that has it."}
    finally:
        await app_harness.stop()

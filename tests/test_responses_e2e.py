"""The Responses API through the gateway to three real fake upstreams, with the official openai SDK:
create (sync, async, stream), follow-ups pinned to the upstream that holds the response,
ownership as an authorization matrix, accounting from the terminal event."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from proxy.appkeys import STORE, USAGE
from proxy.cli.accounts import create_user_and_key
from proxy.fake_upstream import CONFIG_KEY
from proxy.fake_upstream.responses import STORE_KEY

from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import needs_redis, redis_server, redis_url  # noqa: F401  (fixtures)

ADMIN_ENV = "BLUESMINDS_TEST_RESPONSES_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-responses-tests"
MODELS = {
    "gpt-4o-mini": {"aliases": ["mini"], "pricing": {"input": 1.0, "output": 4.0, "cached_input": 0.5}},
}


@pytest.fixture
async def gateway(tmp_path, upstreams, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    harness = GatewayHarness.write(str(tmp_path / "config"),
                                   [upstream_entry(name, fake.url) for name, fake in zip("abc", upstreams)],
                                   models=MODELS, admin={"key_env": ADMIN_ENV})
    await harness.start()
    yield harness
    await harness.stop()


def client(gateway, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key or gateway.key, max_retries=0)


def holder_of(upstreams, response_id: str) -> str:
    for fake in upstreams:
        if response_id in fake.app[STORE_KEY]:
            return fake.url
    raise AssertionError(f"no upstream holds {response_id}")


async def usage_rows(gateway) -> list[dict]:
    await gateway.app[USAGE].flush()

    def read(conn):
        cursor = conn.execute("SELECT route, status, upstream, prompt_tokens, completion_tokens, cached_tokens, "
                              "reasoning_tokens, cost_nano, partial, estimated FROM usage ORDER BY id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]
    return await gateway.app[STORE].read(read)


async def test_create_non_stream_async(gateway):
    reply = await client(gateway).responses.create(model="gpt-4o-mini", input="hello there")
    assert reply.object == "response"
    assert reply.id.startswith("resp_")
    assert reply.status == "completed"
    assert reply.output_text.split()[0] in {"a", "b", "c"}
    assert reply.usage.input_tokens == 3  # two words + one for the message
    assert reply.usage.output_tokens == 5


async def test_create_sync_client(gateway):
    sync = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    reply = await asyncio.to_thread(sync.responses.create, model="gpt-4o-mini", input="hi")
    assert reply.status == "completed"
    assert reply.usage.output_tokens == 5


async def test_stream_typed_events_end_with_completed_and_no_done(gateway):
    stream = await client(gateway).responses.create(model="gpt-4o-mini", input="hi", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/responses", headers=gateway.headers(),
                             json={"model": "gpt-4o-mini", "input": "hi", "stream": True}) as raw:
            assert raw.status == 200
            assert raw.headers["Content-Type"] == "text/event-stream"
            body = await raw.read()
    assert b"[DONE]" not in body
    assert body.startswith(b"event: response.created\ndata: ")
    assert body.rstrip().split(b"\n\n")[-1].startswith(b"event: response.completed\n")


async def test_previous_response_id_chain_lands_on_the_holder_each_time(gateway, upstreams):
    api = client(gateway)
    first = await api.responses.create(model="gpt-4o-mini", input="one two")
    holder = holder_of(upstreams, first.id)
    chain = [first]
    for _ in range(4):
        chain.append(await api.responses.create(model="gpt-4o-mini", input="more", previous_response_id=chain[-1].id))
        assert holder_of(upstreams, chain[-1].id) == holder
    streamed = await api.responses.create(model="gpt-4o-mini", input="more", previous_response_id=chain[-1].id,
                                          stream=True)
    last = [e async for e in streamed][-1]
    assert holder_of(upstreams, last.response.id) == holder
    # The fake counts the whole previous chain as cached input: proof it continued the chain.
    assert chain[1].usage.input_tokens_details.cached_tokens == first.usage.total_tokens
    hit = [u for u in upstreams if u.url == holder][0]
    assert hit.stats()["by_path"]["/v1/responses"] == 6


async def test_three_chains_each_follow_their_own_upstream(gateway, upstreams):
    api = client(gateway)
    heads = [await api.responses.create(model="gpt-4o-mini", input=f"chain {i}") for i in range(6)]
    holders = {holder_of(upstreams, h.id) for h in heads}
    assert len(holders) == 3, "the balancer spreads new responses over all three upstreams"
    for head in heads:
        follow = await api.responses.create(model="gpt-4o-mini", input="next", previous_response_id=head.id)
        assert holder_of(upstreams, follow.id) == holder_of(upstreams, head.id)
        got = await api.responses.retrieve(follow.id)
        assert got.id == follow.id
        items = await api.responses.input_items.list(follow.id)
        assert [i.content[0].text for i in items.data] == ["next", f"chain {heads.index(head)}"]


async def test_follow_ups_retrieve_delete_cancel(gateway, upstreams):
    api = client(gateway)
    made = await api.responses.create(model="gpt-4o-mini", input="keep me")
    assert (await api.responses.retrieve(made.id)).output_text == made.output_text
    background = await api.responses.create(model="gpt-4o-mini", input="later", background=True)
    assert background.status == "queued"
    cancelled = await api.responses.cancel(background.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError) as refused:
        await api.responses.cancel(made.id)  # the upstream's own 400 is relayed
    assert "background=true" in refused.value.message
    await api.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(made.id)  # the upstream no longer has it


async def test_unknown_previous_response_id_is_a_400_never_forwarded(gateway, upstreams):
    with pytest.raises(openai.BadRequestError) as err:
        await client(gateway).responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_nope")
    assert err.value.code == "previous_response_not_found"
    assert err.value.body["param"] == "previous_response_id"
    assert "resp_nope" in err.value.message
    assert sum(u.stats()["requests"] for u in upstreams) == 0


def _other_key(gateway) -> str:
    _, key = create_user_and_key(gateway.db_settings, "other@example.com", "correct horse battery", "test", "other",
                                 bcrypt_rounds=4)
    return key


# caller → status for a follow-up on the owner's response. Another tenant gets exactly
# what an unknown id gets: ownership is the account's. The admin key is a management
# credential and calls no /v1 route; anonymous callers learn nothing either.
MATRIX = {"owner": 200, "owner_second_key": 200, "other_tenant": 404, "admin_key": 401, "anonymous": 401}
ROUTES = [("GET", ""), ("GET", "/input_items"), ("POST", "/cancel"), ("DELETE", "")]


@pytest.mark.parametrize("caller", list(MATRIX))
async def test_follow_up_authorization_matrix(gateway, caller):
    owner = await client(gateway).responses.create(model="gpt-4o-mini", input="mine", background=True)
    second = create_user_and_key(gateway.db_settings, "tenant@example.com", "x", "test", "second",
                                 bcrypt_rounds=4)[1] if caller == "owner_second_key" else None
    keys = {"owner": gateway.key, "owner_second_key": second, "other_tenant": _other_key(gateway)
            if caller == "other_tenant" else None, "admin_key": ADMIN_KEY, "anonymous": None}
    headers = {"Authorization": f"Bearer {keys[caller]}"} if keys[caller] else {}
    async with aiohttp.ClientSession() as http:
        for method, suffix in ROUTES:
            for rid in (owner.id, "resp_unknown"):
                async with http.request(method, f"{gateway.url}/v1/responses/{rid}{suffix}", headers=headers) as r:
                    body = await r.json()
                    if rid == "resp_unknown" and MATRIX[caller] != 401:
                        assert r.status == 404, body
                        unknown = body
                        continue
                    assert r.status == MATRIX[caller], (method, suffix, body)
                    if MATRIX[caller] == 404:
                        assert body["error"]["code"] == "not_found"
                        assert body["error"]["message"] == f"Response with id '{owner.id}' not found."
            if MATRIX[caller] == 404:
                assert unknown["error"]["message"] == "Response with id 'resp_unknown' not found."


async def test_another_accounts_id_as_previous_response_id_is_refused_like_an_unknown_one(gateway):
    mine = await client(gateway).responses.create(model="gpt-4o-mini", input="mine")
    with pytest.raises(openai.BadRequestError) as err:
        await client(gateway, _other_key(gateway)).responses.create(
            model="gpt-4o-mini", input="steal", previous_response_id=mine.id)
    assert err.value.code == "previous_response_not_found"
    assert err.value.body["message"] == f"Previous response with id '{mine.id}' not found."


async def test_follow_up_whose_upstream_is_down_is_a_503_naming_it_never_sent_elsewhere(gateway, upstreams):
    api = client(gateway)
    made = await api.responses.create(model="gpt-4o-mini", input="hold")
    hold = [u for u in upstreams if u.url == holder_of(upstreams, made.id)][0]
    name = hold.app[CONFIG_KEY].name
    await hold.stop()
    others = [u for u in upstreams if u is not hold]
    before = sum(u.stats()["requests"] for u in others)
    # The first follow-ups find the connection refused (502) and the health monitor
    # ejects the upstream (eject_after: 2); from then on the gateway answers 503 itself.
    statuses = []
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as err:
            await api.responses.create(model="gpt-4o-mini", input="next", previous_response_id=made.id)
        statuses.append(err.value.status_code)
        if err.value.status_code == 503:
            break
    await hold.start()
    assert statuses == [502, 502, 503]
    assert err.value.code == "pinned_upstream_unavailable"
    assert err.value.body["message"].startswith(f"The upstream that holds response {made.id} ({name}) is "
                                                "unavailable right now (")
    assert sum(u.stats()["requests"] for u in others) == before


async def test_follow_up_after_restart_is_found_in_the_table(gateway, upstreams):
    made = await client(gateway).responses.create(model="gpt-4o-mini", input="durable")
    await gateway.stop()
    gateway.app = None
    await gateway.start()
    got = await client(gateway).responses.retrieve(made.id)
    assert got.id == made.id


async def test_accounting_reads_cached_and_reasoning_tokens_and_prices_them(gateway):
    api = client(gateway)
    first = await api.responses.create(model="gpt-4o-mini", input="one two three", reasoning={"effort": "low"})
    second = await api.responses.create(model="gpt-4o-mini", input="four", previous_response_id=first.id,
                                        stream=True)
    last = [e async for e in second][-1].response
    rows = [r for r in await usage_rows(gateway) if r["route"] == "responses"]
    assert first.usage.output_tokens_details.reasoning_tokens == 3
    # reasoning is part of output, billed once: 4 in at $1/M + 8 out at $4/M, in nano-dollars
    assert rows[0] == {
        "route": "responses", "status": 200, "upstream": rows[0]["upstream"], "prompt_tokens": 4,
        "completion_tokens": 8, "cached_tokens": 0, "reasoning_tokens": 3, "cost_nano": 4 * 1_000 + 8 * 4_000,
        "partial": 0, "estimated": 0}
    cached = last.usage.input_tokens_details.cached_tokens
    assert cached == first.usage.total_tokens == 12
    assert rows[1]["prompt_tokens"] == last.usage.input_tokens == 14
    assert rows[1]["cached_tokens"] == 12
    assert rows[1]["cost_nano"] == (14 - 12) * 1_000 + 12 * 500 + 5 * 4_000


async def test_follow_ups_are_accounted_but_not_billed(gateway):
    api = client(gateway)
    made = await api.responses.create(model="gpt-4o-mini", input="x")
    await api.responses.retrieve(made.id)
    await api.responses.input_items.list(made.id)
    rows = await usage_rows(gateway)
    assert [(r["route"], r["status"], r["prompt_tokens"], r["completion_tokens"], r["cost_nano"]) for r in rows[1:]] == [
        ("responses_get", 200, 0, 0, 0), ("responses_input_items", 200, 0, 0, 0)]
    assert rows[1]["upstream"] == rows[0]["upstream"]


async def test_stats_carry_cached_and_reasoning_tokens(gateway):
    api = client(gateway)
    first = await api.responses.create(model="gpt-4o-mini", input="a b", reasoning={"effort": "low"})
    await api.responses.create(model="gpt-4o-mini", input="c", previous_response_id=first.id)
    await gateway.app[USAGE].flush()
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/api/usage/stats?group_by=model",
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
            stats = await r.json()
    assert r.status == 200, stats
    assert stats["total"]["cached_tokens"] == first.usage.total_tokens
    assert stats["total"]["reasoning_tokens"] == 3


async def test_compact_and_input_tokens(gateway):
    api = client(gateway)
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/responses/compact", headers=gateway.headers(),
                             json={"model": "gpt-4o-mini", "input": "a b c"}) as r:
            compacted = await r.json()
        assert r.status == 200, compacted
        assert compacted["object"] == "response.compaction"
        assert compacted["output"][0]["type"] == "compaction"
    counted = await api.responses.input_tokens.count(model="gpt-4o-mini", input="a b c")
    assert counted.input_tokens == 4
    rows = await usage_rows(gateway)
    assert [(r["route"], r["cost_nano"] > 0) for r in rows] == [("responses_compact", True),
                                                               ("responses_input_tokens", False)]


async def test_the_api_v1_prefix_serves_responses_too(gateway):
    api = openai.AsyncOpenAI(base_url=gateway.url + "/api/v1", api_key=gateway.key, max_retries=0)
    made = await api.responses.create(model="gpt-4o-mini", input="hi")
    assert (await api.responses.retrieve(made.id)).id == made.id


@needs_redis
async def test_followups_are_admitted_by_the_shared_limiter_too(tmp_path, upstreams, redis_url):
    # A follow-up (GET, input_items, DELETE) is its own admission: on the Redis
    # limiter that is a round trip, awaited like the create's, never a 500.
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)],
                                   models=MODELS, limits={"backend": redis_url})
    await harness.start()
    try:
        sdk = client(harness)
        created = await sdk.responses.create(model="gpt-4o-mini", input="hi")
        fetched = await sdk.responses.retrieve(created.id)
        assert fetched.id == created.id and fetched.model == "gpt-4o-mini"
        items = await sdk.responses.input_items.list(created.id)
        assert items.data
        await sdk.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(created.id)
    finally:
        await harness.stop()

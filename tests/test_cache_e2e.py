"""The response cache end to end: a real gateway in front of the fake upstream, which counts calls.

Plans: `cached` (cache on, a flat per-hit price), `shared` (entries shared by
the plan's accounts), `optin` (enabled, off unless asked) and `test` (no cache).
The gateway's clock is injected, so TTL expiry is a clock step, not a wait.
"""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest

from proxy.appkeys import USAGE
from proxy.cli.accounts import create_user_and_key
from proxy.fake_upstream import start_fake_upstream

from .db_access import query_dicts
from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

BIG = {"rpm": 100000, "tpm": 100000000, "models": "*"}
PLANS = {
    "test": BIG,
    "cached": {**BIG, "cache": {"enabled": True, "ttl_seconds": "10m", "price_per_hit": "0.0001"}},
    "shared": {**BIG, "cache": {"enabled": True, "shared": True}},
    "optin": {**BIG, "cache": {"enabled": True, "default": False}},
    # rpm 6 refills a request per 10 s: the Redis limiter runs on Redis's clock, not the
    # test's, and a bucket of 100000 would be full again between two requests.
    "cached_rpm6": {**BIG, "rpm": 6, "cache": {"enabled": True, "ttl_seconds": "10m", "price_per_hit": "0.0001"}},
}
MODELS = {
    "gpt-4o-mini": {"aliases": ["mini"], "pricing": {"input": 0.15, "output": 0.6}},
    "gpt-4o": {"pricing": {"input": 2.5, "output": 10}},
    "text-embedding-3-small": {"kind": "embedding", "pricing": {"input": 0.02, "output": 0}},
}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 8}
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake():
    upstream = await start_fake_upstream(name="u", stream_chunks=6)
    yield upstream
    await upstream.stop()


@pytest.fixture
def clock():
    return Clock()


async def _gateway(tmp_path, fake, clock, plan: str, **overrides):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)], plans=PLANS, models=MODELS,
                             **overrides)
    await h.start(plan=plan, clock=clock)
    return h


@pytest.fixture
async def gw(tmp_path, fake, clock):
    h = await _gateway(tmp_path, fake, clock, "cached")
    yield h
    await h.stop()


def upstream_calls(fake) -> int:
    return fake.stats()["requests"]


async def post(h: GatewayHarness, body: dict, *, key: str | None = None, path: str = "/v1/chat/completions",
               **headers: str) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(h.url + path, data=orjson.dumps(body), headers={
                "Authorization": f"Bearer {key or h.key}", "Content-Type": "application/json", **headers}) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def other_account(h: GatewayHarness, email: str, plan: str) -> str:
    return create_user_and_key(h.db_settings, email, "correct horse battery", plan, "e2e", bcrypt_rounds=4)[1]


async def usage_rows(h: GatewayHarness) -> list[dict]:
    await h.app[USAGE].flush()
    return query_dicts(h.db_path, "SELECT * FROM usage ORDER BY id")


# -- hits and misses ---------------------------------------------------------------


async def test_the_same_request_again_is_a_hit_with_the_same_body(gw, fake, clock):
    status, headers, first = await post(gw, CHAT)
    assert status == 200 and headers["x-bluesminds-cache"] == "MISS" and "age" not in {k.lower() for k in headers}
    clock.now += 42
    status, headers, again = await post(gw, CHAT)
    assert status == 200 and headers["x-bluesminds-cache"] == "HIT" and headers["Age"] == "42"
    assert again == first and orjson.loads(again)["model"] == "gpt-4o-mini"
    assert upstream_calls(fake) == 1


async def test_key_order_spacing_and_an_alias_of_the_model_are_the_same_request(gw, fake):
    await post(gw, CHAT)
    reordered = {"max_tokens": 8, "messages": [{"content": "one two three", "role": "user"}], "model": "mini"}
    status, headers, _ = await post(gw, reordered)
    assert headers["x-bluesminds-cache"] == "HIT" and upstream_calls(fake) == 1


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "one two four"}]},
    {"messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "one two three"}]},
    {"model": "gpt-4o"},
    {"max_tokens": 9},
    {"temperature": 0.2},
    {"top_p": 0.5},
    {"seed": 7},
    {"n": 2},
    {"stop": ["\n"]},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    {"logit_bias": {"50256": -100}},
])
async def test_each_parameter_change_is_a_miss(gw, fake, change):
    await post(gw, CHAT)
    status, headers, _ = await post(gw, {**CHAT, **change})
    assert status == 200 and headers["x-bluesminds-cache"] == "MISS"
    assert upstream_calls(fake) == 2


@pytest.mark.parametrize("change", [{"user": "someone-else"}, {"metadata": {"trace": "x"}}])
async def test_user_and_metadata_are_not_part_of_the_key(gw, fake, change):
    await post(gw, CHAT)
    _, headers, _ = await post(gw, {**CHAT, **change})
    assert headers["x-bluesminds-cache"] == "HIT" and upstream_calls(fake) == 1


async def test_another_account_misses(gw, fake):
    await post(gw, CHAT)
    stranger = other_account(gw, "other@example.com", "cached")
    _, headers, _ = await post(gw, CHAT, key=stranger)
    assert headers["x-bluesminds-cache"] == "MISS" and upstream_calls(fake) == 2


async def test_a_shared_plan_shares_entries_between_its_accounts(tmp_path, fake, clock):
    h = await _gateway(tmp_path, fake, clock, "shared")
    try:
        await post(h, CHAT)
        _, headers, _ = await post(h, CHAT, key=other_account(h, "b@example.com", "shared"))
        assert headers["x-bluesminds-cache"] == "HIT"
        # ...and with no other plan: a cached-plan account keeps its own entries.
        _, headers, _ = await post(h, CHAT, key=other_account(h, "c@example.com", "cached"))
        assert headers["x-bluesminds-cache"] == "MISS"
        assert upstream_calls(fake) == 2
    finally:
        await h.stop()


async def test_the_entry_expires_after_the_plan_ttl_on_the_gateway_clock(gw, fake, clock):
    await post(gw, CHAT)
    clock.now += 599
    assert (await post(gw, CHAT))[1]["x-bluesminds-cache"] == "HIT"
    clock.now += 1
    assert (await post(gw, CHAT))[1]["x-bluesminds-cache"] == "MISS"
    assert upstream_calls(fake) == 2


async def test_fifty_identical_concurrent_misses_make_one_upstream_call(gw, fake):
    await fake.set_fault({"latency": 0.3})
    answers = await asyncio.gather(*(post(gw, CHAT) for _ in range(50)))
    assert [a[0] for a in answers] == [200] * 50
    assert len({a[2] for a in answers}) == 1
    assert sorted(a[1]["x-bluesminds-cache"] for a in answers) == ["HIT"] * 49 + ["MISS"]
    assert upstream_calls(fake) == 1
    rows = await usage_rows(gw)
    assert len(rows) == 50 and sum(r["cache_hit"] for r in rows) == 49


async def test_fifty_identical_concurrent_stream_misses_make_one_upstream_call(gw, fake):
    await fake.set_fault({"latency": 0.3})
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)

    async def one() -> str:
        stream = await client.chat.completions.create(stream=True, **CHAT)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    texts = await asyncio.gather(*(one() for _ in range(50)))
    assert len(set(texts)) == 1 and texts[0].startswith("u says")
    assert upstream_calls(fake) == 1


# -- errors and cut streams are never stored -----------------------------------------


async def test_an_upstream_error_is_not_cached(gw, fake):
    await fake.set_fault({"status": 400, "count": 1})
    status, headers, _ = await post(gw, CHAT)
    assert status == 400 and headers["x-bluesminds-cache"] == "MISS"
    status, headers, _ = await post(gw, CHAT)
    assert status == 200 and headers["x-bluesminds-cache"] == "MISS"
    assert (await post(gw, CHAT))[1]["x-bluesminds-cache"] == "HIT"


async def test_a_cut_stream_is_not_cached(gw, fake):
    await fake.set_fault({"cut_after": 3, "count": 1})
    status, headers, body = await post(gw, {**CHAT, "stream": True})
    assert status == 200 and b"upstream_stream_interrupted" in body
    status, headers, body = await post(gw, {**CHAT, "stream": True})
    assert headers["x-bluesminds-cache"] == "MISS" and body.endswith(b"data: [DONE]\n\n")
    assert upstream_calls(fake) == 2


# -- streams ---------------------------------------------------------------------------


async def _sdk_stream(h, **extra):
    client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=h.key, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(stream=True, **CHAT, **extra)
    chunks = [c async for c in raw.parse()]
    return raw.headers.get("x-bluesminds-cache"), chunks


def _summary(chunks) -> dict:
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return {"ids": {c.id for c in chunks}, "models": {c.model for c in chunks},
            "objects": {c.object for c in chunks}, "text": text, "finish": finish,
            "role": next(c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role),
            "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None}


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_stream_hit_parses_in_the_sdk_as_the_original_did(gw, fake, include_usage):
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    state, original = await _sdk_stream(gw, **extra)
    assert state == "MISS"
    state, replayed = await _sdk_stream(gw, **extra)
    assert state == "HIT" and upstream_calls(fake) == 1
    assert _summary(replayed) == _summary(original)
    assert _summary(original)["text"] == "u says hello from the fake upstream"[:len(_summary(original)["text"])]
    assert (_summary(replayed)["usage"] is not None) is include_usage


async def test_a_non_stream_request_hits_an_entry_a_stream_stored_and_back(gw, fake):
    _, streamed = await _sdk_stream(gw)
    status, headers, body = await post(gw, CHAT)
    assert headers["x-bluesminds-cache"] == "HIT"
    answer = orjson.loads(body)
    assert answer["object"] == "chat.completion" and answer["id"] == streamed[0].id
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": _summary(streamed)["text"]}
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] == 6

    other = {**CHAT, "max_tokens": 5}
    _, _, first = await post(gw, other)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    stream = await client.chat.completions.create(stream=True, **other)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        orjson.loads(first)["choices"][0]["message"]["content"]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert upstream_calls(fake) == 2


async def test_completions_stream_hit(gw, fake):
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    body = {"model": "gpt-4o-mini", "prompt": "say hi", "max_tokens": 4}
    texts = []
    for _ in range(2):
        stream = await client.completions.create(stream=True, **body)
        texts.append("".join([c.choices[0].text async for c in stream if c.choices]))
    plain = await client.completions.create(**body)
    assert texts[0] == texts[1] == plain.choices[0].text and texts[0]
    assert upstream_calls(fake) == 1


async def test_embeddings_are_cached(gw, fake):
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    first = await client.embeddings.create(model="text-embedding-3-small", input="hello")
    again = await client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello")
    assert again.headers["x-bluesminds-cache"] == "HIT"
    assert again.parse().data[0].embedding == first.data[0].embedding
    assert upstream_calls(fake) == 1


async def test_a_responses_stream_hit_replays_typed_events_the_sdk_reads(gw, fake):
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    results = []
    for _ in range(2):
        async with client.responses.stream(model="gpt-4o-mini", input="hi there") as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        results.append(("".join(deltas), final.id, final.output_text, final.usage.output_tokens))
    assert results[0] == results[1] and results[0][0] == results[0][2]
    plain = await client.responses.create(model="gpt-4o-mini", input="hi there")
    assert plain.id == results[0][1] and upstream_calls(fake) == 1
    # A follow-up depends on the upstream's state: never answered from the cache.
    for _ in range(2):
        await client.responses.create(model="gpt-4o-mini", input="more", previous_response_id=plain.id)
    assert upstream_calls(fake) == 3


# -- who opts in -------------------------------------------------------------------------


async def _cache_header_after_two(h, **headers) -> tuple[str | None, str | None]:
    first = (await post(h, CHAT, **headers))[1].get("x-bluesminds-cache")
    second = (await post(h, CHAT, **headers))[1].get("x-bluesminds-cache")
    return first, second


async def test_a_plan_without_the_cache_ignores_the_header(tmp_path, fake, clock):
    h = await _gateway(tmp_path, fake, clock, "test")
    try:
        assert await _cache_header_after_two(h, **{"x-bluesminds-cache": "true"}) == (None, None)
        assert upstream_calls(fake) == 2
    finally:
        await h.stop()


async def test_the_request_header_turns_the_cache_off(gw, fake):
    assert await _cache_header_after_two(gw, **{"x-bluesminds-cache": "false"}) == (None, None)
    assert upstream_calls(fake) == 2


async def test_an_opt_in_plan_caches_only_requests_that_ask(tmp_path, fake, clock):
    h = await _gateway(tmp_path, fake, clock, "optin")
    try:
        assert await _cache_header_after_two(h) == (None, None)
        assert await _cache_header_after_two(h, **{"x-bluesminds-cache": "true"}) == ("MISS", "HIT")
    finally:
        await h.stop()


async def _set_key_cache(h: GatewayHarness, value) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.post(h.url + "/api/auth/login",
                                json={"email": "tenant@example.com", "password": "correct horse battery"}) as resp:
            token = (await resp.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(h.url + "/api/keys", headers=auth) as resp:
            key_id = (await resp.json())["data"][0]["id"]
        async with session.patch(h.url + f"/api/keys/{key_id}", json={"cache": value}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def test_the_key_owner_turns_the_cache_off_and_a_request_can_still_ask(gw, fake):
    assert (await _set_key_cache(gw, False))["cache"] is False
    assert await _cache_header_after_two(gw) == (None, None)
    assert await _cache_header_after_two(gw, **{"x-bluesminds-cache": "true"}) == ("MISS", "HIT")
    assert (await _set_key_cache(gw, None))["cache"] is None
    assert (await post(gw, CHAT))[1]["x-bluesminds-cache"] == "HIT"


async def test_the_key_owner_turns_the_cache_on_for_an_opt_in_plan(tmp_path, fake, clock):
    h = await _gateway(tmp_path, fake, clock, "optin")
    try:
        await _set_key_cache(h, True)
        assert await _cache_header_after_two(h) == ("MISS", "HIT")
    finally:
        await h.stop()


async def test_no_cache_skips_the_read_but_stores_the_fresh_answer(gw, fake):
    await post(gw, CHAT)
    assert await _cache_header_after_two(gw, **{"Cache-Control": "no-cache"}) == ("MISS", "MISS")
    assert (await post(gw, CHAT))[1]["x-bluesminds-cache"] == "HIT"
    assert upstream_calls(fake) == 3


async def test_no_store_neither_reads_nor_stores(gw, fake):
    assert await _cache_header_after_two(gw, **{"Cache-Control": "no-store"}) == (None, None)
    assert (await post(gw, CHAT))[1]["x-bluesminds-cache"] == "MISS"
    assert upstream_calls(fake) == 3


async def test_a_bad_cache_header_is_a_400(gw, fake):
    status, _, body = await post(gw, CHAT, **{"x-bluesminds-cache": "maybe"})
    assert status == 400
    assert orjson.loads(body)["error"] == {
        "message": "The x-bluesminds-cache header must be true or false, not 'maybe'.",
        "type": "invalid_request_error", "param": None, "code": "invalid_header"}
    assert upstream_calls(fake) == 0


# -- accounting ---------------------------------------------------------------------------


async def test_a_hit_is_a_usage_row_with_no_tokens_the_hit_price_and_the_cost_saved(tmp_path, fake, clock):
    gw = await _gateway(tmp_path, fake, clock, "cached_rpm6")
    try:
        _, first_headers, _ = await post(gw, CHAT)
        _, hit_headers, _ = await post(gw, CHAT)
        miss, hit = await usage_rows(gw)
    finally:
        await gw.stop()
    # A hit went through admission: it took a request from the rpm bucket.
    assert int(first_headers["x-ratelimit-remaining-requests"]) == 5
    assert int(hit_headers["x-ratelimit-remaining-requests"]) == 4
    assert (miss["cache_hit"], miss["prompt_tokens"], miss["completion_tokens"]) == (0, 4, 6)
    assert miss["cost_nano"] == 4 * 150 + 6 * 600 and miss["upstream"] == "u"
    assert hit["cache_hit"] == 1 and hit["status"] == 200 and hit["upstream"] is None
    assert (hit["prompt_tokens"], hit["completion_tokens"], hit["total_tokens"]) == (0, 0, 0)
    assert hit["cost_nano"] == 100_000  # $0.0001 per hit, in nano-dollars, exactly
    assert hit["cost_saved_nano"] == miss["cost_nano"]
    assert hit["served_model"] == "gpt-4o-mini" and hit["ts"] == T0


async def test_metrics_count_hits_misses_entries_and_bytes(tmp_path, fake, clock):
    gw = await _gateway(tmp_path, fake, clock, "cached", server={"metrics": {"access": "open"}})
    try:
        await post(gw, CHAT)
        await post(gw, CHAT)
        await post(gw, {**CHAT, "max_tokens": 3})
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/metrics") as resp:
                text = await resp.text()
    finally:
        await gw.stop()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("bluesminds_cache_"))
    assert float(lines["bluesminds_cache_hits_total"]) == 1
    assert float(lines["bluesminds_cache_misses_total"]) == 2
    assert float(lines["bluesminds_cache_entries"]) == 2
    assert float(lines["bluesminds_cache_bytes"]) > 0
    assert float(lines["bluesminds_cache_evictions_total"]) == 0
    assert float(lines["bluesminds_cache_inflight"]) == 0


async def test_the_redis_backend_serves_hits_across_gateways_sharing_it(tmp_path, fake, clock, redis_url):
    one = await _gateway(tmp_path / "a", fake, clock, "cached", cache={"backend": redis_url})
    two = GatewayHarness.write(str(tmp_path / "a" / "cfg"), [upstream_entry("u", fake.url)], plans=PLANS,
                               models=MODELS, cache={"backend": redis_url})
    two.key, two.user_id = one.key, one.user_id  # the same account, the same database
    await two.start(clock=clock)
    try:
        assert (await post(one, CHAT))[1]["x-bluesminds-cache"] == "MISS"
        _, headers, body = await post(two, CHAT)
        assert headers["x-bluesminds-cache"] == "HIT" and orjson.loads(body)["model"] == "gpt-4o-mini"
        assert upstream_calls(fake) == 1
    finally:
        await two.stop()
        await one.stop()

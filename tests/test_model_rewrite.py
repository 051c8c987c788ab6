"""What the tenant sees: the public model name, no upstream extras, the bare root as /v1, and an
upstream that refuses the model it was sent as the operator's 502."""

from __future__ import annotations

import logging

import aiohttp
import openai
import orjson
import pytest

from proxy.appkeys import USAGE
from proxy.fake_upstream import start_fake_upstream
from proxy.gateway.rewrite import model_rewriter, strip_body, strip_events, tenant_view

from .canned_upstream import CannedUpstream
from .db_access import query_dicts
from .gateway_harness import GatewayHarness, upstream_entry

MODELS = {"gpt-4o-mini": {"upstream_model": "openai/gpt-4o-mini-2024", "pricing": {"input": 0.15, "output": 0.6}}}
MESSAGES = [{"role": "user", "content": "one two"}]


def test_the_upstream_name_is_replaced_as_bytes_in_both_json_spacings():
    rewrite = model_rewriter("up/x", "pub")
    assert rewrite(b'{"model":"up/x","a":1}') == b'{"model":"pub","a":1}'
    assert rewrite(b'{"model": "up/x", "a": 1}') == b'{"model": "pub", "a": 1}'
    assert rewrite(b'{"model":"up/x-2","content":"\\"model\\":\\"up/x\\""}') == \
        b'{"model":"up/x-2","content":"\\"model\\":\\"up/x\\""}'  # another name, and text in content, untouched
    assert model_rewriter("same", "same") is None


def test_litellm_extras_are_stripped_from_bodies_and_events_only_where_present():
    body = orjson.dumps({"id": "x", "usage": {"prompt_tokens": 1, "cost": 0.5}, "_hidden_params": {"k": 1}})
    assert orjson.loads(strip_body(body)) == {"id": "x", "usage": {"prompt_tokens": 1}}
    plain = b'{"id":"x","usage":{"prompt_tokens":1}}'
    assert strip_body(plain) is plain
    events = (b'event: response.completed\ndata: {"response":{"usage":{"input_tokens":2,"cost":0.1}}}\n\n'
              b'data: {"choices":[]}\n\n')
    assert strip_events(events) == (b'event: response.completed\ndata: {"response":{"usage":{"input_tokens":2}}}\n\n'
                                    b'data: {"choices":[]}\n\n')
    view = tenant_view("up", "pub", events=True)
    assert view(b'data: {"model":"up","usage":{"cost":1}}\n\n') == b'data: {"model":"pub","usage":{}}\n\n'


@pytest.fixture
async def fake():
    upstream = await start_fake_upstream(name="a")
    yield upstream
    await upstream.stop()


@pytest.fixture
async def harness(tmp_path, fake):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", fake.url)], models=MODELS)
    await h.start()
    yield h
    await h.stop()


async def settled(h: GatewayHarness) -> list[dict]:
    await h.app[USAGE].flush()
    return query_dicts(h.db_path, "SELECT * FROM usage ORDER BY id")


async def test_the_bare_root_serves_the_sdk_like_v1_and_answers_carry_the_public_model(harness, fake):
    # LiteLLM's own examples use base_url=http://host:port, without /v1.
    async with openai.AsyncOpenAI(base_url=harness.url, api_key=harness.key, max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        chunks = [c async for c in await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                                     stream=True)]
        models = [m.id async for m in sdk.models.list()]
        embedding_paths = fake.stats()["by_path"]
    assert completion.model == "gpt-4o-mini"
    assert fake.stats()["last_body"]["model"] == "openai/gpt-4o-mini-2024"
    assert chunks and {c.model for c in chunks} == {"gpt-4o-mini"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion.choices[0].message.content
    assert "gpt-4o-mini" in models
    assert embedding_paths == {"/v1/chat/completions": 2}
    rows = await settled(harness)
    assert [(r["route"], r["status"], r["served_model"]) for r in rows] == [
        ("chat", 200, "gpt-4o-mini"), ("chat", 200, "gpt-4o-mini")]


async def test_every_prefix_serves_every_family(harness):
    async with aiohttp.ClientSession() as session:
        for prefix in ("", "/v1", "/api/v1"):
            async with session.post(harness.url + prefix + "/moderations", json={"input": "x"},
                                    headers=harness.headers()) as resp:
                assert resp.status == 400  # routed, and refused for the missing model
            async with session.post(harness.url + prefix + "/messages", json={},
                                    headers=harness.headers()) as resp:
                assert (await resp.json())["type"] == "error"


LITELLM_ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "openai/gpt-4o-mini-2024",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "cost": 0.000123},
    "_hidden_params": {"model_id": "abc", "api_base": "https://secret.example"},
})


def canned(status: str, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode() + body


async def test_litellm_extras_and_headers_never_reach_the_client(tmp_path):
    upstream = await CannedUpstream(canned("200 OK", LITELLM_ANSWER, "x-litellm-model-id: abc\r\n"
                                           "x-litellm-response-cost: 0.000123\r\n")).start()
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", upstream.url)], models=MODELS)
    await h.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(h.url + "/v1/chat/completions", headers=h.headers(),
                                    json={"model": "gpt-4o-mini", "messages": MESSAGES}) as resp:
                body = await resp.json()
                headers = {k.lower() for k in resp.headers}
    finally:
        await h.stop()
        await upstream.stop()
    assert resp.status == 200
    assert body["model"] == "gpt-4o-mini"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert "_hidden_params" not in body
    assert not [name for name in headers if name.startswith("x-litellm")]


REFUSAL = orjson.dumps({"error": {
    "message": "Invalid model name passed in model=openai/gpt-4o-mini-2024. Call `/v1/models` to view available "
               "models for your key.", "type": "invalid_request_error", "param": "model", "code": "400"}})


@pytest.mark.parametrize("status", ["400 Bad Request", "404 Not Found"])
async def test_an_upstream_refusing_the_model_is_a_502_naming_the_public_model(tmp_path, caplog, status):
    upstream = await CannedUpstream(canned(status, REFUSAL)).start()
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", upstream.url)], models=MODELS,
                             retry={"attempts": 1})
    await h.start()
    try:
        with caplog.at_level(logging.INFO):
            async with openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=h.key, max_retries=0) as sdk:
                with pytest.raises(openai.APIStatusError) as caught:
                    await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        rows = await settled(h)
    finally:
        await h.stop()
        await upstream.stop()
    assert caught.value.status_code == 502
    assert caught.value.body == {
        "message": "The upstream `a` does not serve the model `gpt-4o-mini` as configured. This is a gateway "
                   "configuration problem, not your request: the operator must check `upstream_model` for "
                   "`gpt-4o-mini` against the models that upstream serves.",
        "type": "server_error", "param": None, "code": "upstream_model_not_found"}
    assert "openai/gpt-4o-mini-2024" not in str(caught.value.body)
    [row] = rows
    assert (row["status"], row["upstream"], row["error_type"]) == (502, "a", "upstream_model_not_found")
    logged = [r.getMessage() for r in caplog.records if r.name == "bluesminds.upstream" and r.levelno == logging.ERROR]
    assert logged == ["upstream a refused model 'openai/gpt-4o-mini-2024' (sent for `gpt-4o-mini`): Invalid model "
                      "name passed in model=openai/gpt-4o-mini-2024. Call `/v1/models` to view available models "
                      "for your key."]
    access = [r.getMessage() for r in caplog.records if r.name == "bluesminds.access" and "status=502" in r.getMessage()]
    assert len(access) == 1 and access[0].endswith("model=gpt-4o-mini upstream=a")


async def test_an_upstream_4xx_names_the_upstream_in_the_usage_row(tmp_path):
    upstream = await CannedUpstream(canned("400 Bad Request", orjson.dumps(
        {"error": {"message": "temperature must be at most 2", "type": "invalid_request_error"}}))).start()
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", upstream.url)], models=MODELS)
    await h.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(h.url + "/v1/chat/completions", headers=h.headers(),
                                    json={"model": "gpt-4o-mini", "messages": MESSAGES}) as resp:
                assert resp.status == 400
        [row] = await settled(h)
    finally:
        await h.stop()
        await upstream.stop()
    assert (row["status"], row["upstream"]) == (400, "a")

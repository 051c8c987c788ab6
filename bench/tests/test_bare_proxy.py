import orjson

from bench import wrk
from bench.bare_proxy import create_bare_app
from proxy.fake_upstream import STATE_KEY, create_fake_app


async def _bare(aiohttp_server, aiohttp_client, **fake_opts):
    fake = await aiohttp_server(create_fake_app(name="up", **fake_opts))
    client = await aiohttp_client(create_bare_app(f"http://127.0.0.1:{fake.port}/"))
    return fake, client


async def test_forwards_the_body_and_returns_the_upstream_answer(aiohttp_server, aiohttp_client):
    fake, client = await _bare(aiohttp_server, aiohttp_client)
    resp = await client.post("/v1/chat/completions", data=wrk.CHAT_BODY,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].startswith("up says")
    state = fake.app[STATE_KEY]
    assert state.requests == 1
    assert state.last_body == orjson.loads(wrk.CHAT_BODY)


async def test_passes_upstream_errors_through(aiohttp_server, aiohttp_client):
    fake, client = await _bare(aiohttp_server, aiohttp_client)
    resp = await client.post("/v1/chat/completions", data=b'{"model": "m"}',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "messages"


async def test_relays_a_stream_to_its_end(aiohttp_server, aiohttp_client):
    fake, client = await _bare(aiohttp_server, aiohttp_client, stream_chunks=3)
    resp = await client.post("/v1/chat/completions", data=wrk.STREAM_BODY,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = (await resp.read()).decode()
    events = [e for e in text.split("\n\n") if e]
    # role, 3 pieces, finish, usage, [DONE]
    assert len(events) == 7
    assert events[-1] == "data: [DONE]"
    assert '"usage":{"prompt_tokens"' in events[-2]

"""The fake upstream speaks OpenAI well enough for the official SDK, and its
faults and counters behave as the gateway tests rely on."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from proxy.fake_upstream import FakeUpstream, parse_fault, start_fake_upstream

CONTENT = "fake-a says hello from the"  # the 5 pieces of an upstream named fake-a
MESSAGES = [
    {"role": "system", "content": "be brief"},  # 2 words + 1
    {"role": "user", "content": "hello there friend"},  # 3 words + 1
]
PROMPT_TOKENS = 7
CHAT = {"model": "gpt-test", "messages": MESSAGES}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await start_fake_upstream(name="fake-a", stream_chunks=5)
    yield up
    await up.stop()


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_for(check: Callable[[], bool], timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def sse_events(raw: bytes) -> list[bytes]:
    events = [e for e in raw.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    return [e[len(b"data: ") :] for e in events]


# ---------------------------------------------------------------- chat


async def test_chat_completion(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        **CHAT, extra_headers={"x-request-id": "req-1"}
    )
    assert raw.headers["x-fake-upstream"] == "fake-a"
    assert raw.headers["x-request-id"] == "req-1"
    resp = raw.parse()
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-test"
    assert resp.created > 0
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == CONTENT
    assert resp.choices[0].finish_reason == "stop"
    usage = resp.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, 5)
    assert usage.total_tokens == PROMPT_TOKENS + 5

    stats = upstream.stats()
    assert stats["requests"] == 1
    assert stats["by_path"] == {"/v1/chat/completions": 1}
    assert stats["last_headers"]["authorization"] == "Bearer x"
    assert stats["last_body"]["messages"] == MESSAGES


async def test_max_tokens_caps_the_pieces(client: openai.AsyncOpenAI) -> None:
    short = await client.chat.completions.create(**CHAT, max_tokens=2)
    assert short.choices[0].message.content == "fake-a says"
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2

    roomy = await client.chat.completions.create(**CHAT, max_completion_tokens=50)
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.usage.completion_tokens == 5


async def test_chat_stream_without_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(**CHAT, stream=True)
    chunks = [chunk async for chunk in stream]

    assert len(chunks) == 1 + 5 + 1  # role, content pieces, finish
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert "".join(pieces) == CONTENT and len(pieces) == 5
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 6 + ["stop"]
    assert all("usage" not in c.to_dict() for c in chunks)


async def test_chat_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        **CHAT, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert len(chunks) == 1 + 5 + 1 + 1
    assert all("usage" in c.to_dict() for c in chunks)
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    final = chunks[-1]
    assert final.choices == []
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (PROMPT_TOKENS, 5)
    assert final.usage.total_tokens == PROMPT_TOKENS + 5


async def test_stream_wire_format(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    async with http.post(
        upstream.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        raw = await resp.read()
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    assert all("usage" not in orjson.loads(e) for e in events[:-1])


# ---------------------------------------------------------------- other APIs


async def test_legacy_completions(client: openai.AsyncOpenAI) -> None:
    resp = await client.completions.create(model="old", prompt="one two three")
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.choices[0].text == CONTENT
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (3, 5)

    stream = await client.completions.create(
        model="old", prompt=[[1, 2], [3]], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks[:-1]) == CONTENT
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 3


async def test_embeddings(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    # The SDK asks for base64 by default and decodes it into floats.
    resp = await client.embeddings.create(model="emb", input=["a b", "c"])
    assert upstream.stats()["last_body"]["encoding_format"] == "base64"
    assert resp.object == "list" and resp.model == "emb"
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.usage.prompt_tokens == 3

    async with http.post(
        upstream.url + "/v1/embeddings", json={"model": "emb", "input": ["a b", "c"]}
    ) as r:
        floats = [d["embedding"] for d in (await r.json())["data"]]
    assert [d.embedding for d in resp.data] == floats
    assert len(floats[0]) == 8 and floats[0] != floats[1]

    async with http.post(
        upstream.url + "/v1/embeddings",
        json={"model": "emb", "input": "a b", "encoding_format": "base64"},
    ) as r:
        item = (await r.json())["data"][0]
    assert item["object"] == "embedding"
    assert list(struct.unpack("<8f", base64.b64decode(item["embedding"]))) == floats[0]

    tokens = await client.embeddings.create(model="emb", input=[[1, 2, 3], [4]], dimensions=4)
    assert tokens.usage.prompt_tokens == 4
    assert [len(d.embedding) for d in tokens.data] == [4, 4]


async def test_models(client: openai.AsyncOpenAI) -> None:
    models = [m async for m in client.models.list()]
    assert [m.id for m in models] == ["fake-model", "fake-embedding"]
    assert all(m.object == "model" and m.owned_by == "fake-a" and m.created for m in models)


async def test_routes_without_v1_and_health(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(upstream.url + "/chat/completions", json=CHAT) as r:
        assert r.status == 200
        assert (await r.json())["choices"][0]["message"]["content"] == CONTENT
    async with http.get(upstream.url + "/health/liveliness") as r:
        assert r.status == 200 and await r.json() == "I'm alive!"
    async with http.get(upstream.url + "/health/readiness") as r:
        assert r.status == 200 and (await r.json())["status"] == "healthy"

    stats = upstream.stats()
    assert stats["requests"] == 1 and stats["health_checks"] == 2


async def test_bad_requests_get_openai_errors(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = upstream.url + "/v1/chat/completions"
    for body in (b"not json", b'{"model": "m"}', b'{"model": "m", "messages": [], "x": 1}'):
        async with http.post(url, data=body) as r:
            assert r.status == 400
            assert set((await r.json())["error"]) == {"message", "type", "param", "code"}


async def test_api_key_required() -> None:
    async with FakeUpstream(api_key="sk-good") as up:
        bad = openai.AsyncOpenAI(base_url=up.url + "/v1", api_key="sk-bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(**CHAT)
        assert info.value.status_code == 401
        assert info.value.body["code"] == "invalid_api_key"
        assert set(info.value.body) == {"message", "type", "param", "code"}
        await bad.close()

        good = openai.AsyncOpenAI(base_url=up.url + "/v1", api_key="sk-good", max_retries=0)
        assert (await good.chat.completions.create(**CHAT)).choices
        await good.close()


# ---------------------------------------------------------------- faults


async def test_status_fault_then_recovery(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = upstream.url + "/v1/chat/completions"
    async with http.post(upstream.url + "/_fake/faults", json={"status": 500, "count": 2}) as r:
        assert r.status == 200
    for _ in range(2):
        async with http.post(url, json=CHAT) as r:
            assert r.status == 500
            error = (await r.json())["error"]
            assert error["type"] == "server_error" and "fake-a" in error["message"]
    async with http.post(url, json=CHAT) as r:
        assert r.status == 200

    await upstream.set_fault({"status": 429, "retry_after": 2})
    for _ in range(3):  # no count: every request
        async with http.post(url, json=CHAT) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
            assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
    assert upstream.stats()["requests"] == 6


async def test_hang_until_client_leaves(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    await upstream.set_fault({"hang": True, "count": 1})
    with pytest.raises(asyncio.TimeoutError):
        await http.post(
            upstream.url + "/v1/chat/completions",
            json=CHAT,
            timeout=aiohttp.ClientTimeout(total=0.05),
        )
    await wait_for(lambda: upstream.stats()["in_flight"] == 0)
    assert upstream.stats()["cancelled"] == 1


async def test_cut_after(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    url = upstream.url + "/v1/chat/completions"
    await upstream.set_fault({"cut_after": 3, "count": 2})

    received = []
    async with http.post(url, json={**CHAT, "stream": True}) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in r.content:
                if line.startswith(b"data: "):
                    received.append(line)
    assert len(received) == 3 and b"[DONE]" not in b"".join(received)

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post(url, json=CHAT)
    async with http.post(url, json=CHAT) as r:  # count exhausted
        assert r.status == 200
    assert upstream.stats()["open_streams"] == 0


async def test_reset(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    await upstream.set_fault({"reset": True, "count": 1})
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.post(upstream.url + "/v1/embeddings", json={"model": "e", "input": "x"})
    async with http.post(upstream.url + "/v1/embeddings", json={"model": "e", "input": "x"}) as r:
        assert r.status == 200


async def test_latency_fault(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    await upstream.set_fault({"latency": 0.05, "count": 1})
    started = time.monotonic()
    async with http.get(upstream.url + "/v1/models") as r:
        assert r.status == 200
    assert time.monotonic() - started >= 0.05


async def test_health_only_faulted_on_request(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    await upstream.set_fault({"status": 503})
    async with http.get(upstream.url + "/health/liveliness") as r:
        assert r.status == 200
    async with http.get(upstream.url + "/v1/models") as r:
        assert r.status == 503

    await upstream.set_fault({"status": 503, "health": True})
    async with http.get(upstream.url + "/health/readiness") as r:
        assert r.status == 503

    upstream.clear_faults()
    async with http.get(upstream.url + "/health/readiness") as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "plan",
    [
        [],
        {},
        {"status": 200},
        {"status": 500, "hang": True},
        {"cut_after": -1},
        {"hang": True, "count": "2"},
        {"explode": True},
    ],
)
def test_bad_fault_plans_are_rejected(plan: Any) -> None:
    with pytest.raises(ValueError):
        parse_fault(plan)


def test_fault_plan_defaults() -> None:
    assert parse_fault({"cut_after": 0}).as_dict() == {
        "status": None,
        "hang": False,
        "cut_after": 0,
        "reset": False,
        "latency": 0.0,
        "health": False,
        "retry_after": 1,
        "count": None,
    }


# ---------------------------------------------------------------- control plane


async def test_control_plane_over_http(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    base = upstream.url + "/_fake"
    async with http.post(base + "/faults", json={"status": 200}) as r:
        assert r.status == 400
    async with http.post(base + "/faults", json={"status": 502, "count": 1}) as r:
        assert (await r.json())["fault"]["count"] == 1
    async with http.get(upstream.url + "/v1/models", headers={"x-request-id": "r9"}) as r:
        assert r.status == 502 and r.headers["x-request-id"] == "r9"
    async with http.delete(base + "/faults") as r:
        assert (await r.json()) == {"fault": None}

    async with http.get(base + "/stats") as r:
        stats = await r.json()
    assert stats["requests"] == 1 and stats["by_path"] == {"/v1/models": 1}
    assert stats["last_headers"]["x-request-id"] == "r9" and stats["last_body"] is None
    assert {"in_flight", "open_streams", "cancelled"} <= set(stats)

    async with http.post(base + "/reset") as r:
        assert (await r.json())["requests"] == 0
    assert upstream.stats()["by_path"] == {} and upstream.stats()["last_headers"] == {}


async def test_client_leaving_mid_stream_is_counted(http: aiohttp.ClientSession) -> None:
    async with FakeUpstream(name="slow", stream_chunks=50, chunk_delay=0.01) as up:
        resp = await http.post(up.url + "/v1/chat/completions", json={**CHAT, "stream": True})
        await resp.content.readline()  # the role chunk
        assert up.stats()["open_streams"] == 1 and up.stats()["in_flight"] == 1
        resp.close()  # drop the connection mid-stream
        await wait_for(lambda: up.stats()["open_streams"] == 0)
        stats = up.stats()
        assert stats["cancelled"] == 1 and stats["in_flight"] == 0


async def test_stop_and_restart_on_same_port(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    port = upstream.port
    assert upstream.url == f"http://127.0.0.1:{port}"
    await upstream.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        await http.get(upstream.url + "/health/liveliness")

    await upstream.start()
    assert upstream.port == port
    async with http.get(upstream.url + "/v1/models") as r:
        assert r.status == 200 and r.headers["x-fake-upstream"] == "fake-a"


# ---------------------------------------------------------------- faults for broken upstreams


async def raw_exchange(upstream: FakeUpstream, path: bytes = b"/v1/chat/completions",
                       auth: bytes = b"") -> tuple[bytes, BaseException | None]:
    """Everything the fake sends for one POST, and how the connection ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    body = orjson.dumps(CHAT)
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                 b"Content-Length: %d\r\n\r\n%s" % (path, auth, len(body), body))
    data, error = b"", None
    try:
        while piece := await reader.read(65536):
            data += piece
            if b"\r\n\r\n" in data and b"Content-Length" in data.split(b"\r\n\r\n")[0]:
                head, rest = data.split(b"\r\n\r\n", 1)
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    break
    except ConnectionResetError as exc:
        error = exc
    writer.close()
    return data, error


async def test_html_fault_answers_a_200_page(upstream, http) -> None:
    await upstream.set_fault({"html": True})
    async with http.post(upstream.url + "/v1/chat/completions", json=CHAT) as r:
        assert (r.status, r.content_type) == (200, "text/html")
        assert (await r.text()).startswith("<!doctype html>")


async def test_not_json_and_json_body_faults(upstream, http) -> None:
    await upstream.set_fault({"not_json": True})
    async with http.post(upstream.url + "/v1/chat/completions", json=CHAT) as r:
        assert (r.status, r.content_type, await r.read()) == (200, "application/json", b"upstream says: all good")
    await upstream.set_fault({"json_body": [1, "two"]})
    async with http.post(upstream.url + "/v1/embeddings", json=CHAT) as r:
        assert (r.status, await r.json()) == (200, [1, "two"])
    await upstream.set_fault({"json_body": None})
    async with http.post(upstream.url + "/v1/embeddings", json=CHAT) as r:
        assert (r.status, await r.read()) == (200, b"null")


@pytest.mark.parametrize("status", [204, 302])
async def test_raw_status_faults(upstream, http, status: int) -> None:
    await upstream.set_fault({"raw_status": status})
    async with http.post(upstream.url + "/v1/chat/completions", json=CHAT, allow_redirects=False) as r:
        assert r.status == status
        assert await r.read() == b""
        assert r.headers.get("Location") == ("/_fake/landing" if status == 302 else None)
    async with http.get(upstream.url + "/_fake/landing") as r:
        assert (r.status, await r.json()) == (200, "landed")


async def test_raw_status_101_upgrades_then_closes(upstream) -> None:
    await upstream.set_fault({"raw_status": 101})
    data, _ = await raw_exchange(upstream)
    assert data == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


async def test_sse_garbage_fault(upstream, http) -> None:
    await upstream.set_fault({"sse_garbage": True})
    async with http.post(upstream.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert (r.status, r.content_type) == (200, "text/event-stream")
        raw = await r.read()
    assert b"data: this is not json\n\n" in raw and b"[DONE]" not in raw


async def test_huge_fault_is_a_valid_chat_completion_of_exactly_n_bytes(upstream, http) -> None:
    await upstream.set_fault({"huge": 1_000_000})
    async with http.post(upstream.url + "/v1/chat/completions", json=CHAT) as r:
        raw = await r.read()
    assert (r.status, len(raw), r.headers["Content-Length"]) == (200, 1_000_000, "1000000")
    assert orjson.loads(raw)["object"] == "chat.completion"


async def test_cut_body_fault_sends_k_bytes_of_a_close_delimited_body_then_resets(upstream) -> None:
    await upstream.set_fault({"cut_body": 9})
    data, error = await raw_exchange(upstream)
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Content-Length" not in head and b"Connection: close" in head
    assert (body, type(error)) == (b'{"id":"ch', ConnectionResetError)


async def test_echo_auth_fault_quotes_the_authorization_header(upstream, http) -> None:
    await upstream.set_fault({"echo_auth": 401})
    async with http.post(upstream.url + "/v1/chat/completions", json=CHAT,
                         headers={"Authorization": "Bearer sk-secret-123"}) as r:
        assert r.status == 401
        assert (await r.json())["error"]["message"] == "fake-a: the key 'Bearer sk-secret-123' is not valid here"
    await upstream.set_fault({"echo_auth": True})
    async with http.post(upstream.url + "/v1/chat/completions", json=CHAT) as r:
        assert r.status == 400


@pytest.mark.parametrize("plan, message", [
    ({"raw_status": 200}, "raw_status must be one of"),
    ({"huge": 10}, "huge must be an integer number of bytes, at least 300"),
    ({"cut_body": -1}, "cut_body must be a non-negative integer"),
    ({"echo_auth": 500}, "echo_auth must be true or a 4xx status"),
    ({"html": "yes"}, "html must be true or false"),
    ({"html": True, "huge": 300}, "pick one fault action"),
])
def test_bad_new_fault_plans_name_the_problem(plan: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(plan)


def test_new_faults_show_in_the_plan_only_when_set() -> None:
    assert parse_fault({"huge": 500}).as_dict()["huge"] == 500
    assert "huge" not in parse_fault({"reset": True}).as_dict()

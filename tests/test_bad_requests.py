"""Every malformed request gets a JSON 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest


async def post(gateway, body: bytes, headers: dict | None = None):
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=body,
                                headers={**gateway.headers(), "Content-Type": "application/json",
                                         **(headers or {})}) as resp:
            return resp.status, await resp.json(content_type=None)


def assert_openai_error(body: dict) -> dict:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("body, status, param, code", [
    (b"{not json", 400, None, "invalid_json"),
    (b"", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_json"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model", "missing_required_parameter"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "model", "invalid_type"),
    (b'{"model": "gpt-4o-mini"}', 400, "messages", "missing_required_parameter"),
    (b'{"model": "gpt-4o-mini", "messages": "hi"}', 400, "messages", "invalid_type"),
    (b'{"model": "gpt-4o-mini", "messages": [{"content": "x"}]}', 400, "messages[0]", "invalid_value"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
     400, "stream", "invalid_type"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
     400, "max_tokens", "integer_below_min_value"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream_options": {}}',
     400, "stream_options", "invalid_value"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "api_base": "http://evil"}',
     400, "api_base", "unknown_parameter"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "base_url": "http://evil"}',
     400, "base_url", "unknown_parameter"),
    (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', 404, "model",
     "model_not_found"),
])
async def test_bad_body(gateway, upstreams, body, status, param, code):
    got_status, got = await post(gateway, body)
    error = assert_openai_error(got)
    assert (got_status, error["param"], error["code"]) == (status, param, code), error
    assert sum(u.stats()["requests"] for u in upstreams) == 0  # nothing bad is forwarded


async def test_oversized_body_is_413(gateway):
    big = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    status, body = await post(gateway, big)
    assert status == 413
    assert assert_openai_error(body)["code"] == "request_too_large"


async def test_oversized_chunked_body_without_length_is_413(gateway):
    async def chunks():
        for _ in range(80):
            yield b"x" * 65536

    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=chunks(),
                                headers=gateway.headers()) as resp:
            assert resp.status == 413
            assert_openai_error(await resp.json())


async def test_bare_cr_in_a_header_is_a_json_400(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Evil: a\rInjected: b\r\n"
                 b"Content-Length: 2\r\n\r\n{}")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"application/json" in head
    assert_openai_error(orjson.loads(body))


async def test_unknown_route_and_wrong_method_are_json(gateway):
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/v1/nothing-here", headers=gateway.headers()) as resp:
            assert resp.status == 404
            assert_openai_error(await resp.json())
        async with session.get(gateway.url + "/v1/chat/completions", headers=gateway.headers()) as resp:
            assert resp.status == 405
            assert_openai_error(await resp.json())


async def test_missing_key_is_401_before_anything_is_forwarded(gateway, upstreams):
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions",
                                data=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}',
                                ) as resp:
            assert resp.status == 401
            assert assert_openai_error(await resp.json())["code"] == "invalid_api_key"
    assert sum(u.stats()["requests"] for u in upstreams) == 0


@pytest.mark.parametrize("field", [
    "extra_headers", "aws_access_key_id", "aws_region_name", "vertex_credentials", "vertex_project",
    "azure_ad_token", "guardrails", "caching", "api_base", "litellm_params", "mock_response", "tags",
])
async def test_fields_that_steer_the_upstream_are_refused(gateway, upstreams, field):
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], field: {"x": 1}})
    status, got = await post(gateway, body)
    error = assert_openai_error(got)
    assert (status, error["param"], error["code"]) == (400, field, "unknown_parameter")
    assert error["message"] == (f"Unrecognized request argument supplied: {field}. The gateway chooses the "
                                "upstream; remove this field.")
    assert sum(u.stats()["requests"] for u in upstreams) == 0


async def test_a_new_openai_parameter_is_forwarded_untouched(gateway, upstreams):
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                         "reasoning_effort": "low", "metadata": {"team": "a"}})
    status, _ = await post(gateway, body)
    assert status == 200
    forwarded = [u.stats()["last_body"] for u in upstreams if u.stats()["requests"]]
    assert forwarded[0]["reasoning_effort"] == "low" and forwarded[0]["metadata"] == {"team": "a"}


@pytest.mark.parametrize("depth", [255, 300, 1000])
async def test_json_too_deep_to_rewrite_is_a_400_not_a_500(gateway, upstreams, depth):
    # The alias makes the gateway rewrite `model`, which re-serialises the body.
    nested = b"[" * depth + b"]" * depth
    body = b'{"model": "mini", "messages": [{"role": "user", "content": "x"}], "tools": ' + nested + b"}"
    status, got = await post(gateway, body)
    error = assert_openai_error(got)
    assert (status, error["code"]) == (400, "invalid_json")
    assert "nests JSON too deeply" in error["message"]
    assert sum(u.stats()["requests"] for u in upstreams) == 0

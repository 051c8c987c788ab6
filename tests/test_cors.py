"""server.cors: off by default; when on, preflights answer 204 and answers carry the allowed origin."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.config.build import load_config
from proxy.config.source import ConfigError
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

APP = "https://app.example.com"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def fake():
    upstream = await start_fake_upstream(name="a")
    yield upstream
    await upstream.stop()


async def started(tmp_path, fake, **server) -> GatewayHarness:
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", fake.url)], server=server)
    return await h.start()


async def test_off_by_default_no_header_and_options_is_routed_as_before(tmp_path, fake):
    h = await started(tmp_path, fake)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.options(h.url + "/v1/chat/completions", headers=PREFLIGHT) as resp:
                assert resp.status == 405
                assert "Access-Control-Allow-Origin" not in resp.headers
            async with session.post(h.url + "/v1/chat/completions", json=CHAT,
                                    headers={**h.headers(), "Origin": APP}) as resp:
                assert resp.status == 200
                assert "Access-Control-Allow-Origin" not in resp.headers
    finally:
        await h.stop()


async def test_on_a_preflight_answers_204_and_every_answer_carries_the_origin(tmp_path, fake):
    h = await started(tmp_path, fake, cors={"allow_origins": [APP], "max_age": 120})
    try:
        async with aiohttp.ClientSession() as session:
            async with session.options(h.url + "/v1/chat/completions", headers=PREFLIGHT) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == APP
                assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, PATCH, DELETE, OPTIONS"
                assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
                assert resp.headers["Access-Control-Max-Age"] == "120"
                assert resp.headers["Vary"] == "Origin"
            async with session.post(h.url + "/v1/chat/completions", json=CHAT,
                                    headers={**h.headers(), "Origin": APP}) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == APP
                assert "x-request-id" in resp.headers["Access-Control-Expose-Headers"]
            async with session.post(h.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                                    headers={**h.headers(), "Origin": APP}) as resp:
                await resp.read()
                assert resp.headers["Access-Control-Allow-Origin"] == APP  # streams too
            async with session.post(h.url + "/v1/chat/completions", json=CHAT, headers={"Origin": APP}) as resp:
                assert resp.status == 401
                assert resp.headers["Access-Control-Allow-Origin"] == APP  # errors too, so the page can read them
            async with session.post(h.url + "/v1/chat/completions", json=CHAT,
                                    headers={**h.headers(), "Origin": "https://evil.example"}) as resp:
                assert resp.status == 200
                assert "Access-Control-Allow-Origin" not in resp.headers
                assert resp.headers["Vary"] == "Origin"
            async with session.options(h.url + "/v1/chat/completions",
                                       headers={**PREFLIGHT, "Origin": "https://evil.example"}) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"]["code"] == "cors_origin_not_allowed"
                assert "Access-Control-Allow-Origin" not in resp.headers
    finally:
        await h.stop()


async def test_configured_headers_are_listed_instead_of_echoed(tmp_path, fake):
    h = await started(tmp_path, fake, cors={"allow_origins": ["*"], "allow_headers": ["Authorization", "Content-Type"],
                                            "allow_methods": ["post"]})
    try:
        async with aiohttp.ClientSession() as session:
            async with session.options(h.url + "/v1/messages", headers=PREFLIGHT) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == APP
                assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
                assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    finally:
        await h.stop()


def test_a_bad_origin_is_rejected_by_the_schema(tmp_path):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", "http://127.0.0.1:9")],
                             server={"cors": {"allow_origins": ["app.example.com/"]}})
    with pytest.raises(ConfigError) as caught:
        load_config(h.config_dir)
    assert str(caught.value).endswith(
        "gateway.yaml:7: server.cors.allow_origins[0]: 'app.example.com/' does not have the expected format")

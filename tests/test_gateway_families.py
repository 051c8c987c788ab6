"""The pipeline runs any family description; request ids belong to the app."""

from __future__ import annotations

import dataclasses

import aiohttp
import orjson
from aiohttp import web

from proxy import server
from proxy.app import create_app
from proxy.cli.accounts import create_user_and_key
from proxy.errors import GatewayError
from proxy.fake_upstream import start_fake_upstream
from proxy.gateway.families import EMBEDDINGS, FAMILIES
from proxy.gateway.pipeline import routes
from proxy.gateway.request_ids import RequestIds

from .gateway_harness import GatewayHarness, upstream_entry


def test_request_ids_are_per_app_and_keep_a_plain_client_id():
    first, second = RequestIds(), RequestIds()
    a1, a2, b1 = first.of(None), first.of(""), second.of(None)
    assert a1[:-8] == a2[:-8] != b1[:-8]  # one prefix per app
    assert (a1[-8:], a2[-8:], b1[-8:]) == ("00000001", "00000002", "00000001")
    assert first.of("client-id.42:x") == "client-id.42:x"
    assert first.of("bad id\r\n").endswith("00000003")
    assert first.of("x" * 129).endswith("00000004")


def test_every_family_has_a_scope_a_path_and_an_upstream_path():
    assert [(f.name, f.scope, f.paths, f.upstream_path, f.framing is not None) for f in FAMILIES] == [
        ("chat", "chat", ("/chat/completions",), b"/v1/chat/completions", True),
        ("completions", "completions", ("/completions",), b"/v1/completions", True),
        ("embeddings", "embeddings", ("/embeddings",), b"/v1/embeddings", False),
        ("responses", "responses", ("/responses",), b"/v1/responses", True),
        ("responses_compact", "responses", ("/responses/compact",), b"/v1/responses/compact", False),
        ("responses_input_tokens", "responses", ("/responses/input_tokens",), b"/v1/responses/input_tokens",
         False),
        ("messages", "messages", ("/messages",), b"/v1/messages", True),
        ("messages_count_tokens", "messages", ("/messages/count_tokens",), b"/v1/messages/count_tokens", False),
        ("moderations", "moderations", ("/moderations",), b"/v1/moderations", False),
        ("images", "images", ("/images/generations",), b"/v1/images/generations", False),
        ("rerank", "rerank", ("/rerank",), b"/v1/rerank", False),
        ("audio_speech", "audio", ("/audio/speech",), b"/v1/audio/speech", True),
        ("audio_transcriptions", "audio", ("/audio/transcriptions",), b"/v1/audio/transcriptions", False),
        ("audio_translations", "audio", ("/audio/translations",), b"/v1/audio/translations", False),
    ]


def _own_error_shape(exc: GatewayError, headers: dict[str, str] | None) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": exc.code, "message": exc.message}},
                             status=exc.status, headers=headers)


async def test_a_new_family_is_a_description_with_its_own_key_header_and_error_shape(tmp_path):
    """An x-api-key family with its own error body, served by the same pipeline."""
    vectors = dataclasses.replace(EMBEDDINGS, name="vectors", paths=("/vectors",),
                                  credentials=lambda request: "Bearer " + request.headers.get("x-api-key", ""),
                                  error_response=_own_error_shape)
    fake = await start_fake_upstream(name="up")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("up", fake.url)])
    _, key = create_user_and_key(harness.db_settings, "t@example.com", "correct horse battery", "test", "e2e",
                                 bcrypt_rounds=4)
    app = create_app(harness.config_dir)
    app.router.add_routes(routes((vectors,), ("/v9",)))
    runner, port = await server.start(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/v9/vectors"
    body = orjson.dumps({"model": "text-embedding-3-small", "input": "hello world"})
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers={"x-api-key": key}) as resp:
                ok = (resp.status, await resp.json())
            async with session.post(url, data=body, headers={"x-api-key": "sk-wrong"}) as resp:
                refused = (resp.status, await resp.json())
            async with session.post(url, data=orjson.dumps({"model": "text-embedding-3-small", "input": "x",
                                                            "stream": True}),
                                    headers={"x-api-key": key}) as resp:
                no_stream = (resp.status, await resp.json())
    finally:
        await runner.cleanup()
        await fake.stop()
    assert ok[0] == 200 and ok[1]["object"] == "list" and ok[1]["usage"]["prompt_tokens"] == 2
    assert fake.stats()["by_path"] == {"/v1/embeddings": 1}
    assert refused[0] == 401 and refused[1]["type"] == "error" and refused[1]["error"]["type"] == "invalid_api_key"
    assert no_stream == (400, {"type": "error", "error": {"type": "invalid_value",
                                                          "message": "Embeddings cannot be streamed."}})

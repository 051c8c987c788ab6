"""Edges of the relay: an upstream that keeps the socket open after [DONE], in-band upstream errors,
odd but valid bodies, and upstream keys that would break a header."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from proxy.appkeys import USAGE
from proxy.config import ConfigError, load_config

from .db_access import query
from .gateway_harness import GatewayHarness, upstream_entry

STREAM = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]})


class ScriptedSSE:
    """An upstream that answers every request with the given SSE events, then keeps the connection open."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.server = None

    async def start(self) -> "ScriptedSSE":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                return
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for event in self.events:
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(30)  # never ends the chunked body
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()


async def _stream_once(tmp_path, events):
    upstream = await ScriptedSSE(events).start()
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("s", upstream.url)])
    await harness.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", data=STREAM,
                                    headers=harness.headers(), timeout=aiohttp.ClientTimeout(total=5)) as resp:
                body = await resp.read()
        await harness.app[USAGE].flush()
        [row] = query(harness.db_path, "SELECT status, error_type, partial FROM usage")
        return resp.status, body, row
    finally:
        await harness.stop()
        await upstream.stop()


async def test_the_stream_ends_at_done_even_if_the_upstream_keeps_the_socket_open(tmp_path):
    chunk = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    status, body, row = await _stream_once(tmp_path, [chunk, b"data: [DONE]\n\n"])
    assert status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    assert row == (200, None, 0)


async def test_an_in_band_upstream_error_is_accounted_as_an_error_and_not_doubled(tmp_path):
    error = b'data: {"error": {"message": "content filtered", "type": "invalid_request_error"}}\n\n'
    status, body, row = await _stream_once(tmp_path, [error, b"data: [DONE]\n\n"])
    assert body.count(b'"error"') == 1
    assert row == (502, "upstream_error", 1)


async def test_odd_but_valid_bodies_never_answer_500(gateway):
    async with aiohttp.ClientSession() as session:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "assistant", "content": None, "tool_calls": 5},
                                                     {"role": "user", "content": [{"type": "text", "text": "x"}]}]}
        async with session.post(gateway.url + "/v1/chat/completions", json=body, headers=gateway.headers()) as resp:
            assert resp.status < 500


@pytest.mark.parametrize("secret", ["sk-abc\r\nX-Injected: 1", "sk-\x00nul", "sk-ключ"])
def test_an_upstream_key_that_would_break_a_header_is_a_config_error(tmp_path, secret):
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", "http://127.0.0.1:9",
                                                                          api_key_env="BM_BAD_KEY")])
    with pytest.raises(ConfigError) as info:
        load_config(harness.config_dir, environ={"BM_BAD_KEY": secret})
    message = str(info.value)
    assert "environment variable BM_BAD_KEY holds control or non-ASCII characters" in message
    assert secret not in message

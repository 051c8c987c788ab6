"""Connection timeouts (server.timeouts), each through a raw socket against a real gateway:
an idle connection, a header that trickles, a body that stops, an idle kept-alive connection.
Each test sets one small timeout and long others, so the close it awaits is that one's."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from proxy.config.build import load_config
from proxy.config.snapshot import ServerTimeouts
from proxy.config.source import ConfigError

from .gateway_harness import GatewayHarness, upstream_entry

SHORT = 0.3
LONG = "60s"
BOUND = 10.0  # seconds a close may take before the test gives up


async def gateway_with(tmp_path, fake, **timeouts) -> GatewayHarness:
    settings = {"header": LONG, "body": LONG, "keepalive": LONG, **timeouts}
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", fake.url)],
                                   server={"timeouts": settings})
    return await harness.start()


async def connect(harness: GatewayHarness):
    host, port = harness.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def closed_after(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server still sends, until it closes; and how long that took."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), BOUND)
    return data, time.monotonic() - started


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(tmp_path, fake):
    harness = await gateway_with(tmp_path, fake, header=SHORT)
    try:
        reader, writer = await connect(harness)
        data, took = await closed_after(reader)
        writer.close()
    finally:
        await harness.stop()
    assert data == b""
    print(f"idle connection closed after {took:.2f}s (header timeout {SHORT}s)")


async def test_a_trickled_header_is_cut_at_the_header_timeout(tmp_path, fake):
    harness = await gateway_with(tmp_path, fake, header=SHORT)
    try:
        reader, writer = await connect(harness)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never finished
        data, took = await closed_after(reader)
        writer.close()
    finally:
        await harness.stop()
    assert data == b""
    print(f"slow header closed after {took:.2f}s")


async def test_a_complete_header_is_not_cut_by_the_header_timeout(tmp_path, fake):
    harness = await gateway_with(tmp_path, fake, header=SHORT, keepalive=SHORT)
    try:
        reader, writer = await connect(harness)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = await closed_after(reader)
        writer.close()
    finally:
        await harness.stop()
    assert data.startswith(b"HTTP/1.1 200 ")


async def test_a_later_header_on_a_kept_alive_connection_gets_its_own_full_header_timeout(tmp_path, fake):
    # One timer serves the whole connection: armed for the first header, it must
    # neither cut a later header early nor let it trickle on past its own period.
    harness = await gateway_with(tmp_path, fake, header=SHORT)
    try:
        reader, writer = await connect(harness)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        await asyncio.wait_for(reader.readexactly(length), BOUND)
        # The connection's timer was armed at its start; this header begins two thirds into it.
        await asyncio.sleep(SHORT * 2 / 3)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never finished
        data, took = await closed_after(reader)
        writer.close()
    finally:
        await harness.stop()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert data == b""
    assert took >= SHORT * 0.9, f"the second header was cut after {took:.2f}s, before its own {SHORT}s"


async def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes(tmp_path, fake):
    harness = await gateway_with(tmp_path, fake, body=SHORT)
    try:
        reader, writer = await connect(harness)
        writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {harness.key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\": ".encode())
        data, took = await closed_after(reader)
        writer.close()
    finally:
        await harness.stop()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in head
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert error["message"] == ("The request body stopped arriving for 0.3s (server.timeouts.body); "
                                "send it without pauses.")
    assert fake.stats()["requests"] == 0
    print(f"slow body answered 408 and closed after {took:.2f}s")


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(tmp_path, fake):
    harness = await gateway_with(tmp_path, fake, keepalive=SHORT)
    try:
        reader, writer = await connect(harness)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await asyncio.wait_for(reader.readexactly(length), BOUND)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Connection: close" not in head  # kept alive, then closed for idling
        data, took = await closed_after(reader)
        writer.close()
    finally:
        await harness.stop()
    assert data == b""
    print(f"idle keep-alive closed after {took:.2f}s")


def test_the_defaults_are_nginxs(tmp_path):
    (tmp_path / "gateway.yaml").write_text("server: {}\n")
    assert load_config(str(tmp_path / "gateway.yaml")).server.timeouts == ServerTimeouts(
        header=60.0, body=60.0, keepalive=75.0)


def test_timeouts_are_read_as_durations(tmp_path):
    (tmp_path / "gateway.yaml").write_text("server:\n  timeouts: {header: 500ms, body: 2m, keepalive: 5}\n")
    assert load_config(str(tmp_path / "gateway.yaml")).server.timeouts == ServerTimeouts(
        header=0.5, body=120.0, keepalive=5.0)


def test_a_zero_timeout_is_rejected(tmp_path):
    (tmp_path / "gateway.yaml").write_text("server:\n  timeouts: {header: 0s}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "gateway.yaml"))
    assert "server.timeouts.header: must be longer than 0s" in str(caught.value)

"""The pooled HTTP/1.1 client against raw servers on 127.0.0.1 that answer byte for byte."""

from __future__ import annotations

import asyncio

import pytest

from proxy.upstream.http1 import ConnectionPool, Target, UpstreamConnectionError, header_lines

HEADERS = header_lines([("Content-Type", "application/json")])


class RawServer:
    """Answers each request with scripted bytes; counts connections and requests."""

    def __init__(self, answers) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def target(self) -> Target:
        return Target.from_url(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if callable(answer):
                    await answer(writer)
                    if writer.is_closing():
                        return
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


@pytest.fixture
async def pool():
    p = ConnectionPool()
    yield p
    await p.close()


async def test_content_length_body_and_keep_alive_reuse(pool):
    server = await RawServer([ok(b'{"a":1}'), ok(b'{"b":2}')]).start()
    for expected in (b'{"a":1}', b'{"b":2}'):
        response = await pool.request(server.target, b"/v1/x", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
        assert (response.status, response.content_type) == (200, "application/json")
        assert await response.read(1) == expected
        response.release()
    assert server.connections == 1  # the second request reused the first connection
    assert server.requests[0].startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 2\r\n" in server.requests[0]
    await server.stop()


async def test_chunked_stream_arrives_piece_by_piece(pool):
    async def stream(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"0\r\n\r\n")

    server = await RawServer([stream]).start()
    response = await pool.request(server.target, b"/s", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    assert response.content_type == "text/event-stream"
    received = b""
    while piece := await response.readany(1):
        received += piece
    assert received == b"data: 1\n\ndata: 2\n\n"
    response.release()
    await server.stop()


async def test_body_delimited_by_connection_close(pool):
    async def close_delimited(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"x\":1}")
        await writer.drain()
        writer.close()

    server = await RawServer([close_delimited]).start()
    response = await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    assert await response.read(1) == b'{"x":1}'
    response.release()
    await server.stop()


async def test_a_pooled_connection_the_server_closed_is_replaced_transparently(pool):
    async def answer_then_close(writer):
        writer.write(ok(b"{}", b"Connection: keep-alive\r\n"))
        await writer.drain()
        writer.close()  # the server drops the idle connection the client keeps

    server = await RawServer([answer_then_close, ok(b'{"again":true}')]).start()
    first = await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    await first.read(1)
    first.release()
    second = await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    assert await second.read(1) == b'{"again":true}'
    second.release()
    assert server.connections == 2
    await server.stop()


async def test_a_response_cut_mid_body_raises(pool):
    async def cut(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    server = await RawServer([cut]).start()
    response = await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    with pytest.raises(UpstreamConnectionError):
        await response.read(1)
    response.release()
    await server.stop()


async def test_malformed_response_raises_and_drops_the_connection(pool):
    server = await RawServer([b"NOT HTTP AT ALL\r\n\r\n"]).start()
    with pytest.raises(UpstreamConnectionError, match="malformed"):
        await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    await server.stop()


async def test_silence_past_the_read_timeout_raises_timeout(pool):
    async def hang(writer):
        await asyncio.sleep(5)

    server = await RawServer([hang]).start()
    with pytest.raises(asyncio.TimeoutError):
        await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=0.05)
    await server.stop()


async def test_connection_refused_is_an_upstream_connection_error(pool):
    server = await RawServer([]).start()
    target = server.target
    await server.stop()
    with pytest.raises(UpstreamConnectionError, match="cannot connect"):
        await pool.request(target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)


async def test_a_slow_reader_pauses_the_upstream_socket(pool):
    big = b"x" * (1024 * 1024)

    async def flood(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
        writer.write(big)
        await writer.drain()

    server = await RawServer([flood]).start()
    response = await pool.request(server.target, b"/", HEADERS, b"{}", connect_timeout=1, read_timeout=1)
    while not response.conn.paused and not response.complete:
        await asyncio.sleep(0.001)  # let bytes arrive until the high-water mark is passed
    assert response.conn.paused
    total = 0
    while piece := await response.readany(1):
        total += len(piece)
    assert total == len(big) and not response.conn.paused
    response.release()
    await server.stop()


def test_target_keeps_the_url_path_as_a_prefix():
    t = Target.from_url("https://llm.example.com/litellm/")
    assert (t.host, t.port, t.tls, t.base_path, t.host_header) == (
        "llm.example.com", 443, True, b"/litellm", b"llm.example.com")

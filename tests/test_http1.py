"""The pooled HTTP/1.1 client against raw servers on 127.0.0.1 that answer byte for byte."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from proxy.upstream.http1 import HIGH_WATER, ConnectionPool, Target, UpstreamConnectionError, header_lines
from proxy.upstream.transport import ResponseTooLarge, TransportRequest

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


def send_reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN (SO_LINGER with a zero timeout)."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


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


# -- framing and pooled-connection bounds (issue 8, section 2) ------------------------


async def request(pool, server, path=b"/", **kw):
    return await pool.request(server.target, path, HEADERS, b"{}", connect_timeout=1, read_timeout=1, **kw)


@pytest.mark.parametrize("size", [256 * 1024 + 1, 390_000, 800 * 1024, 1024 * 1024])
async def test_a_large_content_length_body_is_read_whole(pool, size):
    # Over the stream high-water mark: read() used to wait for a resume nobody made.
    body = b"7" * size
    server = await RawServer([ok(body)]).start()
    response = await request(pool, server)
    assert await response.read(1) == body
    response.release()
    await server.stop()


async def test_a_large_body_in_one_go_leaves_its_pooled_connection_usable(pool):
    # 200, 200, a 300 KB 200, then a small one: the fourth used to time out on a paused socket.
    answers = [ok(b'{"n":1}'), ok(b'{"n":2}'), ok(b"[" + b"1," * 150_000 + b"1]"), ok(b'{"n":4}')]
    server = await RawServer(answers).start()
    sizes = []
    for _ in range(4):
        response = await request(pool, server)
        sizes.append(len(await response.read(1)))
        response.release()
    assert sizes == [7, 7, 300_003, 7]
    assert server.connections == 1
    await server.stop()


async def test_a_large_body_trickling_in_pieces_is_read_whole(pool):
    piece = b"p" * 65_536

    async def trickle(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(piece) * 12))
        for _ in range(12):
            writer.write(piece)
            await writer.drain()

    server = await RawServer([trickle]).start()
    response = await request(pool, server)
    assert await response.read(1) == piece * 12
    response.release()
    await server.stop()


async def test_chunked_with_odd_chunk_sizes_and_trailers(pool):
    pieces = [b"a", b"bc" * 7, b"d" * 4093, b"e" * 300_001]

    async def chunked(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n")
        for p in pieces:
            writer.write(b"%X;ext=1\r\n%s\r\n" % (len(p), p))
            await writer.drain()
        writer.write(b"0\r\nX-Checksum: abc\r\n\r\n")

    server = await RawServer([chunked, ok(b"{}")]).start()
    response = await request(pool, server)
    assert await response.read(1) == b"".join(pieces)
    assert response.header("x-checksum") is None  # trailers are not headers
    response.release()
    again = await request(pool, server)
    assert await again.read(1) == b"{}"
    again.release()
    assert server.connections == 1  # the trailer ended the message cleanly
    await server.stop()


async def test_a_close_delimited_body_cut_by_a_reset_is_an_error(pool):
    async def reset(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"partial")
        await writer.drain()
        send_reset(writer)

    server = await RawServer([reset]).start()
    response = await request(pool, server)
    with pytest.raises(UpstreamConnectionError, match="broke mid-response") as info:
        await response.read(1)
    assert info.value.reason == "connection reset"
    response.release()
    await server.stop()


async def test_a_close_delimited_body_ended_cleanly_is_whole_and_not_reused(pool):
    async def close_delimited(writer):
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 400_000)
        await writer.drain()
        writer.close()

    server = await RawServer([close_delimited, ok(b"{}")]).start()
    response = await request(pool, server)
    assert await response.read(1) == b"z" * 400_000
    response.release()
    again = await request(pool, server)
    assert await again.read(1) == b"{}"
    again.release()
    assert server.connections == 2
    await server.stop()


async def test_a_stream_paused_across_the_buffer_bound_resumes_and_completes(pool):
    body = b"s" * (HIGH_WATER * 3 + 17)

    async def flood(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 100_000):
            part = body[start:start + 100_000]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server = await RawServer([flood, ok(b"{}")]).start()
    response = await request(pool, server)
    first = await response.readany(1)
    deadline = asyncio.get_running_loop().time() + 2
    while not response.conn.paused:  # bytes pile up past the bound while nobody reads
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)
    rest = await response.read(1)  # a whole-body read takes over and resumes the socket
    assert first + rest == body
    response.release()
    again = await request(pool, server)
    assert await again.read(1) == b"{}"
    again.release()
    await server.stop()


async def test_stray_bytes_after_a_complete_message_drop_the_connection(pool):
    server = await RawServer([ok(b"{}") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray",
                              ok(b'{"fresh":1}')]).start()
    response = await request(pool, server)
    assert await response.read(1) == b"{}"
    response.release()
    again = await request(pool, server)
    assert await again.read(1) == b'{"fresh":1}'  # not "stray": a new connection was used
    again.release()
    assert server.connections == 2
    await server.stop()


async def test_stray_bytes_arriving_later_drop_the_idle_connection(pool):
    async def late_garbage(writer):
        writer.write(ok(b"{}"))
        await writer.drain()
        writer.write(b"garbage")
        await writer.drain()

    server = await RawServer([late_garbage, ok(b'{"fresh":1}')]).start()
    response = await request(pool, server)
    assert await response.read(1) == b"{}"
    response.release()
    again = await request(pool, server)
    assert await again.read(1) == b'{"fresh":1}'
    again.release()
    assert server.connections == 2
    await server.stop()


async def test_a_written_request_on_a_dropped_connection_is_not_sent_again(pool):
    async def read_then_drop(writer):
        send_reset(writer)  # took the request, answered nothing

    server = await RawServer([ok(b"{}"), read_then_drop, ok(b"{}")]).start()
    first = await request(pool, server)
    await first.read(1)
    first.release()
    with pytest.raises(UpstreamConnectionError):
        await request(pool, server)
    assert len(server.requests) == 2  # the POST reached the server once, and only once
    await server.stop()


async def test_a_pooled_connection_closed_while_idle_is_replaced_before_writing(pool):
    closed = asyncio.Event()

    async def answer_then_close(writer):
        writer.write(ok(b"{}"))
        await writer.drain()
        writer.close()
        closed.set()

    server = await RawServer([answer_then_close, ok(b'{"again":true}')]).start()
    first = await request(pool, server)
    await first.read(1)
    first.release()
    await closed.wait()
    conn = next(iter(pool._idle[server.target]), None)
    second = await request(pool, server)
    assert await second.read(1) == b'{"again":true}'
    second.release()
    assert conn is None or second.conn is not conn
    assert (server.connections, len(server.requests)) == (2, 2)
    await server.stop()


async def test_idle_connections_expire_after_the_keepalive_expiry():
    now = [1000.0]
    pool = ConnectionPool(keepalive_expiry=5.0, clock=lambda: now[0])
    server = await RawServer([ok(b"{}")] * 3).start()
    for advance in (4.9, 5.1):
        response = await request(pool, server)
        await response.read(1)
        response.release()
        now[0] += advance
    response = await request(pool, server)
    await response.read(1)
    response.release()
    # reused after 4.9 s idle, replaced after 5.1 s
    assert server.connections == 2
    await pool.aclose()
    await server.stop()


async def test_the_default_keepalive_expiry_is_five_seconds():
    assert ConnectionPool().keepalive_expiry == 5.0


async def test_a_body_over_the_cap_raises_response_too_large():
    pool = ConnectionPool(max_body=1000)
    server = await RawServer([ok(b"x" * 1001), b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 5000]).start()
    response = await request(pool, server)
    with pytest.raises(ResponseTooLarge, match="larger than 1000 bytes") as info:
        await response.read(1)
    assert not isinstance(info.value, OSError)  # not counted against the upstream's health
    assert info.value.size == 1001
    response.release()
    response = await request(pool, server)  # no Content-Length: caught while reading
    with pytest.raises(ResponseTooLarge):
        await response.read(1)
    response.release()
    await pool.aclose()
    await server.stop()


async def test_read_bounded_returns_at_most_n_bytes_and_drops_the_rest(pool):
    server = await RawServer([ok(b"e" * 100_000), ok(b"short"), ok(b"{}")]).start()
    response = await request(pool, server)
    assert await response.read_bounded(1024, 1) == b"e" * 1024
    response.release()
    response = await request(pool, server)  # a new connection: the rest was never read
    assert await response.read_bounded(1024, 1) == b"short"
    response.release()
    response = await request(pool, server)  # read to its end: this one was reused
    assert await response.read(1) == b"{}"
    response.release()
    assert server.connections == 2
    await server.stop()


async def test_informational_answers_are_skipped(pool):
    server = await RawServer([b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok(b'{"final":1}')]).start()
    response = await request(pool, server)
    assert response.status == 200
    assert await response.read(1) == b'{"final":1}'
    response.release()
    await server.stop()


async def test_get_through_the_transport_interface(pool):
    server = await RawServer([]).start()
    seen = []

    async def serve(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(ok(b'"alive"'))
        await writer.drain()

    raw = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    response = await pool.send(TransportRequest(b"GET", f"http://127.0.0.1:{port}/base/", b"/health", b"X-A: 1\r\n"),
                               connect_timeout=1, read_timeout=1)
    assert (response.status, await response.read(1)) == (200, b'"alive"')
    response.release()
    assert seen == [b"GET /base/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-A: 1\r\n\r\n" % port]
    raw.close()
    await raw.wait_closed()
    await server.stop()


@pytest.mark.parametrize("url, host_header", [
    ("http://[::1]:4000", b"[::1]:4000"),
    ("http://[::1]", b"[::1]"),
    ("https://[2001:db8::1]:443/v", b"[2001:db8::1]"),
])
def test_ipv6_host_headers_keep_their_brackets(url, host_header):
    assert Target.from_url(url).host_header == host_header


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:99999", "port outside 1-65535"),
    ("http://127.0.0.1:0", "port outside 1-65535"),
    ("ftp://host", "must start with http:// or https://"),
    ("http://", "has no host"),
])
def test_unusable_urls_are_rejected_with_a_reason(url, message):
    with pytest.raises(ValueError, match=message):
        Target.from_url(url)


def test_an_unclosed_ipv6_bracket_is_rejected():
    with pytest.raises(ValueError):
        Target.from_url("http://[::1")


async def test_an_ipv6_upstream_is_reachable():
    try:
        server = await asyncio.start_server(lambda r, w: None, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    seen = []

    async def serve(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(ok(b"{}"))
        await writer.drain()

    server.close()
    server = await asyncio.start_server(serve, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool()
    response = await pool.send(TransportRequest(b"GET", f"http://[::1]:{port}", b"/"), connect_timeout=1,
                               read_timeout=1)
    assert response.status == 200
    response.release()
    assert seen[0].startswith(b"GET / HTTP/1.1\r\nHost: [::1]:%d\r\n" % port)
    await pool.aclose()
    server.close()
    await server.wait_closed()


async def test_a_write_the_event_loop_refuses_is_a_connection_failure_not_a_crash(pool):
    # uvloop refuses to write on a socket it has just closed (RuntimeError); nothing
    # was sent, so the forwarder must see an ordinary connection failure it can move.
    server = await RawServer([ok(b"{}"), ok(b"{}")]).start()
    first = await request(pool, server)
    await first.read(1)
    first.release()
    [conn] = pool._idle[server.target]

    def refuse(data):
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    conn.transport.write = refuse
    with pytest.raises(UpstreamConnectionError, match="closed before the request was written"):
        await request(pool, server)
    assert len(server.requests) == 1
    await server.stop()

"""Randomized framings: what the pooled client reads must be what h11, a
reference HTTP/1.1 parser, reads from the same bytes, split into TCP writes at
random places, on a real socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.upstream.http1 import ConnectionPool
from proxy.upstream.transport import TransportRequest, UpstreamConnectionError

bodies = st.one_of(st.binary(max_size=2048), st.builds(lambda n, b: b * n, st.integers(1, 300_000),
                                                       st.sampled_from([b"x", b"{}", b"\r\n"])))


@st.composite
def framed_responses(draw):
    """(wire bytes, how the server ends, how the client reads)."""
    body = draw(bodies)
    status = draw(st.sampled_from([200, 201, 400, 429, 500, 503]))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n" % status
    if framing == "length":
        wire = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        wire = head + b"Transfer-Encoding: chunked\r\n\r\n"
        rest = body
        while rest:
            size = draw(st.integers(1, max(1, len(rest))))
            ext = draw(st.sampled_from([b"", b";a=b"]))
            wire += b"%x%s\r\n%s\r\n" % (size, ext, rest[:size])
            rest = rest[size:]
        trailer = draw(st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: 1\r\nB: 2\r\n"]))
        wire += b"0\r\n" + trailer + b"\r\n"
    else:
        wire = head + b"Connection: close\r\n\r\n" + body
    ending = draw(st.sampled_from(["keep", "close", "reset"]) if framing != "close"
                  else st.sampled_from(["close", "reset"]))
    if ending == "reset" and framing != "close":
        wire = wire[:draw(st.integers(len(head), len(wire) - 1))]  # a cut inside the message
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    mode = draw(st.sampled_from(["read", "readany"]))
    return wire, cuts, ending, mode


def reference(wire: bytes, ending: str) -> tuple[int, bytes, bool]:
    """(status, body, complete) as h11 sees them."""
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "t"), ("Content-Length", "2")]))
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    conn.receive_data(wire)
    if ending == "close":
        conn.receive_data(b"")
    status, body, complete = 0, b"", False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            complete = True
            break
    return status, body, complete


async def exchange(wire: bytes, cuts: list[int], ending: str, mode: str):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
        last = 0
        for cut in cuts + [len(wire)]:
            writer.write(wire[last:cut])
            await writer.drain()
            last = cut
        if ending == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                       struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif ending == "close":
            writer.close()
        else:
            await reader.read()  # keep the connection open until the client leaves

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    pool = ConnectionPool()
    try:
        response = await pool.send(TransportRequest(b"POST", url, b"/", body=b"{}"),
                                   connect_timeout=2, read_timeout=2)
        try:
            if mode == "read":
                body = await response.read(2)
            else:
                body = b""
                while piece := await response.readany(2):
                    body += piece
            return response.status, body, True
        except UpstreamConnectionError:
            return response.status, None, False
        finally:
            response.release()
    except UpstreamConnectionError:
        return 0, None, False
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(framed_responses())
def test_the_client_reads_what_h11_reads(case) -> None:
    wire, cuts, ending, mode = case
    want_status, want_body, want_complete = reference(wire, ending)
    status, body, complete = asyncio.run(exchange(wire, cuts, ending, mode))
    assert complete == want_complete
    if want_complete:
        assert (status, body) == (want_status, want_body)

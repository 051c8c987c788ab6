"""An upstream that answers every POST with the same raw bytes, for answers no
well-behaved server sends: HTML with a 200, a 204, a redirect, a 101, a huge
error body, a connection closed before any byte. GET (health probes) gets a plain 200.
"""

from __future__ import annotations

import asyncio


class CannedUpstream:
    def __init__(self, answer: bytes, *, hold_open: bool = False) -> None:
        self.answer = answer  # written as is; b"" closes the connection without a byte
        self.hold_open = hold_open  # keep the socket open after the answer (a body that never ends)
        self.requests = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> "CannedUpstream":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
                return
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            self.requests += 1
            writer.write(self.answer)
            await writer.drain()
            if self.hold_open:
                await reader.read()  # until the gateway hangs up
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

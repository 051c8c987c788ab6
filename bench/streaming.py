"""A bounded streaming client: N streams, C at a time, each timed to its
first body byte and to its end.

Every loop is bounded twice: by the number of streams and by a deadline
for the whole run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass(slots=True)
class StreamRun:
    ttfb_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    completed: int = 0  # ended with data: [DONE]
    failed: int = 0
    started: int = 0
    errors: list[str] = field(default_factory=list)


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
               run: StreamRun) -> None:
    start = time.perf_counter()
    first: float | None = None
    tail = b""
    typed_end = False  # a Responses stream ends with its terminal event, never [DONE]
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
        async for chunk in resp.content.iter_any():
            if first is None and chunk:
                first = time.perf_counter()
            window = tail + chunk
            typed_end = typed_end or b"event: response.completed" in window
            tail = window[-32:]
    end = time.perf_counter()
    if first is None or not (typed_end or tail.rstrip().endswith(b"data: [DONE]")):
        raise RuntimeError("stream ended without data: [DONE] or response.completed")
    run.ttfb_ms.append((first - start) * 1e3)
    run.total_ms.append((end - start) * 1e3)
    run.completed += 1


async def run_streams(url: str, body: bytes, headers: dict[str, str], *, streams: int, concurrency: int,
                      deadline_s: float = 120.0, stream_timeout_s: float = 30.0) -> StreamRun:
    run = StreamRun()
    headers = {"Content-Type": "application/json", **headers}
    remaining = iter(range(streams))
    timeout = aiohttp.ClientTimeout(total=stream_timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:  # shared iterator: the workers together start exactly `streams`
            run.started += 1
            try:
                await _one(session, url, body, headers, run)
            except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError) as exc:
                run.failed += 1
                if len(run.errors) < 5:
                    run.errors.append(f"{type(exc).__name__}: {exc}")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), deadline_s)
        except asyncio.TimeoutError:
            run.errors.append(f"run stopped at its {deadline_s:.0f} s deadline")
    return run

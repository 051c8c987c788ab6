"""Micro-benchmark: the gateway's pooled HTTP/1.1 client against aiohttp's ClientSession.

    python bench/transport_bench.py [--seconds S] [--reps N] [--concurrency C] [--json]

Both clients POST the same chat body to the same fake upstream processes
(`bench/fake.py`, on uvloop), 16 requests in flight, and read each answer
whole, as the gateway does for a non-stream request: a small chat answer
(about 500 bytes) and a 1 MiB one (the fake's `huge` fault). Figures are
requests/s and CPU µs per request of this process alone (the client), best of
`--reps` runs, the two clients alternating within each repetition. Every run
is bounded by a request count and by `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp  # noqa: E402

from bench.procs import ProcessSet  # noqa: E402
from proxy.upstream.http1 import ConnectionPool  # noqa: E402
from proxy.upstream.transport import TransportRequest, header_lines  # noqa: E402

CHAT = json.dumps({"model": "fake-model", "messages": [
    {"role": "system", "content": "You are a helpful assistant. " * 4},
    {"role": "user", "content": "Say hello in five words, please, and nothing else at all."}]}).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
SIZES = {"small": None, "1 MiB": 1024 * 1024}
MAX_REQUESTS = {"small": 200_000, "1 MiB": 5_000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/health/liveliness") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake upstream at {url} did not start")
            await asyncio.sleep(0.05)


async def set_huge(url: str, size: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/_fake/faults", json={"huge": size}) as r:
            assert r.status == 200, await r.text()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(send, concurrency: int, seconds: float, limit: int) -> tuple[int, float, float]:
    """Run `send` from `concurrency` workers; (requests, wall s, CPU s)."""
    done = 0
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        while done < limit and loop.time() < stop_at:
            await send()
            done += 1

    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - wall0, cpu_seconds() - cpu0


async def ours(url: str, concurrency: int, seconds: float, limit: int, expect: int | None):
    pool = ConnectionPool()
    lines = header_lines(HEADERS.items())
    request = TransportRequest(b"POST", url, b"/v1/chat/completions", lines, CHAT)

    async def send() -> None:
        response = await pool.send(request, connect_timeout=5, read_timeout=30)
        body = await response.read(30)
        response.release()
        assert response.status == 200 and (expect is None or len(body) == expect)

    try:
        return await drive(send, concurrency, seconds, limit)
    finally:
        await pool.aclose()


async def theirs(url: str, concurrency: int, seconds: float, limit: int, expect: int | None):
    # Configured as the gateway configured it before the hand-written client.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                    auto_decompress=False, skip_auto_headers=("User-Agent",))
    target = url + "/v1/chat/completions"

    async def send() -> None:
        async with session.post(target, data=CHAT, headers=HEADERS) as r:
            body = await r.read()
        assert r.status == 200 and (expect is None or len(body) == expect)

    try:
        return await drive(send, concurrency, seconds, limit)
    finally:
        await session.close()


async def measure(urls: dict[str, str], seconds: float, reps: int, concurrency: int) -> dict:
    clients = {"bluesminds http1": ours, "aiohttp ClientSession": theirs}
    best: dict[str, dict[str, dict[str, float]]] = {}
    for rep in range(reps):
        for size, url in urls.items():
            order = list(clients.items())
            if rep % 2:
                order.reverse()
            for name, client in order:
                n, wall, cpu = await client(url, concurrency, seconds, MAX_REQUESTS[size], SIZES[size])
                row = {"requests": n, "rps": n / wall, "cpu_us": cpu / n * 1e6}
                slot = best.setdefault(size, {})
                if name not in slot or row["rps"] > slot[name]["rps"]:
                    slot[name] = row
    return best


def report(best: dict) -> str:
    lines = ["| body | client | req/s | CPU µs/req |", "| --- | --- | ---: | ---: |"]
    for size, rows in best.items():
        for name, row in rows.items():
            lines.append(f"| {size} | {name} | {row['rps']:,.0f} | {row['cpu_us']:,.0f} |")
        ours_, theirs_ = rows["bluesminds http1"], rows["aiohttp ClientSession"]
        lines.append(f"| {size} | ratio (ours / aiohttp) | {ours_['rps'] / theirs_['rps']:.2f}× | "
                     f"{ours_['cpu_us'] / theirs_['cpu_us']:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="transport-bench-") as logs, ProcessSet(logs) as procs:
        urls = {}
        for size in SIZES:
            port = free_port()
            procs.spawn(f"fake-{port}", [sys.executable, "-m", "bench.fake", "--port", str(port),
                                         "--name", "bench"], cwd=repo)
            urls[size] = f"http://127.0.0.1:{port}"

        async def run() -> dict:
            for size, url in urls.items():
                await wait_ready(url)
                if SIZES[size]:
                    await set_huge(url, SIZES[size])
            return await measure(urls, args.seconds, args.reps, args.concurrency)

        best = asyncio.run(run())
    print(json.dumps(best, indent=2) if args.json else report(best))


if __name__ == "__main__":
    main()

"""The response cache: hit latency against a miss and against the bare proxy, and memory per 10,000 entries.

    python bench/cache_bench.py [--requests N]

One process, one event loop: the fake upstream (no added latency, so a miss
costs only the machinery), the bare proxy (bench/bare_proxy.py) and the
gateway on the bench config with its plan's cache enabled. Requests are sent
one at a time over one keep-alive connection, so each figure is the latency of
one request with nothing queued: bare → fake, gateway miss (every body
distinct), gateway hit (the same body). Memory: 10,000 distinct chat answers
stored in the memory store, measured with tracemalloc beside the bytes the
store charges against `cache.max_bytes`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.bare_proxy import create_bare_app  # noqa: E402
from bench.gateway_config import PLAN, gateway_sections  # noqa: E402
from proxy import server  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.cache.memory import MemoryCache  # noqa: E402
from proxy.cli.accounts import create_user_and_key  # noqa: E402
from proxy.fake_upstream import start_fake_upstream  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _timed(session: aiohttp.ClientSession, url: str, bodies, headers: dict) -> list[float]:
    out = []
    for body in bodies:
        start = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append((time.perf_counter() - start) * 1000)
    return out


def _chat(i: int | None) -> bytes:
    text = "Summarise the plot of Hamlet in one line." if i is None else f"Question number {i}: what is {i}+1?"
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 20})


async def latency(n: int) -> dict:
    fake = await start_fake_upstream(name="fake", stream_chunks=20)
    bare_runner = gw_runner = None
    with tempfile.TemporaryDirectory(prefix="bm-cache-bench-") as tmp:
        try:
            sections = gateway_sections([fake.url], port=0)
            sections["auth"]["bcrypt_rounds"] = 4
            sections["plans"][PLAN]["cache"] = {"enabled": True, "ttl_seconds": "1h"}
            sections["cache"] = {"max_bytes": "256MiB"}
            os.makedirs(os.path.join(tmp, "data"))
            with open(os.path.join(tmp, "gateway.yaml"), "w") as fh:
                yaml.safe_dump(sections, fh)
            _, key = create_user_and_key(os.path.join(tmp, "data", "bench.db"), "bench@example.com",
                                         "correct horse battery", PLAN, "bench", bcrypt_rounds=4)
            gw_runner, gw_port = await server.start(create_app(tmp, watch=False), "127.0.0.1", 0)
            bare_runner = web.AppRunner(create_bare_app(fake.url), access_log=None)
            await bare_runner.setup()
            site = web.TCPSite(bare_runner, "127.0.0.1", 0)
            await site.start()
            bare_port = site._server.sockets[0].getsockname()[1]
            auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            plain = {"Content-Type": "application/json"}
            gw = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            bare = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
                warm = [_chat(-i) for i in range(1, 201)]
                await _timed(session, bare, warm, plain)
                await _timed(session, gw, warm, auth)
                await _timed(session, gw, [_chat(None)], auth)  # the entry every hit reads
                results = {
                    "bare": await _timed(session, bare, [_chat(i) for i in range(n)], plain),
                    "miss": await _timed(session, gw, [_chat(i) for i in range(n)], auth),
                    "hit": await _timed(session, gw, [_chat(None)] * n, auth),
                }
        finally:
            for runner in (gw_runner, bare_runner):
                if runner is not None:
                    await runner.cleanup()
            await fake.stop()
    return {name: {"p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99)} for name, v in results.items()}


async def memory(entries: int = 10_000) -> dict:
    store = MemoryCache(max_bytes=1 << 40, max_entry_bytes=1 << 20, clock=time.time)
    bodies = [orjson.dumps({"id": f"chatcmpl-{i:08d}", "object": "chat.completion", "created": 1_800_000_000,
                            "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": f"Answer {i}: " + "word " * 60}}],
                            "usage": {"prompt_tokens": 20, "completion_tokens": 60, "total_tokens": 80}})
              for i in range(entries)]
    keys = [f"{i:064x}" for i in range(entries)]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for key, body in zip(keys, bodies):
        await store.put(key, body, ttl=3600)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    heap = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    body_bytes = sum(len(b) for b in bodies)
    # The bodies and keys already existed; what the store added is its bookkeeping.
    return {"entries": entries, "avg_body_bytes": body_bytes // entries, "charged_bytes": store.bytes,
            "bookkeeping_bytes": heap, "resident_bytes": heap + body_bytes + sum(len(k) + 49 for k in keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    lat = asyncio.run(latency(args.requests))
    mem = asyncio.run(memory())
    print(f"cache latency, {args.requests} sequential requests each, one keep-alive connection:")
    for name, label in (("bare", "bare proxy → fake"), ("miss", "gateway, cache miss"),
                        ("hit", "gateway, cache hit")):
        print(f"  {label:<22} p50 {lat[name]['p50_ms']:.2f} ms  p99 {lat[name]['p99_ms']:.2f} ms")
    print(f"cache memory, {mem['entries']:,} entries of {mem['avg_body_bytes']} bytes: "
          f"{mem['resident_bytes'] / 2**20:.1f} MiB resident (bodies + keys + {mem['bookkeeping_bytes'] / 2**20:.1f} "
          f"MiB bookkeeping), {mem['charged_bytes'] / 2**20:.1f} MiB charged against cache.max_bytes")


if __name__ == "__main__":
    main()

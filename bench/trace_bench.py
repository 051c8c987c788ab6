"""What OpenTelemetry tracing costs per request, through a real gateway on 127.0.0.1.

    python bench/trace_bench.py [--requests N] [--rounds R]

The same gateway and fake upstream, one keep-alive client, N sequential chat
requests per round (non-stream and stream), alternating traces off and on
(SDK BatchSpanProcessor with an exporter that drops the batch, so the figure
is the gateway's cost, not a collector's). Bounded in count: R rounds of N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# First, ahead of bench/ itself: its own tests/ package would shadow the repo's.
sys.path.insert(0, REPO)

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from proxy.appkeys import FORWARDER, TRACER  # noqa: E402
from proxy.fake_upstream import start_fake_upstream  # noqa: E402
from proxy.observability.tracing import Tracer  # noqa: E402
from tests.gateway_harness import GatewayHarness, upstream_entry  # noqa: E402


def dropping_provider():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


async def timed(session, url: str, headers: dict, body: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append(time.perf_counter() - start)
    return out


async def main(requests: int, rounds: int) -> None:
    fake = await start_fake_upstream(name="a")
    with tempfile.TemporaryDirectory() as tmp:
        harness = await GatewayHarness.write(os.path.join(tmp, "c"), [upstream_entry("a", fake.url)],
                                             server={"access_log": False}).start()
        tracer = Tracer(dropping_provider())
        app = harness.app
        url = harness.url + "/v1/chat/completions"
        bodies = {"chat": orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
                  "stream": orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                                          "messages": [{"role": "user", "content": "hi"}]})}
        results: dict[tuple[str, str], list[float]] = {}
        try:
            async with aiohttp.ClientSession() as session:
                for scenario, body in bodies.items():
                    await timed(session, url, harness.headers(), body, min(200, requests))  # warm-up
                    for _ in range(rounds):
                        for mode in ("off", "on"):
                            # The app is running: swap the references the request path reads.
                            app._state[TRACER] = tracer if mode == "on" else None  # noqa: SLF001
                            app[FORWARDER].tracer = tracer if mode == "on" else None
                            results.setdefault((scenario, mode), []).extend(
                                await timed(session, url, harness.headers(), body, requests))
        finally:
            await harness.stop()
            await fake.stop()
            tracer.provider.shutdown()
    print(f"python {sys.version.split()[0]}, {rounds} rounds × {requests} sequential requests per mode")
    for scenario in bodies:
        off = sorted(results[(scenario, "off")])
        on = sorted(results[(scenario, "on")])
        p50_off, p50_on = off[len(off) // 2] * 1e6, on[len(on) // 2] * 1e6
        mean_off, mean_on = sum(off) / len(off) * 1e6, sum(on) / len(on) * 1e6
        print(f"{scenario:7s} traces off p50 {p50_off:7.0f} µs mean {mean_off:7.0f} µs | "
              f"on p50 {p50_on:7.0f} µs mean {mean_on:7.0f} µs | cost p50 {p50_on - p50_off:+5.0f} µs "
              f"mean {mean_on - mean_off:+5.0f} µs per request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))

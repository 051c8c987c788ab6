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
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402

from bench.gateway_config import PLAN, gateway_sections  # noqa: E402
from proxy import server  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.appkeys import FORWARDER, TRACER  # noqa: E402
from proxy.cli.accounts import create_user_and_key  # noqa: E402
from proxy.fake_upstream import start_fake_upstream  # noqa: E402
from proxy.observability.tracing import Tracer  # noqa: E402


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


async def start_gateway(tmp: str, upstream_url: str):
    """The bench config (bench/gateway_config.py) in `tmp`, served in this process as
    `bluesminds serve` would: the app, its runner, its base URL and a tenant's key."""
    sections = gateway_sections([upstream_url], port=0)
    sections["auth"]["bcrypt_rounds"] = 4  # the key is checked once, then cached: no need for cost 12
    os.makedirs(os.path.join(tmp, "data"))
    with open(os.path.join(tmp, "gateway.yaml"), "w") as fh:
        yaml.safe_dump(sections, fh)
    _, key = create_user_and_key(os.path.join(tmp, "data", "bench.db"), "bench@example.com",
                                 "correct horse battery", PLAN, "bench", bcrypt_rounds=4)
    app = create_app(tmp, watch=False)
    runner, port = await server.start(app, "127.0.0.1", 0)
    return app, runner, f"http://127.0.0.1:{port}", key


async def main(requests: int, rounds: int) -> None:
    fake = await start_fake_upstream(name="a")
    runner = None
    results: dict[tuple[str, str], list[float]] = {}
    bodies = {"chat": orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
              "stream": orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]})}
    tracer = Tracer(dropping_provider())
    with tempfile.TemporaryDirectory(prefix="bm-trace-bench-") as tmp:
        try:
            app, runner, base, key = await start_gateway(tmp, fake.url)
            url = base + "/v1/chat/completions"
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            async with aiohttp.ClientSession() as session:
                for scenario, body in bodies.items():
                    await timed(session, url, headers, body, min(200, requests))  # warm-up
                    for _ in range(rounds):
                        for mode in ("off", "on"):
                            # The app is running: swap the references the request path reads.
                            app._state[TRACER] = tracer if mode == "on" else None  # noqa: SLF001
                            app[FORWARDER].tracer = tracer if mode == "on" else None
                            results.setdefault((scenario, mode), []).extend(
                                await timed(session, url, headers, body, requests))
        finally:
            if runner is not None:
                await runner.cleanup()
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

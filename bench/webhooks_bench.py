"""Outbox delivery latency: from an event's commit to the receiver holding it.

    python bench/webhooks_bench.py [--events 300] [--poll 250ms] [--concurrency 1]

A real gateway (create_app, real SQLite file) with one API endpoint pointing
at a real receiver on 127.0.0.1. Each event is emitted through the outbox in
its own write transaction (as a key change does); its clock starts when that
write returns (committed) and stops when the receiver has read the signed
POST. Events are emitted one at a time (or --concurrency at once), so the
figure is the outbox's own latency, not a queue's. Bounded: --events at most
5000, and 120 s overall.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from proxy import server  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.appkeys import STORE  # noqa: E402
from proxy.cli.accounts import create_user_and_key  # noqa: E402
from proxy.webhooks.outbox import emit  # noqa: E402

DEADLINE_S = 120.0


async def run(events: int, poll: str, concurrency: int) -> dict:
    arrived: dict[str, float] = {}
    waiters: dict[str, asyncio.Future] = {}

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        event_id = request.headers["webhook-id"]
        arrived[event_id] = time.perf_counter()
        waiter = waiters.get(event_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    receiver_runner = web.AppRunner(receiver)
    await receiver_runner.setup()
    site = web.TCPSite(receiver_runner, "127.0.0.1", 0)
    await site.start()
    receiver_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # noqa: SLF001

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BM_BENCH_WEBHOOK_KEY"] = base64.b64encode(os.urandom(32)).decode()
        config = {
            "server": {"host": "127.0.0.1", "port": 0, "log_level": "warning", "access_log": False},
            "database": {"path": "bench.db"},
            "auth": {"bcrypt_rounds": 4},
            "health": {"interval": "1h"},
            "models": {"m": {}},
            "upstreams": [{"name": "u", "url": "http://127.0.0.1:9", "models": "*"}],
            "webhooks": {"encryption_key_env": "BM_BENCH_WEBHOOK_KEY", "allow_http": True,
                         "allow_networks": ["127.0.0.1/32"], "poll_interval": poll},
        }
        with open(os.path.join(tmp, "gateway.yaml"), "w") as fh:
            yaml.safe_dump(config, fh)
        user_id, _ = create_user_and_key(os.path.join(tmp, "bench.db"), "bench@example.com",
                                         "correct horse battery", "free", "k", bcrypt_rounds=4)
        app = create_app(tmp, watch=False)
        runner, _port = await server.start(app, "127.0.0.1", 0)
        try:
            store = app[STORE]
            from proxy.webhooks.endpoints import insert_endpoint
            from proxy.webhooks.secrets import SecretBox
            from proxy.webhooks.signing import new_secret

            box, secret = SecretBox(base64.b64decode(os.environ["BM_BENCH_WEBHOOK_KEY"])), new_secret()
            await store.write(lambda conn: insert_endpoint(
                conn, account_id=user_id, name="bench", url=receiver_url, events=["key.created"],
                description="", seal=lambda i: box.seal(secret, i), now=time.time()))
            latencies: list[float] = []
            started_all = time.perf_counter()

            async def one(i: int) -> None:
                event_id = f"evt_bench_{i:06d}"
                waiters[event_id] = asyncio.get_running_loop().create_future()
                await store.write(lambda conn: emit(conn, "key.created", {"key_id": i}, now=time.time(),
                                                    account_id=user_id, event_id=event_id))
                committed = time.perf_counter()
                await asyncio.wait_for(waiters[event_id], 30)
                latencies.append(arrived[event_id] - committed)

            for start in range(0, events, concurrency):
                if time.perf_counter() - started_all > DEADLINE_S:
                    break
                await asyncio.gather(*(one(i) for i in range(start, min(events, start + concurrency))))
            elapsed = time.perf_counter() - started_all
        finally:
            await runner.cleanup()
            await receiver_runner.cleanup()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {"events": len(ms), "poll": poll, "concurrency": concurrency, "elapsed_s": round(elapsed, 2),
            "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 1),
            "max_ms": round(ms[-1], 1), "mean_ms": round(statistics.fmean(ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--poll", default="250ms")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(run(min(args.events, 5000), args.poll, max(1, args.concurrency)))
    print(" ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()

import asyncio

from bench.load import HitLedger, LoadSample
from bench.targets import Target
from bench.wrk import WrkResult
from proxy.fake_upstream import create_fake_app


def _sample() -> LoadSample:
    return LoadSample("t", "chat", 1, 1, WrkResult(1, 1, 1.0, 1.0, 1.0, 1.0, 0, 0), 1.0, hits=-1)


async def test_a_late_hit_counts_for_the_run_that_caused_it(aiohttp_server, aiohttp_client):
    fake = await aiohttp_server(create_fake_app())
    client = await aiohttp_client(fake)
    target = Target("t", "http://unused", None, proc=None, upstreams=[f"http://127.0.0.1:{fake.port}"])
    ledger = HitLedger()
    loop = asyncio.get_running_loop()

    async def in_thread(fn):
        return await loop.run_in_executor(None, fn)

    first, second = _sample(), _sample()
    start = await in_thread(lambda: ledger.start(target))
    ledger.track(target, first, start)
    for _ in range(2):  # arrives after the first run "ended"
        assert (await client.post("/v1/embeddings", json={"model": "m", "input": "x"})).status == 200
    start = await in_thread(lambda: ledger.start(target))
    ledger.track(target, second, start)
    assert first.hits == 2
    assert (await client.post("/v1/embeddings", json={"model": "m", "input": "x"})).status == 200
    await in_thread(lambda: ledger.finish([target]))
    assert second.hits == 1

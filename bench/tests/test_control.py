import asyncio

from bench import control
from proxy.fake_upstream import create_fake_app


async def test_wait_quiet_returns_the_settled_counter_of_all_fakes(aiohttp_server, aiohttp_client):
    fakes = [await aiohttp_server(create_fake_app(name=n)) for n in "ab"]
    for fake, count in zip(fakes, (2, 3)):
        client = await aiohttp_client(fake)
        for _ in range(count):
            resp = await client.post("/v1/embeddings", json={"model": "m", "input": "x"})
            assert resp.status == 200
    urls = [f"http://127.0.0.1:{f.port}" for f in fakes]
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, lambda: control.wait_quiet(urls, settle=0.02)) == 5

from bench import streaming, wrk
from proxy.fake_upstream import STATE_KEY, create_fake_app


async def test_runs_exactly_the_streams_asked_for(aiohttp_server):
    fake = await aiohttp_server(create_fake_app(stream_chunks=4))
    run = await streaming.run_streams(f"http://127.0.0.1:{fake.port}/v1/chat/completions", wrk.STREAM_BODY, {},
                                      streams=9, concurrency=4)
    assert (run.started, run.completed, run.failed) == (9, 9, 0)
    assert len(run.ttfb_ms) == len(run.total_ms) == 9
    assert all(0 <= first <= total for first, total in zip(run.ttfb_ms, run.total_ms))
    assert fake.app[STATE_KEY].requests == 9


async def test_counts_failures_without_stopping(aiohttp_server):
    fake = await aiohttp_server(create_fake_app())
    run = await streaming.run_streams(f"http://127.0.0.1:{fake.port}/v1/chat/completions", b'{"model": "m"}', {},
                                      streams=3, concurrency=2)
    assert (run.started, run.completed, run.failed) == (3, 0, 3)
    assert run.errors[0].startswith("RuntimeError: HTTP 400")

from __future__ import annotations

import pytest

from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry


@pytest.fixture
async def fake():
    """One fake upstream named a on a free port."""
    upstream = await start_fake_upstream(name="a")
    yield upstream
    await upstream.stop()


@pytest.fixture
async def upstreams():
    """Three fake upstreams named a, b, c on free ports."""
    fakes = [await start_fake_upstream(name=name) for name in ("a", "b", "c")]
    yield fakes
    for fake in fakes:
        await fake.stop()


@pytest.fixture
async def gateway(tmp_path, upstreams):
    """The gateway in front of the three fake upstreams, equal weights, one priority."""
    harness = GatewayHarness.write(str(tmp_path / "config"),
                                   [upstream_entry(name, fake.url)
                                    for name, fake in zip("abc", upstreams)])
    await harness.start()
    yield harness
    await harness.stop()

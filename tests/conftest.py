from __future__ import annotations

import os

import pytest

from proxy.config.build import DATABASE_URL_ENV, LIMITS_BACKEND_ENV
from proxy.fake_upstream import start_fake_upstream

# The suite's second pass: BLUESMINDS_TEST_BACKEND=postgres runs every gateway a test
# starts (in this process or as `serve`) on a fresh PostgreSQL database and the Redis
# limiter, through the BLUESMINDS_DATABASE_URL / BLUESMINDS_LIMITS_BACKEND defaults.
# Tests about the SQLite file itself carry @pytest.mark.sqlite_only and skip there.
BACKEND = os.environ.get("BLUESMINDS_TEST_BACKEND", "sqlite")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only(why): about the SQLite file itself; "
                            "skipped on the PostgreSQL pass")


def pytest_collection_modifyitems(config, items):
    if BACKEND != "postgres":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "about the SQLite file"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))


@pytest.fixture(scope="session")
def _backend_servers():
    if BACKEND != "postgres":
        yield None
        return
    from .postgres_server import BINDIR, SKIP_REASON, start_postgres
    from .redis_server import REDIS_SERVER, RedisServer
    from .redis_server import SKIP_REASON as REDIS_SKIP

    if BINDIR is None or REDIS_SERVER is None:
        raise pytest.UsageError(SKIP_REASON if BINDIR is None else REDIS_SKIP)
    postgres = start_postgres()
    redis = RedisServer()
    redis.start()
    yield postgres, redis
    redis.close()
    postgres.close()


@pytest.fixture(autouse=True)
def _test_backend(request, monkeypatch):
    if BACKEND != "postgres" or request.node.get_closest_marker("sqlite_only"):
        yield
        return
    postgres, redis = request.getfixturevalue("_backend_servers")
    redis.flush()
    url = postgres.new_database()
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    monkeypatch.setenv(LIMITS_BACKEND_ENV, redis.url)
    yield
    postgres.drop_database(url)

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

"""The cache store seam: the memory store and the Redis store pass the same behaviour tests.

Expiry is judged on an injected clock for both; the memory store's byte bound
is checked under 10,000 distinct entries.
"""

from __future__ import annotations

import pytest

from proxy.cache.interface import ENTRY_OVERHEAD, entry_cost
from proxy.cache.memory import MemoryCache
from proxy.cache.redis_store import RedisCache

from .redis_server import redis_server, redis_url  # noqa: F401  (fixtures)


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store_and_clock(request):
    clock = Clock()
    if request.param == "memory":
        store = MemoryCache(max_bytes=1 << 20, max_entry_bytes=4096, clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisCache(url, max_entry_bytes=4096, clock=clock)
    yield store, clock
    await store.close()


async def test_a_stored_body_comes_back_with_its_time(store_and_clock):
    store, clock = store_and_clock
    assert await store.get("k1") is None
    assert await store.put("k1", b'{"answer":1}', ttl=60) is True
    clock.now += 5
    entry = await store.get("k1")
    assert entry.body == b'{"answer":1}' and entry.stored_at == 1_000.0
    stats = store.stats()
    assert (stats.hits, stats.misses) == (1, 1)


async def test_an_entry_expires_at_its_ttl_on_the_injected_clock(store_and_clock):
    store, clock = store_and_clock
    await store.put("k", b"x", ttl=30)
    clock.now += 29.999
    assert (await store.get("k")).body == b"x"
    clock.now += 0.001
    assert await store.get("k") is None


async def test_put_replaces_an_entry_and_restarts_its_ttl(store_and_clock):
    store, clock = store_and_clock
    await store.put("k", b"old", ttl=10)
    clock.now += 8
    await store.put("k", b"new", ttl=10)
    clock.now += 8
    entry = await store.get("k")
    assert entry.body == b"new" and entry.stored_at == 1_008.0


async def test_an_entry_larger_than_the_entry_bound_is_refused(store_and_clock):
    store, _ = store_and_clock
    assert await store.put("big", b"x" * 4097, ttl=10) is False
    assert await store.get("big") is None
    assert await store.put("fits", b"x" * 4096, ttl=10) is True


async def test_keys_are_independent(store_and_clock):
    store, _ = store_and_clock
    await store.put("a", b"1", ttl=10)
    await store.put("b", b"2", ttl=10)
    assert (await store.get("a")).body == b"1" and (await store.get("b")).body == b"2"


async def test_memory_byte_bound_holds_under_ten_thousand_distinct_entries():
    bound = 256 * 1024
    store = MemoryCache(max_bytes=bound, max_entry_bytes=4096, clock=Clock())
    body = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"' + b"y" * 300 + b'"}}]}'
    for i in range(10_000):
        assert await store.put(f"{i:064x}", body, ttl=60)
        assert store.bytes <= bound
    stats = store.stats()
    per_entry = entry_cost("0" * 64, body)
    assert stats.entries == bound // per_entry
    assert stats.bytes == stats.entries * per_entry <= bound
    assert stats.evictions == 10_000 - stats.entries
    # The most recent survive; the oldest went first.
    assert await store.get(f"{9_999:064x}") is not None
    assert await store.get(f"{0:064x}") is None


async def test_memory_eviction_is_least_recently_used_not_oldest_stored():
    per_entry = entry_cost("k0", b"v")
    store = MemoryCache(max_bytes=3 * per_entry, max_entry_bytes=100, clock=Clock())
    for name in ("k0", "k1", "k2"):
        await store.put(name, b"v", ttl=60)
    await store.get("k0")  # k0 is now the most recently used
    await store.put("k3", b"v", ttl=60)
    assert await store.get("k1") is None
    assert all([await store.get(n) for n in ("k0", "k2", "k3")])
    assert store.stats().evictions == 1


async def test_memory_expired_entries_leaving_are_not_counted_as_evictions():
    clock = Clock()
    per_entry = entry_cost("k0", b"v")
    store = MemoryCache(max_bytes=2 * per_entry, max_entry_bytes=100, clock=clock)
    await store.put("k0", b"v", ttl=1)
    await store.put("k1", b"v", ttl=100)
    clock.now += 2
    await store.put("k2", b"v", ttl=100)
    assert store.stats().evictions == 0 and store.stats().entries == 2
    assert ENTRY_OVERHEAD > 0


async def test_redis_unreachable_is_a_miss_and_a_skipped_write():
    store = RedisCache("redis://127.0.0.1:1/0", max_entry_bytes=100, clock=Clock())
    try:
        assert await store.put("k", b"v", ttl=10) is False
        assert await store.get("k") is None
        assert store.errors == 2 and store.stats().misses == 1
    finally:
        await store.close()

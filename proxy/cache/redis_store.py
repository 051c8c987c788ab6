"""The shared store: the same seam on Redis, for `serve --workers N` and several machines.

Each entry is one Redis string under `bm:cache:<key>`: when it was stored and
when it expires (8 bytes each, the store's clock) and the body. Redis drops it by EXPIRE a second after its ttl; the
store's clock judges expiry on read as the memory store does, so the two
behave alike (and tests can move an injected clock).

The byte bound: this store refuses an entry above `max_entry_bytes`, and the
whole cache is bounded by Redis itself (`maxmemory` with `allkeys-lru`, the
operator's setting, not the gateway's: the same Redis may hold the limiter's
keys, which must never be evicted, so give the cache its own database or
instance when you bound it). Entries and bytes are therefore not counted here.

Redis unreachable: a read is a miss and a write is skipped, logged once per
outage; the request itself never fails because of the cache.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import Callable

from .interface import CacheEntry, CacheStats

log = logging.getLogger("bluesminds.cache")

PREFIX = b"bm:cache:"
SOCKET_TIMEOUT = 0.5
MAX_CONNECTIONS = 32
_STAMP = struct.Struct(">d")


class RedisCache:
    def __init__(self, url: str, *, max_entry_bytes: int, clock: Callable[[], float]) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT, socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT)
        self._client = aioredis.Redis(connection_pool=pool)
        self.hits = self.misses = self.errors = 0
        self._down = False

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if not self._down:
            self._down = True
            log.warning("cache: Redis at %s unreachable (%s); serving without the cache", self.url,
                        type(exc).__name__)

    async def get(self, key: str) -> CacheEntry | None:
        try:
            raw = await self._client.get(PREFIX + key.encode())
        except Exception as exc:  # any Redis failure is a miss, never the request's failure
            self._failed(exc)
            self.misses += 1
            return None
        self._down = False
        if raw is None or len(raw) < _STAMP.size:
            self.misses += 1
            return None
        stored_at, expires_at = _STAMP.unpack_from(raw)[0], _STAMP.unpack_from(raw, _STAMP.size)[0]
        if self._clock() >= expires_at:
            self.misses += 1
            return None
        self.hits += 1
        return CacheEntry(body=raw[2 * _STAMP.size:], stored_at=stored_at)

    async def put(self, key: str, body: bytes, *, ttl: float) -> bool:
        if len(body) > self.max_entry_bytes:
            return False
        now = self._clock()
        value = _STAMP.pack(now) + _STAMP.pack(now + ttl) + body
        try:
            await self._client.set(PREFIX + key.encode(), value, ex=math.ceil(ttl) + 1)
        except Exception as exc:
            self._failed(exc)
            return False
        self._down = False
        return True

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, evictions=0, entries=None, bytes=None)

    async def close(self) -> None:
        await self._client.aclose()

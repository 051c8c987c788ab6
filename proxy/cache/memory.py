"""The in-process store: a TTL per entry, a byte bound for all, least recently used evicted first.

`OrderedDict` keeps recency: a hit moves its entry to the end, and eviction
pops from the front until the charged bytes fit again. Expired entries are
dropped when met (a get) or when they reach the front during eviction, so
nothing scans the whole store.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from .interface import CacheEntry, CacheStats, entry_cost


class MemoryCache:
    def __init__(self, *, max_bytes: int, max_entry_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        # key -> (entry, expires_at, charged bytes)
        self._entries: OrderedDict[str, tuple[CacheEntry, float, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    async def get(self, key: str) -> CacheEntry | None:
        item = self._entries.get(key)
        if item is None:
            self.misses += 1
            return None
        entry, expires_at, charged = item
        if self._clock() >= expires_at:
            del self._entries[key]
            self.bytes -= charged
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    async def put(self, key: str, body: bytes, *, ttl: float) -> bool:
        charged = entry_cost(key, body)
        if len(body) > self.max_entry_bytes or charged > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        now = self._clock()
        self._entries[key] = (CacheEntry(body=body, stored_at=now), now + ttl, charged)
        self.bytes += charged
        while self.bytes > self.max_bytes:
            _, (_, expires_at, size) = self._entries.popitem(last=False)
            self.bytes -= size
            if expires_at > now:
                self.evictions += 1  # an expired entry leaving is not an eviction
        return True

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, evictions=self.evictions,
                          entries=len(self._entries), bytes=self.bytes)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0

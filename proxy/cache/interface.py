"""The cache store seam: what the pipeline step needs from any backend, and nothing more.

An entry is the canonical non-stream body of an answer (bytes, already the
tenant's view) and the time it was stored. Expiry is judged by the store's
clock against the ttl given at `put`, so every backend expires on the same
injected clock in tests; a backend may also drop entries earlier (eviction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CacheEntry:
    body: bytes
    stored_at: float  # the store's clock, seconds
    status: int = 200


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int | None  # None: the backend cannot count them cheaply (Redis)
    bytes: int | None


class CacheStore(Protocol):
    async def get(self, key: str) -> CacheEntry | None:
        """The live entry, or None (absent, expired, or evicted); counts a hit or a miss."""

    async def put(self, key: str, body: bytes, *, ttl: float) -> bool:
        """Store `body` for `ttl` seconds; False when it is larger than an entry may be."""

    def stats(self) -> CacheStats: ...

    async def close(self) -> None: ...


def entry_cost(key: str, body: bytes) -> int:
    """Bytes an entry is charged against the bound: its key, its body and a fixed overhead for
    the objects around them (the str and bytes headers, the entry tuple, the dict slot):
    measured ~345 bytes per entry in CPython 3.11 (bench/cache_bench.py), so the charge
    is never below what the entry really holds."""
    return len(key) + len(body) + ENTRY_OVERHEAD


ENTRY_OVERHEAD = 352

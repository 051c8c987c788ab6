"""The cache's settings: the global `cache:` section and a plan's `cache:` block (frozen, per snapshot)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TTL = 300.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """`cache:` in gateway.yaml: where entries live and how much they may take.

    `backend` and `max_bytes` are read when the gateway starts; a reload that
    changes them takes effect at the next start (the store holds the entries)."""

    backend: str = "memory"  # memory | redis://host:port/db | "limits" (the limiter's Redis)
    ttl_seconds: float = DEFAULT_TTL  # for a plan that names none
    max_ttl_seconds: float = 86400.0
    max_bytes: int = DEFAULT_MAX_BYTES  # memory backend: the whole store, LRU-evicted past it
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES  # both backends: a larger answer is not cached


@dataclass(frozen=True, slots=True)
class PlanCache:
    """`plans.<name>.cache`: whether the plan's keys may use the cache, and on what terms."""

    enabled: bool = False  # off: no key setting or request header turns it on
    default: bool = True  # a request is cached when neither its key nor its header says otherwise
    ttl_seconds: float | None = None  # None: cache.ttl_seconds
    shared: bool = False  # entries are shared by every account on a shared plan, not per account
    price_per_hit_nano: int = 0  # billed per hit instead of tokens (integer nano-dollars)


NO_CACHE = PlanCache()

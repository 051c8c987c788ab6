"""The cache store's lifecycle on the app, and its /metrics series.

The backend is chosen when the gateway starts (`cache.backend`); its clock is
the app's, so tests move one clock for the limiter, the usage rows and the
cache alike. The store exists even when no plan enables the cache: it costs an
empty dict, and a reload that enables a plan needs no restart.

Series (read from the store at scrape time):
    bluesminds_cache_hits_total, bluesminds_cache_misses_total   lookups answered / not
    bluesminds_cache_evictions_total      live entries dropped for the byte bound (memory)
    bluesminds_cache_entries, bluesminds_cache_bytes             what the store holds (memory)
    bluesminds_cache_inflight             keys with an upstream call others are waiting on
"""

from __future__ import annotations

from typing import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..appkeys import CACHE, CACHE_FLIGHTS, CLOCK, CONFIG, METRICS
from .flight import SingleFlight
from .memory import MemoryCache


def new_store(settings, clock):
    if settings.backend == "memory":
        return MemoryCache(max_bytes=settings.max_bytes, max_entry_bytes=settings.max_entry_bytes, clock=clock)
    from .redis_store import RedisCache

    return RedisCache(settings.backend, max_entry_bytes=settings.max_entry_bytes, clock=clock)


class CacheCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        store = self._app.get(CACHE)
        if store is None:
            return
        stats = store.stats()
        for name, help_text, value in (
            ("bluesminds_cache_hits", "Requests answered from the response cache.", stats.hits),
            ("bluesminds_cache_misses", "Cache lookups that found no live entry.", stats.misses),
            ("bluesminds_cache_evictions", "Live cache entries dropped to keep the byte bound.", stats.evictions),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
        for name, help_text, value in (
            ("bluesminds_cache_entries", "Entries the response cache holds (memory backend).", stats.entries),
            ("bluesminds_cache_bytes", "Bytes charged against cache.max_bytes (memory backend).", stats.bytes),
        ):
            if value is not None:
                family = GaugeMetricFamily(name, help_text)
                family.add_metric([], value)
                yield family
        inflight = GaugeMetricFamily("bluesminds_cache_inflight",
                                     "Cache keys whose one upstream call other requests are waiting on.")
        inflight.add_metric([], len(self._app[CACHE_FLIGHTS]))
        yield inflight

    def describe(self) -> list[Metric]:
        return []


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    store = new_store(app[CONFIG].current.cache, app[CLOCK])
    app[CACHE] = store
    yield
    await store.close()


def setup(app: web.Application) -> None:
    app[CACHE_FLIGHTS] = SingleFlight()
    app.cleanup_ctx.append(_cache_ctx)
    app[METRICS].registry.register(CacheCollector(app))

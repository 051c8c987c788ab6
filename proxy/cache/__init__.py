"""The response cache: an answer served again, for the same account, without asking an upstream.

    settings.py   the `cache:` section and a plan's `cache:` block (frozen, per snapshot)
    interface.py  the store seam: get / put / stats / close
    memory.py     one process: TTL (injected clock) and a byte bound with LRU eviction
    redis_store.py  shared by every worker: the same seam on Redis (redis-py asyncio)
    keying.py     the entry key: a hash of the canonical request
    routed.py     the routing rule and served model the key names (a weighted split is not cached)
    policy.py     whether a request reads or writes the cache (plan, key, header, Cache-Control)
    assemble.py   a completed stream turned into the canonical non-stream body that is stored
    replay.py     a stored body served again: as JSON, or as the family's SSE stream
    flight.py     single-flight: identical concurrent misses wait for one upstream call
    step.py       the one pipeline step (proxy/gateway/pipeline.py calls it after admission)
    tables.py     the migration: the key's cache setting, a usage row's hit mark and cost saved
    setup.py      the store's lifecycle on the app, and its /metrics series

Nothing here imports the gateway at module import time except step.py (and
routed.py, which only step.py imports), so the
config can import settings.py without a cycle.
"""

"""Scale figures for key authentication: 100,000 keys in the database.

    python -m bench.scale_auth [--keys 100000] [--json]

Times `Authenticator.authenticate` in-process:
  cold, bcrypt     first sight of a key whose hash has the configured cost (12)
  cold, no bcrypt  first sight, with bcrypt's answer already known: the two
                   database reads and the cache fill that follow a check
  cache hit        a key seen before, cycling through every cached key, and
                   one hot key over and over
and the process's RSS growth once every key is cached.

Bulk keys share one low-cost hash (see bench/seed.py); the hasher used for
them remembers each (secret, hash) answer, so warming 100,000 keys runs
bcrypt once instead of 100,000 times. Cache memory does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time

from proxy.auth import keys as key_store
from proxy.auth.authenticator import Authenticator
from proxy.auth.passwords import Hasher, hash_secret
from proxy.auth.users import insert_user
from proxy.config import load_config
from proxy.store import Database

from bench.gateway_config import BCRYPT_ROUNDS, PLAN, write_gateway_config
from bench.procs import rss_bytes
from bench.seed import seed_keys
from bench.stats import median, percentile

COLD_BCRYPT_KEYS = 5
COLD_KEYS = 1_000
HIT_CALLS = 200_000


class RememberingHasher:
    """bcrypt once per distinct (secret, hash); the answer cannot change."""

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher
        self._known: dict[tuple[bytes, str], bool] = {}

    async def verify(self, secret: bytes, hashed: str) -> bool:
        found = self._known.get((secret, hashed))
        if found is None:
            found = self._known[(secret, hashed)] = await self._hasher.verify(secret, hashed)
        return found

    def __getattr__(self, name: str):
        return getattr(self._hasher, name)


def _costly_keys(db_path: str, count: int) -> list[str]:
    secret = key_store.new_secret()
    secret_hash = hash_secret(secret.encode("ascii"), BCRYPT_ROUNDS)
    now = time.time()

    def fn(conn) -> list[str]:
        user = insert_user(conn, email="costly@bench.local", password_hash=secret_hash, plan=PLAN, now=now)
        return [key_store.insert_key(conn, user_id=user.id, columns={"name": f"costly-{i}"}, secret=secret,
                                     secret_hash=secret_hash, now=now)[1] for i in range(count)]

    db = Database(db_path)
    db.open_sync()
    try:
        return db.write_sync(fn)
    finally:
        db.close_sync()


def _rss() -> int:
    gc.collect()
    return rss_bytes(os.getpid())


async def _timed(auth: Authenticator, header: str, snapshot) -> float:
    start = time.perf_counter()
    await auth.authenticate(header, snapshot)
    return time.perf_counter() - start


async def measure(keys: int, workdir: str) -> dict:
    config = write_gateway_config(os.path.join(workdir, "config"), ["http://127.0.0.1:9"], port=0)
    started = time.perf_counter()
    bulk = seed_keys(config.db_path, keys, plan=PLAN, rounds=4)
    costly = _costly_keys(config.db_path, COLD_BCRYPT_KEYS)
    seeded_s = time.perf_counter() - started
    snapshot = load_config(config.config_dir)

    db = Database(config.db_path)
    await db.open()
    hasher = Hasher()
    try:
        rss_empty = _rss()
        real = Authenticator(hasher, db=db)
        cold_bcrypt = [await _timed(real, f"Bearer {k}", snapshot) for k in costly]

        auth = Authenticator(RememberingHasher(hasher), db=db)
        headers = [f"Bearer {k}" for k in bulk]
        await auth.authenticate(headers[0], snapshot)  # the one real bcrypt of the shared hash
        cold = [await _timed(auth, h, snapshot) for h in headers[1:COLD_KEYS + 1]]

        rss_before = _rss()
        warm_started = time.perf_counter()
        for start in range(COLD_KEYS + 1, len(headers), 500):
            await asyncio.gather(*(auth.authenticate(h, snapshot) for h in headers[start:start + 500]))
        warm_s = time.perf_counter() - warm_started
        rss_after = _rss()

        hits = []
        for i in range(min(HIT_CALLS, 2 * len(headers))):
            hits.append(await _timed(auth, headers[i % len(headers)], snapshot))
        hot = [await _timed(auth, headers[0], snapshot) for _ in range(50_000)]
        assert auth.bcrypt_verifications == len(headers), "every bulk key should be checked exactly once"
    finally:
        hasher.close()
        await db.close()
    cached = len(headers)
    return {
        "keys": keys + COLD_BCRYPT_KEYS, "seed_s": seeded_s, "bcrypt_rounds": BCRYPT_ROUNDS,
        "cold_bcrypt_ms": median(cold_bcrypt) * 1e3,
        "cold_no_bcrypt_us": median(cold) * 1e6, "cold_no_bcrypt_p99_us": percentile(cold, 99) * 1e6,
        "hit_cycling_p50_us": percentile(hits, 50) * 1e6, "hit_cycling_p99_us": percentile(hits, 99) * 1e6,
        "hit_hot_p50_us": percentile(hot, 50) * 1e6,
        "warm_s": warm_s, "cached_keys": cached,
        "rss_empty_mb": rss_empty / 2**20, "rss_cached_mb": rss_after / 2**20,
        "cache_mb": (rss_after - rss_before) / 2**20,
        "bytes_per_cached_key": (rss_after - rss_before) / max(1, cached - COLD_KEYS - 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as workdir:
        found = asyncio.run(measure(args.keys, workdir))
    if args.json:
        print(json.dumps(found))
        return
    print(f"{found['keys']:,} keys in SQLite (seeded in {found['seed_s']:.1f} s):")
    print(f"  cold, bcrypt cost {found['bcrypt_rounds']}   {found['cold_bcrypt_ms']:8.1f} ms")
    print(f"  cold, no bcrypt        {found['cold_no_bcrypt_us']:8.1f} µs (p99 {found['cold_no_bcrypt_p99_us']:.1f})")
    print(f"  cache hit, all keys    {found['hit_cycling_p50_us']:8.2f} µs (p99 {found['hit_cycling_p99_us']:.2f})")
    print(f"  cache hit, one key     {found['hit_hot_p50_us']:8.2f} µs")
    print(f"  {found['cached_keys']:,} cached keys: +{found['cache_mb']:.1f} MB RSS "
          f"({found['bytes_per_cached_key']:.0f} B/key; process {found['rss_cached_mb']:.0f} MB)")


if __name__ == "__main__":
    main()

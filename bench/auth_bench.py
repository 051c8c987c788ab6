"""What /v1 authentication costs: a cache hit (µs), a cold key (ms), and cold
keys verified per second.

    python bench/auth_bench.py [--rounds 12] [--keys 16] [--hits 200000]

Uses a temporary SQLite file and the real Authenticator; bcrypt runs at the
given cost, which is the cost a key created with that config gets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from proxy.auth import keys as key_store  # noqa: E402
from proxy.auth.authenticator import Authenticator  # noqa: E402
from proxy.auth.passwords import Hasher  # noqa: E402
from proxy.auth.users import insert_user  # noqa: E402
from proxy.config.snapshot import (  # noqa: E402
    AdminSettings, AuthSettings, DatabaseSettings, HealthSettings, PlanConfig, RetrySettings,
    ServerSettings, Snapshot,
)
from proxy.store import Database  # noqa: E402


async def make_keys(db: Database, hasher: Hasher, count: int, rounds: int) -> list[str]:
    now = time.time()
    user = await db.write(lambda conn: insert_user(conn, email="bench@example.com", password_hash="x",
                                                   plan="free", now=now))
    secrets = [key_store.new_secret() for _ in range(count)]
    hashes = await asyncio.gather(*(hasher.hash(s.encode(), rounds) for s in secrets))
    texts = []
    for secret, hashed in zip(secrets, hashes):
        _, text = await db.write(lambda conn: key_store.insert_key(
            conn, user_id=user.id, columns={"name": "bench"}, secret=secret, secret_hash=hashed, now=now))
        texts.append(text)
    return texts


async def main(rounds: int, count: int, hits: int) -> None:
    directory = tempfile.mkdtemp()
    snapshot = Snapshot(
        server=ServerSettings(), database=DatabaseSettings(path=os.path.join(directory, "bench.db")),
        # The queue of new-key checks sized to the burst: this measures the pool's throughput,
        # not the bound that turns a flood of unknown keys away (tests/test_auth_bounds.py has that).
        admin=AdminSettings(), auth=AuthSettings(bcrypt_rounds=rounds, key_check_queue=count * 2 + 1),
        health=HealthSettings(),
        retry=RetrySettings(), upstreams=(), models={}, plans={"free": PlanConfig("free")},
    )
    db = Database(snapshot.database.path)
    await db.open()
    hasher = Hasher()
    keys = await make_keys(db, hasher, count * 2 + 1, rounds)

    def fresh() -> Authenticator:
        return Authenticator(hasher, db=db)

    # Cold, one at a time: DB read + one bcrypt on the pool.
    auth = fresh()
    cold = []
    for key in keys[:count]:
        start = time.perf_counter()
        await auth.authenticate(f"Bearer {key}", snapshot)
        cold.append(time.perf_counter() - start)

    # Cold, all at once: how many distinct new keys per second the pool verifies.
    auth = fresh()
    batch = keys[count:count * 2]
    start = time.perf_counter()
    await asyncio.gather(*(auth.authenticate(f"Bearer {key}", snapshot) for key in batch))
    throughput = len(batch) / (time.perf_counter() - start)

    # Hot: the same key, already verified.
    header = f"Bearer {keys[-1]}"
    await auth.authenticate(header, snapshot)
    authenticate = auth.authenticate
    start = time.perf_counter()
    for _ in range(hits):
        await authenticate(header, snapshot)
    hit = (time.perf_counter() - start) / hits

    await db.close()
    hasher.close()
    print(f"bcrypt cost {rounds}, {os.cpu_count()} CPUs, bcrypt pool of {hasher._pool._max_workers}")
    print(f"cache hit:  {hit * 1e6:.2f} µs per request ({hits} requests)")
    print(f"cold key:   median {statistics.median(cold) * 1e3:.1f} ms, max {max(cold) * 1e3:.1f} ms "
          f"({count} keys, one at a time)")
    print(f"cold keys:  {throughput:.1f} verified per second ({len(batch)} keys at once)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--hits", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.keys, args.hits))

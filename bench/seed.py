"""Accounts and keys written straight into a gateway database, in bulk.

Bulk keys all share one secret, hashed once at a low bcrypt cost: the rows
are real (a lookup id each, so every key text differs), but creating 100,000
of them does not cost 100,000 bcrypt hashes. Keys whose verification is
being timed are made separately, at the configured cost.
"""

from __future__ import annotations

import time

from proxy.auth import keys as key_store
from proxy.auth.passwords import hash_secret
from proxy.auth.users import insert_user
from proxy.store import Database

KEYS_PER_USER = 4


def seed_keys(db_path: str, count: int, *, plan: str, rounds: int = 4, batch: int = 5_000,
              email_domain: str = "bulk.bench") -> list[str]:
    """`count` keys for `count / KEYS_PER_USER` users; returns the key texts."""
    secret = key_store.new_secret()
    secret_hash = hash_secret(secret.encode("ascii"), rounds)
    password_hash = hash_secret(b"bulk account password", rounds)
    now = time.time()
    texts: list[str] = []

    def write_batch(start: int, stop: int):
        def fn(conn) -> None:
            user = None
            for i in range(start, stop):
                if user is None or i % KEYS_PER_USER == 0:
                    user = insert_user(conn, email=f"user{i // KEYS_PER_USER}@{email_domain}",
                                       password_hash=password_hash, plan=plan, now=now)
                _, text = key_store.insert_key(conn, user_id=user.id, columns={"name": f"bulk-{i}"},
                                               secret=secret, secret_hash=secret_hash, now=now)
                texts.append(text)
        return fn

    db = Database(db_path)
    db.open_sync()
    try:
        # Batches start on a user boundary, so no user is split across two.
        step = max(KEYS_PER_USER, batch - batch % KEYS_PER_USER)
        for start in range(0, count, step):
            db.write_sync(write_batch(start, min(count, start + step)))
    finally:
        db.close_sync()
    return texts

"""Many writers at once: the single writer queues them, none fails with "database is locked"."""

from __future__ import annotations

import asyncio

from .test_auth_support import PASSWORD, api, clock, snapshot  # noqa: F401


async def test_100_concurrent_signups(api):
    responses = await asyncio.gather(*(
        api.client.post("/api/auth/signup", json={"email": f"crowd{i}@example.com", "password": PASSWORD})
        for i in range(100)
    ))
    assert [r.status for r in responses] == [202] * 100
    count = await api.db.read(lambda conn: conn.execute("SELECT count(*) FROM users").fetchone()[0])
    assert count == 100


async def test_100_concurrent_key_creations(api):
    owners = [(await api.user())[0] for _ in range(4)]
    responses = await asyncio.gather(*(
        api.client.post("/api/keys", json={"name": f"k{i}"}, headers=owners[i % 4]) for i in range(100)
    ))
    assert [r.status for r in responses] == [201] * 100
    keys = {(await r.json())["key"] for r in responses}
    assert len(keys) == 100
    # One at a time: the bcrypt gate refuses new keys beyond its queue (tests/test_auth_flood.py).
    principals = [await api.authenticate(key) for key in keys]
    assert len({p.key_id for p in principals}) == 100


async def test_concurrent_writes_of_every_kind(api):
    headers, user = await api.user()
    key = await api.create_key(headers)
    calls = []
    for i in range(25):
        calls.append(api.client.post("/api/auth/signup", json={"email": f"mix{i}@example.com", "password": PASSWORD}))
        calls.append(api.client.post("/api/keys", json={"name": f"m{i}"}, headers=headers))
        calls.append(api.client.patch(f"/api/keys/{key['id']}", json={"name": f"n{i}"}, headers=headers))
        calls.append(api.client.post(f"/api/keys/{key['id']}/rotate", json={"overlap_seconds": 60}, headers=headers))
    responses = await asyncio.gather(*calls)
    assert sorted({r.status for r in responses}) == [200, 201, 202]

"""Through the whole gateway: a tenant key, a wrong key and the upstream's own key never show up
in logs, error bodies, /metrics or the database (the SQLite file, or every PostgreSQL row)."""

from __future__ import annotations

import logging

import aiohttp
import orjson

from proxy.fake_upstream import start_fake_upstream
from proxy.appkeys import USAGE

from .db_access import stored_bytes
from .gateway_harness import GatewayHarness, upstream_entry

UPSTREAM_SECRET = "sk-upstream-canary-5d1e"
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def test_no_secret_leaks_anywhere(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("BM_CANARY_UPSTREAM_KEY", UPSTREAM_SECRET)
    fake = await start_fake_upstream(name="u", api_key=UPSTREAM_SECRET)
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("u", fake.url, api_key_env="BM_CANARY_UPSTREAM_KEY")],
        server={"log_level": "debug", "metrics": {"access": "open"}})  # scraped below without a key
    await harness.start()
    wrong = harness.key[:-4] + "XXXX"
    bodies: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def call(path: str, key: str, data: bytes | None = CHAT, method: str = "POST") -> int:
                async with session.request(method, harness.url + path, data=data,
                                           headers={"Authorization": f"Bearer {key}"}) as resp:
                    bodies.append(await resp.text())
                    return resp.status

            assert await call("/v1/chat/completions", harness.key) == 200
            assert await call("/v1/chat/completions", wrong) == 401
            assert await call("/v1/chat/completions", harness.key, b"{broken") == 400
            await fake.set_fault({"status": 400, "count": 1})
            assert await call("/v1/chat/completions", harness.key) == 400
            assert await call("/v1/models", wrong, None, "GET") == 401
            assert await call("/api/auth/me", harness.key, None, "GET") in (401, 403)
            async with session.get(harness.url + "/metrics") as resp:
                assert resp.status == 200
                metrics_text = await resp.text()
        # The upstream saw its own key, not the tenant's.
        assert fake.stats()["last_headers"]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
        await harness.app[USAGE].flush()
    finally:
        await harness.stop()
        await fake.stop()

    stored = stored_bytes(harness.db_path)
    assert b"tenant@example.com" in stored  # what is searched below holds the accounts
    for name, secret in {"tenant key": harness.key, "wrong key": wrong, "upstream key": UPSTREAM_SECRET,
                         "tenant key secret": harness.key.split("_", 1)[1]}.items():
        assert secret not in caplog.text, f"{name} in logs"
        assert secret not in metrics_text, f"{name} in /metrics"
        assert secret.encode() not in stored, f"{name} in the database"
        for body in bodies:
            assert secret not in body, f"{name} in a response body: {body}"

"""Each event is emitted once per occurrence: key changes, quota thresholds,
budget refusals per window, and rejected reloads per distinct bad content."""

from __future__ import annotations

import asyncio
import os

import orjson

from proxy.appkeys import CONFIG, USAGE, WEBHOOKS

from .test_webhooks_support import start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def _events(gw, event_type: str, order) -> list[dict]:
    """This type's events, sorted by `order` (a key of their data): the table keeps no
    order of its own on PostgreSQL, where its key is a random id and nothing else."""
    rows = await gw.rows("SELECT data FROM webhook_events WHERE type = ?", event_type)
    return sorted((orjson.loads(data) for (data,) in rows), key=order)


async def _new_events(gw, seen: set[str]) -> list[tuple[str, int | None]]:
    """The events written since the last look, which each step's own call has made."""
    rows = await gw.rows("SELECT id, type, account_id FROM webhook_events")
    new = [(event_type, account_id) for event_id, event_type, account_id in rows if event_id not in seen]
    seen.update(event_id for event_id, _, _ in rows)
    return new


async def _chat(gw, times: int) -> list[int]:
    statuses = []
    for _ in range(times):
        async with gw.client.post(gw.url + "/v1/chat/completions", json=CHAT,
                                  headers={"Authorization": f"Bearer {gw.harness.key}"}) as resp:
            await resp.read()
            statuses.append(resp.status)
        await gw.app[USAGE].flush()  # one batch per request: every batch judges the crossings again
    return statuses


async def test_key_created_revoked_and_rotated_are_each_emitted_in_the_key_change(tmp_path, monkeypatch):
    gw = await start_gateway(tmp_path, monkeypatch)
    try:
        account = gw.harness.user_id
        seen: set[str] = set()
        # The harness's own key, made through the CLI: the same write, the same event.
        assert await _new_events(gw, seen) == [("key.created", account)]
        status, key = await gw.call("POST", "/api/keys", json={"name": "ci"})
        assert status == 201, key
        assert await _new_events(gw, seen) == [("key.created", account)]
        status, _ = await gw.call("POST", f"/api/keys/{key['id']}/rotate", json={"overlap_seconds": 60})
        assert status == 200
        assert await _new_events(gw, seen) == [("key.rotated", account)]
        await gw.call("DELETE", f"/api/keys/{key['id']}")
        assert await _new_events(gw, seen) == [("key.revoked", account)]
        await gw.call("DELETE", f"/api/keys/{key['id']}")  # already revoked: nothing happens
        assert await _new_events(gw, seen) == []
        [rotated] = await _events(gw, "key.rotated", lambda e: e["key_id"])
        assert rotated["key_id"] == key["id"] and rotated["previous_key_expires_at"] == int(gw.clock.now) + 60
        assert rotated["prefix"] != key["prefix"]
    finally:
        await gw.stop()


async def test_usage_thresholds_fire_once_each_per_window(tmp_path, monkeypatch):
    plans = {"test": {"rpm": 100000, "tpm": 100000000, "models": "*", "requests_per_day": 10}}
    gw = await start_gateway(tmp_path, monkeypatch, plans=plans)
    try:
        statuses = await _chat(gw, 12)
        assert statuses == [200] * 10 + [429, 429]
        by_window = lambda e: (e["window"], e["threshold"])  # noqa: E731
        fired = await _events(gw, "usage.threshold", by_window)
        day = "2023-11-14"  # the injected clock's day
        assert [(e["limit"], e["window"], e["threshold"], e["used"]) for e in fired] == [
            ("requests_per_day", day, 50, 5), ("requests_per_day", day, 80, 8),
            ("requests_per_day", day, 100, 10)]
        assert fired[0] == {"account_id": gw.harness.user_id, "key_id": None, "scope": "account",
                            "limit": "requests_per_day", "window": day, "threshold": 50, "used": 5,
                            "limit_value": 10}
        gw.clock.advance(86400)  # the next day is a new window
        await _chat(gw, 5)
        fired = await _events(gw, "usage.threshold", by_window)
        assert [(e["window"], e["threshold"]) for e in fired][3:] == [("2023-11-15", 50)]
    finally:
        await gw.stop()


async def test_budget_exceeded_fires_once_per_window_at_the_first_refusal(tmp_path, monkeypatch):
    plans = {"test": {"rpm": 100000, "tpm": 100000000, "models": "*", "monthly_budget_usd": 0.00001}}
    gw = await start_gateway(tmp_path, monkeypatch, plans=plans)
    try:
        statuses = await _chat(gw, 4)
        assert statuses[0] == 200 and statuses[-1] == 429
        refused = statuses.count(429)
        assert refused >= 2
        by_window = lambda e: e["window"]  # noqa: E731
        exceeded = await _events(gw, "budget.exceeded", by_window)
        assert exceeded == [{"account_id": gw.harness.user_id, "key_id": None, "scope": "account",
                             "window": "2023-11", "limit_usd": 0.00001}]
        gw.clock.advance(31 * 86400)  # December: a new budget window
        await _chat(gw, 4)
        assert [e["window"] for e in await _events(gw, "budget.exceeded", by_window)] == ["2023-11", "2023-12"]
    finally:
        await gw.stop()


async def test_a_rejected_reload_fires_once_per_distinct_bad_content(tmp_path, monkeypatch):
    gw = await start_gateway(tmp_path, monkeypatch)
    holder = gw.app[CONFIG]
    config_file = os.path.join(gw.harness.config_dir, "gateway.yaml")
    good = open(config_file, encoding="utf-8").read()
    try:
        for bad in ("server: {port: nope}\n", "server: {port: nope}\n", "server: [unclosed\n",
                    "server: {port: nope}\n"):
            with open(config_file, "w", encoding="utf-8") as fh:
                fh.write(good + bad)
            for _ in range(3):  # a watcher reports one save several times
                result = await holder.reload(reason="file change")
                assert result.error is not None
        await gw.app[WEBHOOKS].system.flush()
        fired = await _events(gw, "config.reload_failed", lambda e: e["digest"])
        assert len(fired) == 2
        assert [e["serving_version"] for e in fired] == [1, 1]
        assert fired[0]["digest"] != fired[1]["digest"]
        rows = await gw.rows("SELECT account_id FROM webhook_events WHERE type = 'config.reload_failed'")
        assert rows == [(None,), (None,)]
    finally:
        with open(config_file, "w", encoding="utf-8") as fh:
            fh.write(good)
        await gw.stop()


async def test_overlapping_flushes_write_each_queued_event_once(tmp_path, monkeypatch):
    gw = await start_gateway(tmp_path, monkeypatch)
    system = gw.app[WEBHOOKS].system
    try:
        await system.flush()
        for n in range(5):
            system.upstream_changed(f"u{n}", "unhealthy")
        # The writer loop has been woken too: three flushes race it for one queue.
        await asyncio.gather(system.flush(), system.flush(), system.flush())
        fired = await _events(gw, "upstream.down", lambda e: e["upstream"])
        assert [e["upstream"] for e in fired] == [f"u{n}" for n in range(5)]
    finally:
        await gw.stop()

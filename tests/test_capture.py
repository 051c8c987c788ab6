"""Capture and replay over a real gateway, real fake upstreams and a real SQLite file:
redaction before anything is written, off by default, byte caps, retention,
who may see and replay a row, and what a replay is billed and marked."""

from __future__ import annotations

import glob
import os
import re
import time

import aiohttp
import openai
import pytest
from aiohttp import web

from proxy.appkeys import STORE, USAGE
from proxy.capture import writer
from proxy.capture.replay import replay_request
from proxy.cli.accounts import create_user_and_key
from proxy.config.build import build_snapshot
from proxy.config.source import ConfigError, read_source

from .db_access import on_postgres, query, query_dicts
from .gateway_harness import GatewayHarness, upstream_entry

PASSWORD = "correct horse battery"
ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-capture-tests-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
BASE_TIME = 1773576000.0  # 2026-03-15T12:00:00Z
DAY = 86400.0

REDACT = [
    {"pattern": r"sk-[a-z]+-[0-9a-f]{20}"},
    {"path": "$.user", "replacement": "[USER]"},
    {"path": "$.messages[*].content", "pattern": r"\b\d{16}\b", "replacement": "[CARD]"},
]
PLANS = {"test": {"rpm": 100000, "tpm": 100000000, "models": "*"},
         "tight": {"rpm": 1, "tpm": 100000000, "models": "*"}}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock(BASE_TIME)


async def start(tmp_path, upstreams, monkeypatch, clock, capture=None, plan="test"):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    sections = {"admin": {"key_env": ADMIN_ENV}, "plans": PLANS}
    if capture is not None:
        sections["capture"] = capture
    harness = GatewayHarness.write(str(tmp_path / "config"),
                                   [upstream_entry(n, f.url) for n, f in zip("abc", upstreams)], **sections)
    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "owner@example.com", PASSWORD, plan,
                                                       "laptop", bcrypt_rounds=4, clock=clock)
    create_user_and_key(harness.db_settings, "other@example.com", PASSWORD, "test", "theirs", bcrypt_rounds=4,
                        clock=clock)
    await harness.start(clock=clock)
    return harness


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def login(http, harness, email):
    async with http.post(harness.url + "/api/auth/login", json={"email": email, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        return {"Authorization": f"Bearer {(await resp.json())['token']}"}


def client(harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=harness.url + "/v1", api_key=harness.key, max_retries=0)


async def chat(harness, content: str, **extra):
    return await client(harness).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], **extra)


async def rows(harness) -> list[dict]:
    await harness.app[USAGE].flush()
    return query_dicts(harness.db_path, "SELECT id, user_id, key_id, status, replay_of, request_id "
                       "FROM usage ORDER BY id")


def captures(harness) -> dict[int, dict]:
    return {r["usage_id"]: r for r in query_dicts(harness.db_path, "SELECT * FROM usage_captures")}


async def get(http, harness, path, headers):
    async with http.get(harness.url + path, headers=headers) as resp:
        return resp.status, await resp.json()


async def post(http, harness, path, headers, body=None):
    async with http.post(harness.url + path, headers=headers, json={} if body is None else body) as resp:
        return resp.status, await resp.json()


# -- redaction and storage -----------------------------------------------------------


@pytest.mark.sqlite_only("greps the bytes of the SQLite file and its WAL")
async def test_redaction_runs_before_anything_reaches_the_database_file(tmp_path, upstreams, monkeypatch,
                                                                        clock):
    gw = await start(tmp_path, upstreams, monkeypatch, clock, capture={"plans": ["test"], "redact": REDACT})
    try:
        await chat(gw, f"my key is {CANARY} and card 4111111111111111", user="alice@example.com")
        stream = await chat(gw, f"again {CANARY}", stream=True)
        async for _ in stream:
            pass
        logged = await rows(gw)
        assert [r["status"] for r in logged] == [200, 200]
        stored = captures(gw)
        first, second = stored[logged[0]["id"]], stored[logged[1]["id"]]
        assert "[REDACTED]" in first["request_body"] and "[CARD]" in first["request_body"]
        assert '"user":"[USER]"' in first["request_body"]
        assert first["response_kind"] == "json" and '"model":"gpt-4o-mini"' in first["response_body"]
        assert second["response_kind"] == "stream_text"
        assert re.fullmatch(r"[abc] says hello from .+", second["response_body"]), second["response_body"]
    finally:
        await gw.stop()
    files = [gw.db_path] + glob.glob(gw.db_path + "-wal") + glob.glob(gw.db_path + "*.jsonl")
    raw = b"".join(open(path, "rb").read() for path in files if os.path.exists(path))
    assert CANARY.encode() not in raw
    assert b"4111111111111111" not in raw
    assert b"alice@example.com" not in raw
    assert b"[REDACTED]" in raw


async def test_capture_is_off_by_default(tmp_path, upstreams, monkeypatch, clock, http):
    gw = await start(tmp_path, upstreams, monkeypatch, clock)
    try:
        await chat(gw, f"my key is {CANARY}")
        (row,) = await rows(gw)
        assert captures(gw) == {}
        owner = await login(http, gw, "owner@example.com")
        status, shown = await get(http, gw, f"/api/usage/logs/{row['id']}", owner)
        assert status == 200 and shown["capture"] is None and shown["replay_of"] is None
        status, body = await post(http, gw, f"/api/usage/logs/{row['id']}/replay", owner)
        assert status == 409 and body["error"]["code"] == "not_captured"
        assert "capture is opt-in" in body["error"]["message"]
    finally:
        await gw.stop()
    if not on_postgres():  # the bytes of the file too, where the database is a file of ours
        with open(gw.db_path, "rb") as fh:
            assert CANARY.encode() not in fh.read()


async def test_a_key_opts_in_through_its_owner(tmp_path, upstreams, monkeypatch, clock, http):
    gw = await start(tmp_path, upstreams, monkeypatch, clock)
    try:
        owner = await login(http, gw, "owner@example.com")
        status, keys = await get(http, gw, "/api/keys", owner)
        key_id = keys["data"][0]["id"]
        assert keys["data"][0]["capture"] is False
        async with http.patch(gw.url + f"/api/keys/{key_id}", headers=owner, json={"capture": True}) as resp:
            assert resp.status == 200 and (await resp.json())["capture"] is True
        async with http.patch(gw.url + f"/api/keys/{key_id}", headers=owner, json={"capture": "yes"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "capture"
        await chat(gw, "hello there")
        (row,) = await rows(gw)
        assert list(captures(gw)) == [row["id"]]
    finally:
        await gw.stop()


async def test_a_body_over_the_cap_is_truncated_and_marked(tmp_path, upstreams, monkeypatch, clock, http):
    gw = await start(tmp_path, upstreams, monkeypatch, clock,
                     capture={"plans": ["test"], "max_body_bytes": 256})
    try:
        await chat(gw, "é" * 400)
        (row,) = await rows(gw)
        stored = captures(gw)[row["id"]]
        assert stored["request_truncated"] == 1 and len(stored["request_body"].encode()) <= 256
        owner = await login(http, gw, "owner@example.com")
        status, shown = await get(http, gw, f"/api/usage/logs/{row['id']}", owner)
        assert status == 200 and shown["capture"]["request"]["truncated"] is True
        status, body = await post(http, gw, f"/api/usage/logs/{row['id']}/replay", owner)
        assert status == 409 and body["error"]["code"] == "capture_truncated"
    finally:
        await gw.stop()


async def test_the_total_cap_drops_the_oldest_captures_first(tmp_path, upstreams, monkeypatch, clock):
    gw = await start(tmp_path, upstreams, monkeypatch, clock,
                     capture={"plans": ["test"], "max_total_bytes": 2048})
    try:
        for i in range(12):
            await chat(gw, f"request number {i} " + "x" * 100)
            await gw.app[USAGE].flush()
        logged = await rows(gw)
        stored = captures(gw)
        sizes = sum(c["bytes"] for c in stored.values())
        [(total,)] = query(gw.db_path, "SELECT bytes FROM capture_totals")
        assert total == sizes and 0 < total <= 2048
        kept = sorted(stored)
        assert kept == [r["id"] for r in logged][-len(kept):]  # the newest ones, none older skipped
        assert logged[0]["id"] not in stored
    finally:
        await gw.stop()


async def test_the_sweep_deletes_captures_past_their_retention(tmp_path, upstreams, monkeypatch, clock):
    gw = await start(tmp_path, upstreams, monkeypatch, clock,
                     capture={"plans": ["test"], "retention_days": 7, "sweep_interval": "20ms"})
    try:
        await chat(gw, "old one")
        clock.now += 6 * DAY
        await chat(gw, "newer one")
        old, new = await rows(gw)
        assert sorted(captures(gw)) == [old["id"], new["id"]]
        clock.now += 1 * DAY + 1  # the first is now 7 days and a second old
        deadline = time.monotonic() + 5
        while old["id"] in captures(gw) and time.monotonic() < deadline:
            await gw.app[USAGE].flush()
            await writer.sweep(gw.app[STORE], 0, 0)  # a no-op pass, yielding to the periodic one
        assert sorted(captures(gw)) == [new["id"]]
        [(total,)] = query(gw.db_path, "SELECT bytes FROM capture_totals")
        assert total == captures(gw)[new["id"]]["bytes"]
        assert [r["id"] for r in await rows(gw)] == [old["id"], new["id"]]  # the usage rows stay
    finally:
        await gw.stop()


# -- who may see and replay ---------------------------------------------------------------


async def test_the_owner_and_an_admin_see_a_row_another_account_gets_404(tmp_path, upstreams, monkeypatch,
                                                                        clock, http):
    gw = await start(tmp_path, upstreams, monkeypatch, clock, capture={"plans": ["test"], "redact": REDACT})
    try:
        await chat(gw, f"secret {CANARY}")
        (row,) = await rows(gw)
        path = f"/api/usage/logs/{row['id']}"
        owner = await login(http, gw, "owner@example.com")
        other = await login(http, gw, "other@example.com")
        status, shown = await get(http, gw, path, owner)
        assert status == 200 and shown["id"] == row["id"] and shown["object"] == "usage.log"
        assert "upstream" not in shown
        assert "[REDACTED]" in shown["capture"]["request"]["body"] and CANARY not in str(shown)
        status, as_admin = await get(http, gw, path, ADMIN)
        assert status == 200 and as_admin["capture"] == shown["capture"] and as_admin["upstream"] in "abc"
        for probe in (path, "/api/usage/logs/999999"):
            status, refused = await get(http, gw, probe, other)
            assert status == 404 and refused["error"]["code"] == "usage_log_not_found"
        status, refused = await post(http, gw, path + "/replay", other)
        assert status == 404 and refused["error"]["code"] == "usage_log_not_found"
        status, refused = await get(http, gw, "/api/usage/logs/abc", owner)
        assert status == 404
        status, refused = await post(http, gw, path + "/replay", owner, {"stream": True})
        assert status == 400 and refused["error"]["param"] == "stream"
        assert [r["id"] for r in await rows(gw)] == [row["id"]]  # nothing was replayed
    finally:
        await gw.stop()


async def test_a_replay_is_marked_billed_to_the_owner_and_skips_the_cache(tmp_path, upstreams, monkeypatch,
                                                                         clock, http):
    gw = await start(tmp_path, upstreams, monkeypatch, clock, capture={"plans": ["test"], "redact": REDACT})
    try:
        stream = await chat(gw, f"tell me {CANARY}", stream=True, stream_options={"include_usage": True})
        async for _ in stream:
            pass
        (original,) = await rows(gw)
        counts = [f.stats()["requests"] for f in upstreams]
        before = sum(counts)
        # The admin asks; the owner pays.
        status, replayed = await post(http, gw, f"/api/usage/logs/{original['id']}/replay", ADMIN)
        assert status == 200, replayed
        assert replayed["object"] == "usage.replay" and replayed["replay_of"] == original["id"]
        assert replayed["response"]["object"] == "chat.completion"  # a stream is replayed as non-stream
        assert replayed["response"]["model"] == "gpt-4o-mini"
        # A fresh upstream call, not a cached answer.
        assert sum(f.stats()["requests"] for f in upstreams) == before + 1
        (sent,) = [f.stats()["last_body"] for f, n in zip(upstreams, counts) if f.stats()["requests"] > n]
        # What was sent is the redacted capture, as a non-stream request.
        assert sent == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me [REDACTED]"}]}
        logged = await rows(gw)
        new = logged[-1]
        assert new["id"] == replayed["id"] and new["replay_of"] == original["id"]
        assert new["user_id"] == gw.user_id and new["key_id"] == original["key_id"] and new["status"] == 200
        owner = await login(http, gw, "owner@example.com")
        status, shown = await get(http, gw, f"/api/usage/logs/{new['id']}", owner)
        assert shown["replay_of"] == original["id"] and shown["stream"] is False
        status, again = await post(http, gw, f"/api/usage/logs/{original['id']}/replay", owner)
        assert status == 200 and again["id"] == logged[-1]["id"] + 1
    finally:
        await gw.stop()


async def test_a_replay_runs_under_the_owners_limits(tmp_path, upstreams, monkeypatch, clock, http):
    gw = await start(tmp_path, upstreams, monkeypatch, clock, capture={"plans": ["tight"]}, plan="tight")
    try:
        await chat(gw, "only one a minute")
        (original,) = await rows(gw)
        before = sum(f.stats()["requests"] for f in upstreams)
        status, refused = await post(http, gw, f"/api/usage/logs/{original['id']}/replay", ADMIN)
        assert status == 429 and refused["error"]["code"] == "rate_limit_exceeded"
        assert refused["replay_of"] == original["id"]
        assert sum(f.stats()["requests"] for f in upstreams) == before
        logged = await rows(gw)
        assert [(r["status"], r["replay_of"], r["user_id"]) for r in logged] == [
            (200, None, gw.user_id), (429, original["id"], gw.user_id)]
    finally:
        await gw.stop()


async def test_the_replayed_request_opts_out_of_the_cache_and_drops_credentials(tmp_path, upstreams,
                                                                                monkeypatch, clock):
    gw = await start(tmp_path, upstreams, monkeypatch, clock)
    try:
        seen = {}

        async def handler(request):
            inner = replay_request(request)
            seen.update(inner.headers)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/probe", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://127.0.0.1:{port}/probe", json={},
                                        headers={**ADMIN, "Cookie": "bm_session=x",
                                                 "x-bluesminds-cache": "true", "x-bluesminds-tags": "t"}) as resp:
                    assert resp.status == 200
        finally:
            await runner.cleanup()
        lower = {k.lower(): v for k, v in seen.items()}
        assert lower["x-bluesminds-cache"] == "false"
        assert "authorization" not in lower and "cookie" not in lower
        assert lower["x-bluesminds-tags"] == "t"
    finally:
        await gw.stop()


# -- config --------------------------------------------------------------------------------


def _problems(tmp_path, capture) -> list[str]:
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("a", "http://127.0.0.1:9")],
                                   capture=capture)
    with pytest.raises(ConfigError) as caught:
        build_snapshot(read_source(harness.config_dir), harness.config_dir, environ={})
    return [str(p) for p in caught.value.problems]


def test_a_bad_regex_is_reported_with_its_path(tmp_path):
    (problem,) = _problems(tmp_path, {"redact": [{"pattern": "sk-[a-z"}]})
    assert "capture.redact[0].pattern" in problem
    assert "not a valid regular expression: unterminated character set" in problem


def test_a_bad_json_path_is_reported(tmp_path):
    (problem,) = _problems(tmp_path, {"redact": [{"path": "$.messages[?(@.role)]"}]})
    assert "capture.redact[0].path" in problem and "not a JSON path this gateway reads" in problem


def test_an_unknown_plan_is_reported(tmp_path):
    (problem,) = _problems(tmp_path, {"plans": ["gold"]})
    assert "capture.plans[0]" in problem and "plan 'gold' is not defined in plans" in problem


def test_a_rule_needs_a_pattern_or_a_path(tmp_path):
    (problem,) = _problems(tmp_path, {"redact": [{"replacement": "x"}]})
    assert "capture.redact[0]" in problem

"""`bluesminds serve --workers 4` as real processes sharing one port and one
real redis-server: limits exact across workers, a killed worker's holds
expire, Redis down or restarted empty never lets a quota overshoot, and an
admin drain reaches every worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import aiohttp
import pytest
from click.testing import CliRunner

from proxy.cli import main
from proxy.cli.accounts import create_user_and_key
from proxy.config.build import LIMITS_BACKEND_ENV
from proxy.fake_upstream import start_fake_upstream

from .db_access import query
from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import RedisServer, needs_redis, redis_server  # noqa: F401

pytestmark = [needs_redis, pytest.mark.timeout(180)]

HOLD_TTL = 1.5
ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-worker-tests"
# $0.01 per input token: an embedding of "hi" is 1 token by the estimate and by the
# fake upstream's count, so a $1 budget holds exactly 100 of them.
MODELS = {
    "gpt-4o-mini": {"pricing": {"input": 0.15, "output": 0.6}},
    "text-embedding-3-small": {"kind": "embedding", "pricing": {"input": 10000, "output": 0}},
    "slow-model": {"pricing": {"input": 0, "output": 0}},
}
PLANS = {
    "test": {"models": "*"},
    "rpm60": {"rpm": 60, "models": "*"},
    "daily100": {"requests_per_day": 100, "models": "*"},
    "dollar": {"monthly_budget_usd": 1, "models": "*"},
    "four": {"max_concurrent": 4, "models": "*"},
}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
EMBED = {"model": "text-embedding-3-small", "input": "hi"}


def ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


class Fleet:
    """`serve --workers N` in a subprocess; its log in a file the test reads."""

    def __init__(self, harness: GatewayHarness, workers: int, env: dict[str, str]) -> None:
        self.harness = harness
        self.workers = workers
        self.env = {**os.environ, **env}
        self.log_path = os.path.join(harness.config_dir, "serve.log")
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.keys: dict[str, str] = {}

    def key_for(self, plan: str) -> str:
        if plan not in self.keys:
            _, self.keys[plan] = create_user_and_key(
                self.harness.db_settings, f"{plan}@example.com", "correct horse battery", plan, plan,
                bcrypt_rounds=4)
        return self.keys[plan]

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    async def start(self) -> "Fleet":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--config", self.harness.config_dir,
                 "--port", "0", "--workers", str(self.workers)],
                stdout=log, stderr=log, env=self.env)
        try:
            await self.wait_for(lambda text: text.count("listening on") >= self.workers, 60)
        except BaseException:
            self.stop()  # a fleet that never came up must not outlive its test
            raise
        port = re.search(r"supervising \d+ workers on http://127.0.0.1:(\d+)", self.log()).group(1)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def wait_for(self, ready, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not ready(self.log()):  # a process's log line has no event to await
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fleet not ready; log:\n{self.log()}")
            await asyncio.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """Live workers: the last pid started in each slot."""
        latest: dict[int, int] = {}
        for slot, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", self.log()):
            latest[int(slot)] = int(pid)
        return list(latest.values())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def shutdown(self, seconds: float = 90.0) -> None:
        """SIGTERM, then wait without blocking this loop: the fake upstreams the
        draining workers may still be talking to run on it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


async def gone(pid: int, seconds: float = 10.0) -> None:
    """Wait (bounded) until a killed process has closed its files.

    The leader thread turns zombie before the process's other threads have
    exited, and the shared file table (the listening socket with it) is
    released by the last of them: so wait until no thread but a zombie
    leader is left.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                leader_dead = fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except FileNotFoundError:
            return
        if leader_dead and threads in ([], [str(pid)]):
            return
        await asyncio.sleep(0.01)  # no event tells another process's death
    raise AssertionError(f"process {pid} still alive {seconds}s after SIGKILL")


def owner_of(client_port: int, pids: list[int]) -> int | None:
    """The worker whose socket is the server side of the client's connection."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == client_port:
                    inodes.add(fields[9])
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    return None


async def fleet_for(tmp_path, redis_url: str, upstreams: list[dict], *, workers: int = 4,
                    env: dict[str, str] | None = None) -> Fleet:
    harness = GatewayHarness.write(
        str(tmp_path / "config"), upstreams,
        server={"log_level": "info", "access_log": False},
        limits={"backend": redis_url, "hold_ttl": f"{int(HOLD_TTL * 1000)}ms"},
        admin={"key_env": ADMIN_ENV}, models=MODELS, plans=PLANS)
    fleet = Fleet(harness, workers, {ADMIN_ENV: ADMIN_KEY, **(env or {})})
    for plan in PLANS:
        fleet.key_for(plan)
    return await fleet.start()


async def burst(url: str, key: str, body: dict, n: int, route: str = "/v1/chat/completions"
                ) -> list[tuple[int, dict]]:
    """`n` requests at once, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one():
            async with session.post(url + route, json=body,
                                    headers={"Authorization": f"Bearer {key}"}) as resp:
                return resp.status, await resp.json()
        return await asyncio.gather(*(one() for _ in range(n)))


def statuses(answers) -> dict[int, int]:
    out: dict[int, int] = {}
    for status, _ in answers:
        out[status] = out.get(status, 0) + 1
    return out


def spent_nano(db_path: str, email: str) -> int:
    return query(db_path, "SELECT COALESCE(SUM(u.cost_nano), 0) FROM usage u JOIN users s ON s.id = u.user_id "
                 "WHERE s.email = ?", (email,))[0][0]


# -- refusing what cannot be exact ----------------------------------------------------


def test_more_than_one_worker_needs_the_shared_limiter(tmp_path, monkeypatch):
    # The default backend, memory: not the Redis the suite's PostgreSQL pass names.
    monkeypatch.delenv(LIMITS_BACKEND_ENV, raising=False)
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", "http://127.0.0.1:9")])
    result = CliRunner().invoke(main, ["serve", "--config", harness.config_dir, "--workers", "4"])
    assert result.exit_code == 1, result.output
    assert result.output == (
        "Error: --workers 4 needs a shared limiter (limits.backend: redis://host:port/db): with "
        "limits.backend: memory each worker would count every limit on its own, letting 4 times "
        "the rpm, quotas and budgets through\n")


# -- exactness --------------------------------------------------------------------------


async def test_limits_are_exact_across_four_workers_and_at_a_window_edge(tmp_path, redis_server):
    redis_server.flush()
    # Every worker's scripts read "now" from one Redis key, so the test holds the
    # clock still (no rpm refill mid-burst) and then moves it over midnight.
    redis_server.command("SET", "bm:test:now", repr(ts(2026, 11, 26, 12)))
    fake = await start_fake_upstream(name="a")
    fleet = await fleet_for(tmp_path, redis_server.url, [upstream_entry("a", fake.url)],
                            env={"BLUESMINDS_TEST_REDIS_CLOCK": "1"})
    try:
        rpm = await burst(fleet.url, fleet.keys["rpm60"], CHAT, 200)
        assert statuses(rpm) == {200: 60, 429: 140}
        refused = next(body for status, body in rpm if status == 429)
        assert refused["error"]["code"] == "rate_limit_exceeded"
        assert refused["error"]["message"].startswith(
            "Rate limit reached for requests per minute (rpm) on this key: limit 60, used 60.")

        daily = await burst(fleet.url, fleet.keys["daily100"], CHAT, 500)
        assert statuses(daily) == {200: 100, 429: 400}
        refused = next(body for status, body in daily if status == 429)
        assert refused["error"]["code"] == "insufficient_quota"
        assert refused["error"]["message"].startswith(
            "Daily request quota reached for this account: limit 100, used 100. "
            "It resets at 2026-11-27 00:00 UTC (in 12h0m0s)")

        budget = await burst(fleet.url, fleet.keys["dollar"], EMBED, 300, "/v1/embeddings")
        assert statuses(budget) == {200: 100, 429: 200}
        assert any(body["error"]["message"].startswith(
            "Monthly budget reached for this account: limit $1.00, spent $1.00")
            for status, body in budget if status == 429)

        # At the edge: 0.5 s before midnight the day is spent; 0.5 s after it, exactly
        # 100 more, whichever worker counts them.
        redis_server.command("SET", "bm:test:now", repr(ts(2026, 11, 26, 23, 59, 59, 500000)))
        assert statuses(await burst(fleet.url, fleet.keys["daily100"], CHAT, 50)) == {429: 50}
        redis_server.command("SET", "bm:test:now", repr(ts(2026, 11, 27, 0, 0, 0, 500000)))
        assert statuses(await burst(fleet.url, fleet.keys["daily100"], CHAT, 500)) == {
            200: 100, 429: 400}
        # The budget is monthly: the new day does not refill it.
        assert statuses(await burst(fleet.url, fleet.keys["dollar"], EMBED, 20,
                                    "/v1/embeddings")) == {429: 20}
    finally:
        await fleet.shutdown()
        await fake.stop()
    assert spent_nano(fleet.harness.db_path, "dollar@example.com") == 1_000_000_000  # exactly $1
    assert fleet.proc.returncode == 0, fleet.log()[-4000:]


# -- faults -------------------------------------------------------------------------------


async def test_a_killed_workers_holds_expire_and_the_others_keep_serving(tmp_path, redis_server):
    redis_server.flush()
    fast = await start_fake_upstream(name="a")
    slow = await start_fake_upstream(name="slow", stream_chunks=400, chunk_delay=0.05)
    fleet = await fleet_for(tmp_path, redis_server.url, [
        {**upstream_entry("a", fast.url), "models": ["gpt-4o-mini", "text-embedding-3-small"]},
        {**upstream_entry("slow", slow.url), "models": ["slow-model"]}])
    stream = {"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": f"Bearer {fleet.keys['four']}"}
    sessions: list[aiohttp.ClientSession] = []

    async def open_stream():
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        sessions.append(session)
        resp = await session.post(fleet.url + "/v1/chat/completions", json=stream, headers=auth)
        if resp.status == 200:
            await resp.content.readline()  # admitted, and streaming
        return resp

    try:
        held = [await open_stream() for _ in range(4)]
        assert [r.status for r in held] == [200, 200, 200, 200]
        extra = await open_stream()
        assert extra.status == 429
        assert (await extra.json())["error"]["message"].startswith(
            "Too many requests in flight on this key: limit 4 at a time.")

        pids = fleet.worker_pids()
        victim = owner_of(held[0].connection.transport.get_extra_info("sockname")[1], pids)
        assert victim in pids
        on_victim = sum(owner_of(r.connection.transport.get_extra_info("sockname")[1], pids)
                        == victim for r in held)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await gone(victim)  # until then the kernel may still queue new connections on its socket
        for resp in held:
            resp.close()  # the survivors' streams end: their holds are released at once

        # Right after the kill only the dead worker's holds are still counted…
        probes = [await open_stream() for _ in range(4)]
        assert [r.status for r in probes].count(200) == 4 - on_victim
        for resp in probes:
            resp.close()
        # …and within hold_ttl they are gone: four streams fit again.
        while True:
            again = [await open_stream() for _ in range(4)]
            if [r.status for r in again] == [200] * 4:
                break
            for resp in again:
                resp.close()
            assert time.monotonic() - killed_at < HOLD_TTL + 1.0, "the killed worker's holds did not expire"
            await asyncio.sleep(0.1)
        assert time.monotonic() - killed_at <= HOLD_TTL + 1.0
        for resp in again:
            resp.close()

        # The survivors serve everything, and the supervisor starts a replacement.
        answers = await burst(fleet.url, fleet.keys["test"], CHAT, 300)
        assert statuses(answers) == {200: 300}
        await fleet.wait_for(lambda text: text.count(" started (pid ") == 5, 30)
        assert victim not in fleet.worker_pids()
        assert re.search(rf"worker \d \(pid {victim}\) exited with signal SIGKILL; restarting it",
                         fleet.log())
    finally:
        for session in sessions:
            await session.close()
        await fleet.shutdown()
        await fast.stop()
        await slow.stop()
    assert fleet.proc.returncode == 0, fleet.log()[-4000:]


async def test_redis_down_fails_quotas_closed_and_an_empty_restart_never_overshoots(tmp_path):
    redis = RedisServer()
    redis.start()
    fake = await start_fake_upstream(name="a")
    try:
        fleet = await fleet_for(tmp_path, redis.url, [upstream_entry("a", fake.url)])
        try:
            first = await burst(fleet.url, fleet.keys["daily100"], CHAT, 40)
            assert statuses(first) == {200: 40}

            redis.stop()
            down = await burst(fleet.url, fleet.keys["daily100"], CHAT, 20)
            assert statuses(down) == {503: 20}
            assert down[0][1]["error"] == {
                "message": "The gateway cannot check this account's quotas and budget right now "
                           "(its shared limiter is unavailable), so the request was not sent; "
                           "retry in a moment.",
                "type": "server_error", "param": None, "code": "limits_unavailable"}
            # rpm alone falls back to each worker's share.
            assert statuses(await burst(fleet.url, fleet.keys["rpm60"], CHAT, 8)) == {200: 8}
            # Counters are per worker and SO_REUSEPORT spreads connections over them: one
            # kept-alive connection asks the worker that just refused for its own figures.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
                async with session.post(fleet.url + "/v1/chat/completions", json=CHAT,
                                        headers={"Authorization": f"Bearer {fleet.keys['daily100']}"}) as resp:
                    assert resp.status == 503
                    await resp.read()
                async with session.get(fleet.url + "/metrics",
                                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
                    metrics = await resp.text()
            assert "bluesminds_limiter_backend_up 0.0" in metrics
            assert re.search(r"bluesminds_limiter_fail_closed_total [1-9]", metrics)

            # Back, and empty: the rollups re-seed it before any quota is admitted again.
            redis.start()
            admitted = 40
            deadline = time.monotonic() + 30
            while admitted < 100:
                answers = await burst(fleet.url, fleet.keys["daily100"], CHAT, 500)
                counts = statuses(answers)
                admitted += counts.get(200, 0)
                assert admitted <= 100, f"overshoot: {counts}"
                if counts.get(429, 0) and not counts.get(503):
                    break
                assert time.monotonic() < deadline, f"not restored: {counts}"
                await asyncio.sleep(0.2)
            assert admitted == 100
            assert statuses(await burst(fleet.url, fleet.keys["daily100"], CHAT, 50)) == {429: 50}
            assert "the shared limiter at" in fleet.log() and "is back" in fleet.log()
        finally:
            await fleet.shutdown()
    finally:
        await fake.stop()
        redis.close()
    [(forwarded,)] = query(fleet.harness.db_path, "SELECT COUNT(*) FROM usage u JOIN users s ON s.id = u.user_id "
                           "WHERE s.email = 'daily100@example.com' AND u.status = 200")
    assert forwarded == 100


# -- admin actions ---------------------------------------------------------------------------


async def test_a_server_drain_reaches_every_worker(tmp_path, redis_server):
    redis_server.flush()
    a = await start_fake_upstream(name="a")
    b = await start_fake_upstream(name="b")
    fleet = await fleet_for(tmp_path, redis_server.url,
                            [upstream_entry("a", a.url), upstream_entry("b", b.url)])
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        assert statuses(await burst(fleet.url, fleet.keys["test"], CHAT, 40)) == {200: 40}
        assert a.stats()["requests"] > 0 and b.stats()["requests"] > 0
        async with aiohttp.ClientSession() as session:
            async with session.patch(fleet.url + "/api/admin/servers/a", json={"drain": True},
                                     headers=admin) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["state"] == "draining"
        # Every worker's watcher reloads the managed file: 40 fresh connections,
        # spread over all four workers by the kernel, none reaches a.
        deadline = time.monotonic() + 15
        while True:
            a.reset_stats()
            assert statuses(await burst(fleet.url, fleet.keys["test"], CHAT, 40)) == {200: 40}
            if a.stats()["requests"] == 0:
                break
            assert time.monotonic() < deadline, "a worker kept sending to the drained server"
            await asyncio.sleep(0.1)
    finally:
        await fleet.shutdown()
        await a.stop()
        await b.stop()

"""A real redis-server for the tests: a free 127.0.0.1 port, a temporary
directory, no persistence (so a restart comes back empty, as a crashed Redis
without a dump does), stopped by its PID.

`redis_server` (session-wide) and `redis_url` (a fresh database per test)
are pytest fixtures; tests that need Redis skip, saying why, only when
redis-server is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                                 if os.path.exists("/usr/bin/redis-server") else None)
SKIP_REASON = "redis-server is not installed (apt-get install redis-server)"
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="bm-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command, RESP-encoded by hand: the fixture needs no client library."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(payload)
            return sock.recv(65536)

    def flush(self) -> None:
        self.command("FLUSHALL")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart_empty(self) -> None:
        """Stop, then start again on the same port with nothing in it."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server):
    redis_server.flush()
    return redis_server.url


class SyncRedisLimiter:
    """A `RedisLimiter` behind the in-process limiter's synchronous calls, so the
    limiter's behaviour tests run unchanged against both backends. Its event
    loop runs in a thread of its own; each call waits for its script."""

    def __init__(self, url: str, clock) -> None:
        import asyncio
        import threading

        from proxy.limits.redis_backend import RedisLimiter

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.backend = RedisLimiter(url, clock=clock, grace=0.0)
        self._run(self.backend.start())

    def _run(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def clock(self):
        return self.backend.clock

    def admit(self, principal, plan, *, estimated_tokens, estimated_cost):
        async def admit():
            return await self.backend.admit(principal, plan, estimated_tokens=estimated_tokens,
                                            estimated_cost=estimated_cost)
        return _LiveHold(self, self._run(admit()))

    def settle(self, reservation, *, tokens, cost):
        self._run(self.backend.finish(reservation.hold, "settle", tokens, cost))

    def release(self, reservation):
        self._run(self.backend.finish(reservation.hold, "release", 0, 0.0))

    def headers(self, reservation):
        return self.backend.headers(reservation.hold)

    def usage(self, name: str):
        """The live counters of one subject hash, as a QuotaUsage."""
        from proxy.limits.quotas import QuotaUsage

        async def read():
            return await self.backend._client.hgetall(f"{self.backend._ns}:{name}")  # noqa: SLF001
        raw = self._run(read())
        usage = QuotaUsage(int(raw.get("d", 0)), int(raw.get("m", 0)))
        usage.requests_day, usage.tokens_day = int(raw.get("rd", 0)), int(raw.get("td", 0))
        usage.requests_before, usage.tokens_before = int(raw.get("rb", 0)), int(raw.get("tb", 0))
        usage.cost_month = int(raw.get("cm", 0))
        return usage

    def seed(self, totals):
        async def seed():
            # The in-process seed replaces counters at start-up; here the marker
            # set by start() goes first, so the seed lands on the empty state.
            await self.backend._client.delete(self.backend._marker)  # noqa: SLF001
            return await self.backend.seed(totals)
        return self._run(seed())

    def forget_plans(self, live_plans):
        self.backend.forget_plans(live_plans)

    def close(self) -> None:
        self._run(self.backend.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class _LiveHold:
    """A Redis hold whose `.user.usage` / `.key.usage` read Redis's live counters,
    as the in-process Reservation's subjects are live objects."""

    def __init__(self, facade: SyncRedisLimiter, hold) -> None:
        self.hold = hold
        self._facade = facade

    def __getattr__(self, name):
        return getattr(self.hold, name)

    @property
    def user(self):
        return _LiveSubject(self._facade, f"u:{self.hold.user_id}")

    @property
    def key(self):
        return _LiveSubject(self._facade, f"k:{self.hold.key_id}")


class _LiveSubject:
    def __init__(self, facade: SyncRedisLimiter, name: str) -> None:
        self._facade = facade
        self._name = name

    @property
    def usage(self):
        return self._facade.usage(self._name)

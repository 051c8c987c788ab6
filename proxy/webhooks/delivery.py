"""The outbox's delivery loop: due rows in the database → signed POSTs.

The database is the truth: a delivery is a row that stays `pending` until an
attempt's result is written, so a kill -9 at any point leaves it due, and the
next start sends it again under the same `webhook-id` (receivers dedupe on
it). In this process, deliveries being sent are remembered in memory, so the
poll that runs meanwhile does not send them twice.

Attempt rules: 2xx delivers; 410 disables the endpoint (and fails the
delivery); anything else, a redirect included (never followed), a timeout or
a refused connection, is retried after about 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 10 h (±20 % jitter), then given up. Due times come from the injected
clock; the loop itself waits on real time (the poll interval, or a `kick`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp
import orjson

from ..config.snapshot import WebhookSettings
from ..store import Store
from . import signing
from .endpoints import DISABLED_GONE, disable_endpoint
from .secrets import SecretBox
from .ssrf import NetworkPolicy, vetting_socket_factory

log = logging.getLogger("bluesminds.webhooks")

RETRY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER = 0.2
BATCH = 32  # deliveries read per poll, and sent at once at most
MAX_ERROR_CHARS = 300


def next_delay(attempts: int, rng: random.Random) -> float | None:
    """Seconds until the retry after `attempts` failed attempts; None: give up."""
    if attempts > len(RETRY_DELAYS):
        return None
    base = RETRY_DELAYS[attempts - 1]
    return base * (1.0 + rng.uniform(-JITTER, JITTER))


@dataclass(frozen=True, slots=True)
class Due:
    delivery_id: int
    attempts: int
    event_id: str
    event_type: str
    account_id: int | None
    data: str
    created_at: float
    endpoint_id: int
    source: str
    name: str
    url: str
    secret_ciphertext: bytes | None


_DUE = """
SELECT d.id, d.attempts, ev.id, ev.type, ev.account_id, ev.data, ev.created_at,
       e.id, e.source, e.name, e.url, e.secret_ciphertext
FROM webhook_deliveries d
JOIN webhook_events ev ON ev.id = d.event_id
JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND e.disabled_at IS NULL
  AND (d.claimed_until IS NULL OR d.claimed_until < ?)
ORDER BY d.next_attempt_at
LIMIT ?
"""


LEASE_MARGIN_S = 30.0
WORKER_INDEX_ENV = "BLUESMINDS_WORKER_INDEX"  # set by the supervisor for each worker slot


def worker_slot() -> str:
    return f"{socket.gethostname()}:{os.environ.get(WORKER_INDEX_ENV, '0')}"


def release_claims(conn, owner: str) -> int:
    """Give back what an earlier process in this worker slot claimed: it is dead."""
    return conn.execute("UPDATE webhook_deliveries SET claimed_until = NULL, claimed_by = NULL "
                        "WHERE claimed_by = ?", (owner,)).rowcount


def due_deliveries(conn, now: float, limit: int) -> list[Due]:
    return [Due(*row) for row in conn.execute(_DUE, (now, now, limit))]


# One statement takes the lease, so of two workers that read the same due row
# only one updates it: SQLite runs writers one at a time (BEGIN IMMEDIATE), and
# PostgreSQL re-checks the WHERE on the row it locked after the other commits.
_CLAIM = (
    "UPDATE webhook_deliveries SET claimed_until = ?, claimed_by = ? WHERE id = ? "
    "AND state = 'pending' AND (claimed_until IS NULL OR claimed_until < ?) RETURNING id")


def claim(conn, ids: list[int], now: float, until: float, owner: str) -> set[int]:
    """The ids of `ids` this worker now holds the lease of, until `until`."""
    claimed = set()
    for delivery_id in ids:
        row = conn.execute(_CLAIM, (until, owner, delivery_id, now)).fetchone()
        if row is not None:
            claimed.add(row[0])
    return claimed


def next_due_at(conn) -> float | None:
    return conn.execute("SELECT MIN(next_attempt_at) FROM webhook_deliveries d "
                        "JOIN webhook_endpoints e ON e.id = d.endpoint_id "
                        "WHERE d.state = 'pending' AND e.disabled_at IS NULL").fetchone()[0]


def body_of(due: Due) -> bytes:
    """Standard Webhooks' payload shape: type, timestamp, data (plus our event id)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due.created_at))
    return (b'{"id":' + orjson.dumps(due.event_id) + b',"type":' + orjson.dumps(due.event_type)
            + b',"timestamp":' + orjson.dumps(stamp) + b',"data":' + due.data.encode() + b"}")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    error: str | None
    duration_ms: float

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def record_outcome(conn, due: Due, outcome: Outcome, *, now: float, retry_in: float | None) -> None:
    number = due.attempts + 1
    conn.execute("INSERT INTO webhook_attempts (delivery_id, number, at, status, error, duration_ms) "
                 "VALUES (?, ?, ?, ?, ?, ?)",
                 (due.delivery_id, number, now, outcome.status, outcome.error, outcome.duration_ms))
    if outcome.delivered:
        state, next_at, delivered_at = "succeeded", None, now
    elif outcome.status == 410 or retry_in is None:
        state, next_at, delivered_at = "failed", None, None
    else:
        state, next_at, delivered_at = "pending", now + retry_in, None
    conn.execute("UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, "
                 "last_status = ?, last_error = ?, delivered_at = ?, claimed_until = NULL, claimed_by = NULL "
                 "WHERE id = ?",
                 (state, number, next_at, outcome.status, outcome.error, delivered_at, due.delivery_id))
    if outcome.status == 410:
        disable_endpoint(conn, due.endpoint_id, DISABLED_GONE, now)


class WebhookClient:
    """One pooled HTTP client whose every connection is vetted (ssrf.py)."""

    def __init__(self, settings: Callable[[], WebhookSettings], *,
                 resolver: aiohttp.abc.AbstractResolver | None = None) -> None:
        self._settings = settings
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def policy(self) -> NetworkPolicy:
        s = self._settings()
        return NetworkPolicy(allow_networks=s.allow_networks, allow_http=s.allow_http)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(socket_factory=vetting_socket_factory(self.policy),
                                             resolver=self._resolver, limit=64, ttl_dns_cache=0,
                                             use_dns_cache=False)
            # trust_env=False: an HTTP(S)_PROXY in the environment must not carry
            # deliveries past the vetting to an address it never saw.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  auto_decompress=False)
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        settings = self._settings()
        started = time.perf_counter()
        if url.startswith("http://") and not settings.allow_http:
            return Outcome(None, "plain http is not allowed (webhooks.allow_http)", 0.0)
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=settings.timeout)) as resp:
                # The answer's body is not ours to keep; a little is read so the
                # connection can be reused.
                await resp.content.read(4096)
                status = resp.status
                error = None if 200 <= status < 300 else _status_error(resp)
        except asyncio.TimeoutError:
            status, error = None, f"no answer within {settings.timeout:g}s"
        except aiohttp.ClientConnectorError as exc:
            status, error = None, _short(str(exc.os_error) or type(exc).__name__)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            status, error = None, _short(f"{type(exc).__name__}: {exc}")
        return Outcome(status, error, (time.perf_counter() - started) * 1000.0)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _status_error(resp: aiohttp.ClientResponse) -> str:
    if 300 <= resp.status < 400:
        return f"answered {resp.status}; redirects are not followed"
    return f"answered {resp.status}"


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


class Deliverer:
    def __init__(self, store: Store, client: WebhookClient, settings: Callable[[], WebhookSettings], *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 owner: str | None = None) -> None:
        self._store = store
        self._owner = owner or worker_slot()
        self._released = False
        self._client = client
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self.sent = 0
        self.delivered = 0

    def kick(self) -> None:
        """Look for due deliveries now (after a commit that added some)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery round failed; retrying at the next poll")
            await self._sleep()

    async def _sleep(self) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self._settings().poll_interval)
        except asyncio.TimeoutError:
            pass

    async def run_once(self) -> int:
        """Start sending every due delivery not already in flight; returns how many started."""
        if not self._released:
            await self._store.write(lambda conn: release_claims(conn, self._owner))
            self._released = True
        now = self._clock()
        due = await self._store.read(lambda conn: due_deliveries(conn, now, BATCH + len(self._in_flight)))
        due = [item for item in due if item.delivery_id not in self._in_flight]
        if not due:
            return 0  # an idle poll stays a read
        # The lease outlives the attempt (its timeout) with room for the write after it;
        # a worker killed mid-attempt leaves it to expire, and another retries.
        until = now + self._settings().timeout + LEASE_MARGIN_S
        ids = [item.delivery_id for item in due]
        claimed = await self._store.write(lambda conn: claim(conn, ids, now, until, self._owner))
        started = 0
        for item in due:
            if item.delivery_id not in claimed:
                continue
            self._in_flight.add(item.delivery_id)
            task = asyncio.create_task(self._deliver(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def drain(self) -> None:
        """Wait for the attempts in flight (tests; shutdown cancels them instead)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _secret_key(self, due: Due) -> bytes | None:
        settings = self._settings()
        if due.source == "config":
            spec = next((e for e in settings.endpoints if e.name == due.name), None)
            secret = spec.secret if spec is not None else None
        elif settings.encryption_key is None or due.secret_ciphertext is None:
            secret = None
        else:
            secret = SecretBox(settings.encryption_key).open(due.secret_ciphertext, due.endpoint_id)
        if not secret:
            return None
        try:
            return signing.secret_key(secret)
        except signing.BadSecret:
            return None

    async def _deliver(self, due: Due) -> None:
        try:
            key = self._secret_key(due)
            if key is None:
                outcome = Outcome(None, "the endpoint's secret is unavailable (encryption key or "
                                        "secret environment variable changed)", 0.0)
            else:
                body = body_of(due)
                headers = signing.headers(key, due.event_id, int(self._clock()), body)
                outcome = await self._client.post(due.url, body, headers)
            self.sent += 1
            if outcome.delivered:
                self.delivered += 1
            now = self._clock()
            retry_in = None if outcome.delivered else next_delay(due.attempts + 1, self._rng)
            await self._store.write(lambda conn: record_outcome(conn, due, outcome, now=now, retry_in=retry_in))
            if not outcome.delivered:
                log.warning("webhook delivery %d of %s to endpoint %d failed (%s)%s", due.delivery_id,
                            due.event_id, due.endpoint_id, outcome.error,
                            "" if retry_in is None or outcome.status == 410 else f"; retry in {retry_in:.0f}s")
        finally:
            self._in_flight.discard(due.delivery_id)

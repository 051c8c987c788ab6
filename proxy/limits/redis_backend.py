"""The shared limiter: every limit of a request reserved by one Redis script.

`RedisLimiter` implements the limiter seam (interface.py) for any number of
gateway processes and machines sharing one Redis:

- `admit` is a coroutine: one EVALSHA (redis_scripts.ADMIT) checks and takes
  rpm, tpm, concurrency, the day and month quotas and the worst-case cost at
  once, with Redis's clock. The script returns the state it judged, and the
  in-process limiter's own code (limiter.py) is run on that state to word the
  refusal and the x-ratelimit-* headers, so both backends say exactly the
  same thing.
- `settle` and `release` keep the seam's synchronous signature: each starts a
  task running its script (accounting must not wait on Redis), tracked so
  that `close` lets them finish.
- Holds carry a deadline `hold_ttl` ahead; one task per process renews all of
  its live holds in one script call every `renew_interval`. A killed worker's
  holds stop being renewed and stop counting as in flight within hold_ttl;
  their estimate stays charged (what the request used is unknown).
- The database is the source of truth for quotas and budgets. A marker key
  says Redis holds them; without it (first start, or a Redis that restarted
  empty) admission stops, every process puts back the holds it still has in
  flight, and one of them, after a grace period that lets the others do so
  and flush their usage rows, adds the rollups' totals and sets the marker.
- Redis unreachable, or being restored: a request with any quota or budget
  is refused with 503 `limits_unavailable` (admitting blind could overspend
  it); one limited only by rpm/tpm/concurrency is admitted by an in-process
  limiter holding this worker's share (limit ÷ workers). A probe reconnects
  every `probe_interval` and the shared limits resume by themselves.

The clock: Redis's `TIME`. `clock` (tests only) passes "now" into every script
instead, so windows can be stepped exactly as the in-process tests step them;
`clock="redis-key"` makes the scripts read "now" from a Redis key, which lets a
test move the clock of several gateway processes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from datetime import date
from typing import Any, Awaitable, Callable, Iterable, Mapping

from ..auth.principal import Principal
from ..cancel import cancel_and_wait
from ..config.snapshot import PlanConfig
from ..errors import LimitsUnavailable, QuotaExceeded, RateLimited
from . import redis_scripts
from .bucket import TokenBucket
from .limiter import (_ACCOUNT, _KEY, Limiter, Reservation, _configure_key, _configure_user,
                      _Subject, _take)
from .quotas import NANO_PER_USD, WindowTotals

log = logging.getLogger("bluesminds.limits")

REDIS_KEY_CLOCK = "redis-key"
# Seconds a request waits for Redis before the worker treats it as down.
SOCKET_TIMEOUT = 1.0
# Waiting for a pooled connection is queueing behind this worker's own burst,
# not an outage: a starved worker must not declare Redis down for it.
POOL_WAIT = 5.0
MAX_CONNECTIONS = 32
_EPOCH = date(1970, 1, 1).toordinal()

Clock = Callable[[], float]
TotalsLoader = Callable[[float], Awaitable[Iterable[WindowTotals]]]


class RedisHold:
    """A hold in Redis: its id, what to undo or correct, and the header numbers."""

    __slots__ = ("hold_id", "user_id", "key_id", "per_user", "tokens", "cost_nano", "day",
                 "month", "reserved_a", "reserved_b", "a_tpm", "b_tpm", "view", "open")

    @property
    def estimated_tokens(self) -> int:
        return self.tokens

    @property
    def estimated_cost(self) -> float:
        return self.cost_nano / NANO_PER_USD

    @property
    def user(self):
        """The user's counters as of the admission (a copy; Redis has the live ones)."""
        return self.view.user

    @property
    def key(self):
        return self.view.key

    def __repr__(self) -> str:
        return f"<RedisHold {self.hold_id} {'open' if self.open else 'closed'} tokens={self.tokens}>"


@dataclasses.dataclass(frozen=True, slots=True)
class _Limits:
    """The effective limits of one (plan, key limits) pair, as the script reads them."""

    plan: PlanConfig
    limits: Any
    args: tuple[str, ...]  # ARGV[3:19]
    has_quota: bool


class RedisLimiter:
    def __init__(self, url: str, *, hold_ttl: float = 30.0, workers: int = 1,
                 load_totals: TotalsLoader | None = None, clock: Clock | str | None = None,
                 grace: float | None = None, namespace: str = "bm", probe_interval: float = 0.5,
                 on_state: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.hold_ttl = hold_ttl
        self.renew_interval = min(hold_ttl / 3, 1.0)
        # How long the seeding process waits for the others to put their holds
        # back (they notice within one renewal) and flush their usage rows.
        self.grace = self.renew_interval + 0.5 if grace is None else grace
        self.workers = max(1, workers)
        self.probe_interval = probe_interval
        self._load_totals = load_totals
        self._now_arg: Callable[[], str]
        if clock is None:
            self._now_arg = lambda: ""
            local_clock: Clock = _wall
        elif clock == REDIS_KEY_CLOCK:
            self._now_arg = lambda: "@"
            local_clock = _wall
        else:
            self._now_arg = lambda: repr(float(clock()))
            local_clock = clock
        self._ns = namespace
        self._marker = f"{namespace}:seeded"
        self._seq = f"{namespace}:seq"
        self._clock_key = f"{namespace}:test:now"
        self._seed_lock = f"{namespace}:seeding"
        # Runs the in-process limiter's code on the state a script returned.
        self._view = Limiter(clock=local_clock)
        # While Redis is out: this worker's share of rpm/tpm/concurrency.
        self._fallback = Limiter(clock=local_clock)
        self._shares: dict[tuple[int, int], tuple[PlanConfig, Any, PlanConfig, Any]] = {}
        self._limits: dict[tuple[int, int], _Limits] = {}
        self._live: dict[int, RedisHold] = {}
        self._pending: set[asyncio.Task] = set()
        self._tasks: list[asyncio.Task] = []
        self._client = None
        self._scripts: dict[str, Any] = {}
        self._state = "starting"  # up | down | restoring
        self._restoring: asyncio.Task | None = None
        self._closing = False
        self._was_up = False
        self._on_state = on_state
        self.fail_closed = 0  # requests refused because quotas could not be checked
        self.fallbacks = 0  # requests admitted on this worker's share while Redis was out

    # -- lifecycle --------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def clock(self) -> Clock:
        return self._view.clock

    async def start(self) -> None:
        """Connect, and make sure Redis holds the quotas before admitting anything
        against them. A Redis that cannot be reached is not fatal: the worker
        starts degraded and reconnects by itself."""
        import redis.asyncio as aioredis

        # A bounded pool that makes a burst wait for a connection: one admission
        # is one short script, so a few dozen connections carry thousands a second.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT,
            socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
            decode_responses=True)
        self._client = aioredis.Redis(connection_pool=pool)
        for name in ("ADMIT", "FINISH", "SEED", "RENEW", "RESTORE"):
            self._scripts[name] = self._client.register_script(getattr(redis_scripts, name))
        try:
            await self._restore()
        except _REDIS_ERRORS as exc:
            self._down(exc)
        self._tasks.append(asyncio.create_task(self._renew_forever(), name="limiter-renew"))

    async def close(self) -> None:
        self._closing = True  # no reconnect or restore starts from here on
        tasks = [*self._tasks, *([self._restoring] if self._restoring else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            # Cancelled again if a Redis call swallowed it (proxy/cancel.py).
            with contextlib.suppress(*_REDIS_ERRORS):
                await cancel_and_wait(task)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_state is not None:
                self._on_state(state)

    def _down(self, exc: BaseException) -> None:
        if self._state != "down":
            log.error("the shared limiter at %s is unreachable (%s): requests with a quota or "
                      "budget are refused with 503 until it is back; rpm/tpm limits fall back "
                      "to this worker's share (1/%d)", self.url, exc, self.workers)
            self._set_state("down")
            if not self._closing and (self._restoring is None or self._restoring.done()):
                self._restoring = asyncio.create_task(self._reconnect(), name="limiter-reconnect")

    async def _reconnect(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                # Connections pooled before the outage were closed by the server
                # (or by a restart): drop them all, or each would fail once more.
                await self._client.connection_pool.disconnect()
                await self._client.ping()
                await self._restore()
                return
            except _REDIS_ERRORS:
                continue

    def _lost(self) -> None:
        """Redis answers but forgot the quotas (it restarted empty)."""
        if self._state == "up":
            log.error("the shared limiter at %s lost its data; restoring quotas from the "
                      "database, and refusing requests with a quota meanwhile", self.url)
        if not self._closing and (self._restoring is None or self._restoring.done()):
            self._set_state("restoring")
            self._restoring = asyncio.create_task(self._restore_or_retry(),
                                                  name="limiter-restore")

    async def _restore_or_retry(self) -> None:
        try:
            await self._restore()
        except _REDIS_ERRORS as exc:
            self._restoring = None
            self._down(exc)

    async def _restore(self) -> None:
        """Ensure the marker: put back this process's holds, then seed (one process
        does, the others wait for its marker)."""
        client = self._client
        if await client.exists(self._marker):
            self._up()
            return
        self._set_state("restoring")
        await self._restore_holds()
        if await client.set(self._seed_lock, "1", nx=True, px=int((self.grace + 30) * 1000)):
            await asyncio.sleep(self.grace)
            totals = []
            if self._load_totals is not None:
                totals = list(await self._load_totals(self._view.clock()))
            seeded = await self._seed(totals)
            await client.delete(self._seed_lock)
            if seeded >= 0:
                log.info("shared limiter seeded from the database: %d users and keys", seeded)
        else:
            deadline = asyncio.get_running_loop().time() + self.grace + 30
            while not await client.exists(self._marker):
                if asyncio.get_running_loop().time() > deadline:
                    raise ConnectionError("no process finished seeding the shared limiter")
                await asyncio.sleep(0.05)
        self._up()

    def _up(self) -> None:
        if self._state in ("down", "restoring") and self._was_up:
            log.warning("the shared limiter at %s is back; quotas are enforced across workers "
                        "again", self.url)
        self._set_state("up")
        self._was_up = True

    async def _restore_holds(self) -> None:
        now = self._now_arg()
        ttl = repr(float(self.hold_ttl))
        restore = self._scripts["RESTORE"]
        for hold in list(self._live.values()):
            if hold.open:
                await restore(keys=self._subject_keys(hold.user_id, hold.key_id)[:3]
                              + [self._clock_key],
                              args=[now, ttl, hold.hold_id, hold.tokens, hold.cost_nano, hold.day,
                                    hold.month])

    # -- admission --------------------------------------------------------------

    @property
    def on_quota_refused(self) -> list:
        """Listeners told of each quota or budget refusal, as the in-process limiter's are."""
        return self._view.on_quota_refused

    def admit(self, principal: Principal, plan: PlanConfig, *, estimated_tokens: int,
              estimated_cost: float) -> Awaitable[RedisHold | Reservation]:
        return self._admit(principal, plan, estimated_tokens, estimated_cost)

    async def _admit(self, principal: Principal, plan: PlanConfig, estimated_tokens: int,
                     estimated_cost: float) -> RedisHold | Reservation:
        tokens = estimated_tokens if estimated_tokens > 0 else 0
        cost = round(estimated_cost * NANO_PER_USD) if estimated_cost > 0 else 0
        limits = self._limits_of(plan, principal)
        if self._state != "up":
            return self._degraded(principal, plan, limits, estimated_tokens, estimated_cost)
        key_id = principal.key_id if principal.key_id is not None else ~principal.user_id
        keys = self._subject_keys(principal.user_id, key_id)
        try:
            out = await self._scripts["ADMIT"](
                keys=keys, args=[self._now_arg(), repr(float(self.hold_ttl)), *limits.args,
                                 str(tokens), str(cost)])
        except _REDIS_ERRORS as exc:
            self._down(exc)
            return self._degraded(principal, plan, limits, estimated_tokens, estimated_cost)
        if out[0] == "unseeded":
            self._lost()
            return self._degraded(principal, plan, limits, estimated_tokens, estimated_cost)
        return self._judged(out, principal, plan, key_id, tokens, cost)

    def _judged(self, out: list, principal: Principal, plan: PlanConfig, key_id: int,
                tokens: int, cost: int) -> RedisHold:
        """Word the script's verdict with the in-process limiter's code."""
        now = float(out[1])
        view = self._view
        cal = view._calendar.at(now)  # noqa: SLF001 - the same package's limiter
        user = _Subject(_ACCOUNT, cal.day_index, cal.month_index)
        _configure_user(user, plan, now, view.clock)
        key = _Subject(_KEY if key_id >= 0 else _ACCOUNT, cal.day_index, cal.month_index)
        _configure_key(key, plan, principal.limits, now, view.clock)
        key.inflight = int(out[3])
        ok = out[0] == "ok"
        base = 6 if ok else 4
        _load_state(user, out[base:base + 13])
        _load_state(key, out[base + 13:base + 26])
        a, b = (user, key) if plan.per_user else (key, None)
        if not ok:
            try:
                view._check(user, key, a, b, tokens, cost, now)  # noqa: SLF001 - raises the refusal
            except QuotaExceeded:
                if view.on_quota_refused:
                    view._report_refusal(principal, user, key, tokens, cost, now)  # noqa: SLF001
                raise
            log.warning("the shared limiter refused a request (%s) that the in-process check "
                        "admits", out[2])
            raise RateLimited("Rate limit reached; please try again in 1s.", retry_after=1.0)
        need_a, need_b = float(out[4]), float(out[5])
        r = _take(user, key, a, b, need_a, need_b, tokens, cost, cal.day_index, cal.month_index)
        view._header_numbers(r, now, user, key, a, b)  # noqa: SLF001
        hold = RedisHold()
        hold.hold_id = int(out[2])
        hold.user_id = principal.user_id
        hold.key_id = key_id
        hold.per_user = plan.per_user
        hold.tokens = tokens
        hold.cost_nano = cost
        hold.day = cal.day_index
        hold.month = cal.month_index
        hold.reserved_a = need_a
        hold.reserved_b = need_b
        hold.a_tpm = a.tpm is not None
        hold.b_tpm = b is not None and b.tpm is not None
        hold.view = r
        hold.open = True
        self._live[hold.hold_id] = hold
        return hold

    def _degraded(self, principal: Principal, plan: PlanConfig, limits: _Limits,
                  estimated_tokens: int, estimated_cost: float) -> Reservation:
        if limits.has_quota:
            self.fail_closed += 1
            raise LimitsUnavailable(
                "The gateway cannot check this account's quotas and budget right now (its "
                "shared limiter is unavailable), so the request was not sent; retry in a "
                "moment.", retry_after=1.0)
        self.fallbacks += 1
        plan, key_limits = self._share(plan, principal.limits)
        share = dataclasses.replace(principal, limits=key_limits)
        return self._fallback.admit(share, plan, estimated_tokens=estimated_tokens,
                                    estimated_cost=estimated_cost)

    def _share(self, plan: PlanConfig, key_limits) -> tuple[PlanConfig, Any]:
        ident = (id(plan), id(key_limits))
        cached = self._shares.get(ident)
        if cached is None or cached[0] is not plan or cached[1] is not key_limits:
            n = self.workers

            def part(value):
                # At least one each: a share of 0 would refuse a limit that is not spent.
                return None if value is None else max(1, value // n) if value else 0

            cached = (plan, key_limits,
                      dataclasses.replace(plan, rpm=part(plan.rpm), tpm=part(plan.tpm),
                                          max_concurrent=part(plan.max_concurrent)),
                      dataclasses.replace(key_limits, rpm=part(key_limits.rpm),
                                          tpm=part(key_limits.tpm),
                                          max_concurrent=part(key_limits.max_concurrent)))
            if len(self._shares) > 10_000:
                self._shares.clear()
            self._shares[ident] = cached
        return cached[2], cached[3]

    def _limits_of(self, plan: PlanConfig, principal: Principal) -> _Limits:
        key_limits = principal.limits
        ident = (id(plan), id(key_limits))
        cached = self._limits.get(ident)
        if cached is not None and cached.plan is plan and cached.limits is key_limits:
            return cached
        user = _Subject(_ACCOUNT, 0, 0)
        _configure_user(user, plan, 0.0, _wall)
        key = _Subject(_KEY, 0, 0)
        _configure_key(key, plan, key_limits, 0.0, _wall)
        args = [
            "1" if plan.per_user else "0",
            _cap(user.rpm), _cap(user.tpm), _cap(key.rpm), _cap(key.tpm),
            "" if key.max_concurrent is None else str(key.max_concurrent),
            *_quota_args(user.quota), *_quota_args(key.quota),
        ]
        cached = _Limits(plan, key_limits, tuple(args),
                         user.quota is not None or key.quota is not None)
        if len(self._limits) > 10_000:
            self._limits.clear()
        self._limits[ident] = cached
        return cached

    def _subject_keys(self, user_id: int, key_id: int) -> list[str]:
        ns = self._ns
        return [f"{ns}:u:{user_id}", f"{ns}:k:{key_id}", f"{ns}:c:{key_id}", self._marker,
                self._seq, self._clock_key]

    # -- the end of a request -----------------------------------------------------

    def settle(self, reservation, *, tokens: int, cost: float) -> None:
        if isinstance(reservation, Reservation):
            self._fallback.settle(reservation, tokens=tokens, cost=cost)
            return
        self._spawn(self.finish(reservation, "settle", tokens, cost))

    def release(self, reservation) -> None:
        if isinstance(reservation, Reservation):
            self._fallback.release(reservation)
            return
        self._spawn(self.finish(reservation, "release", 0, 0.0))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the settlements already started (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def finish(self, hold: RedisHold, mode: str, tokens: int, cost: float) -> None:
        """Settle or release `hold` now; what `settle` and `release` start."""
        if not hold.open:
            return
        hold.open = False
        self._live.pop(hold.hold_id, None)
        tokens = tokens if tokens > 0 else 0
        cost_nano = round(cost * NANO_PER_USD) if cost > 0 else 0
        keys = self._subject_keys(hold.user_id, hold.key_id)
        try:
            await self._scripts["FINISH"](keys=keys, args=[
                self._now_arg(), hold.hold_id, mode, tokens, cost_nano, hold.tokens,
                hold.cost_nano, hold.day, hold.month, "u" if hold.per_user else "k",
                repr(float(hold.reserved_a)), "1" if hold.a_tpm else "0",
                "1" if hold.b_tpm else "0", repr(float(hold.reserved_b))])
        except _REDIS_ERRORS as exc:
            # The estimate stays charged and the hold expires: over-counted until the
            # window turns, never under.
            log.warning("could not %s a hold in the shared limiter (%s); its estimate stays "
                        "charged", mode, exc)

    def headers(self, reservation) -> dict[str, str]:
        if isinstance(reservation, Reservation):
            return self._fallback.headers(reservation)
        return self._view.headers(reservation.view)

    # -- renewal --------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            if self._state != "up":
                continue
            try:
                await self.renew()
            except _REDIS_ERRORS as exc:
                self._down(exc)

    async def renew(self) -> None:
        """Push the deadline of every live hold of this process, in one script call
        per thousand; notice a Redis that lost its data."""
        holds = [h for h in self._live.values() if h.open]
        batches = [holds[i:i + 1000] for i in range(0, len(holds), 1000)] or [[]]
        ns = self._ns
        for batch in batches:
            seeded, lost = await self._scripts["RENEW"](
                keys=[self._marker, self._clock_key, *(f"{ns}:c:{h.key_id}" for h in batch)],
                args=[self._now_arg(), repr(float(self.hold_ttl)), *(h.hold_id for h in batch)])
            if not int(seeded):
                self._lost()
                return
            for hold_id in lost:
                # Expired while this process was too busy to renew: its estimate stands.
                hold = self._live.pop(int(hold_id), None)
                if hold is not None:
                    log.warning("hold %s expired before its request ended", hold_id)

    # -- state ------------------------------------------------------------------------

    def seed(self, totals: Iterable[WindowTotals]) -> Awaitable[int]:
        return self._seed(list(totals))

    async def _seed(self, totals: list[WindowTotals]) -> int:
        """Add persisted usage to Redis and set the marker, unless it is already
        set (another process seeded). Returns how many subjects, or -1."""
        keys = [self._marker, self._clock_key]
        args: list[Any] = [self._now_arg()]
        ns = self._ns
        for t in totals:
            if t.scope == "user":
                keys.append(f"{ns}:u:{t.id}")
            elif t.scope == "key":
                keys.append(f"{ns}:k:{t.id}")
            else:
                raise ValueError(f"WindowTotals.scope must be 'user' or 'key', got {t.scope!r}")
            year, month = t.month.split("-")
            args += [date.fromisoformat(t.day).toordinal() - _EPOCH,
                     int(year) * 12 + int(month) - 1, t.requests_day, t.tokens_day,
                     t.requests_month, t.tokens_month, round(t.cost_month * NANO_PER_USD)]
        return int(await self._scripts["SEED"](keys=keys, args=args))

    def forget_plans(self, live_plans: Mapping[str, PlanConfig]) -> None:
        """Bucket state lives in Redis and carries over, as the in-process limiter's does."""
        self._limits.clear()
        self._shares.clear()
        self._fallback.forget_plans(live_plans)

    def prune(self) -> int:
        """Idle state in the fallback; Redis itself keeps what it holds."""
        return self._fallback.prune()

    async def set_test_clock(self, now: float | None) -> None:
        """Test hook for `clock="redis-key"`: every process's scripts read this now."""
        if now is None:
            await self._client.delete(self._clock_key)
        else:
            await self._client.set(self._clock_key, repr(float(now)))


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, asyncio.TimeoutError)


_REDIS_ERRORS = _redis_errors()


def _wall() -> float:
    import time

    return time.time()


def _cap(bucket: TokenBucket | None) -> str:
    return "" if bucket is None else repr(float(bucket.capacity))


def _quota_args(q) -> list[str]:
    if q is None:
        return ["", "", "", "", ""]
    return ["" if v is None else str(v)
            for v in (q.requests_day, q.tokens_day, q.requests_month, q.tokens_month,
                      q.budget_nano)]


def _load_state(s: _Subject, v: list) -> None:
    """A subject's state as the script judged it (buckets refilled to now)."""
    for bucket, (level, stamp) in ((s.rpm, v[0:2]), (s.tpm, v[3:5])):
        if bucket is not None and level != "":
            bucket.level = float(level)
            bucket.stamp = float(stamp)
    u = s.usage
    u.day, u.month = int(v[6]), int(v[7])
    u.requests_day, u.tokens_day = int(v[8]), int(v[9])
    u.requests_before, u.tokens_before, u.cost_month = int(v[10]), int(v[11]), int(v[12])

"""The limiter: admit a /v1 request against its plan and key, then settle it.

`admit`, `settle` and `release` never await. Under asyncio nothing else runs
between a check and the take that follows it, so 500 concurrent admits
against a quota of 100 admit exactly 100, with no lock.

Who is limited where:

    rpm / tpm buckets   the key; the user instead when the plan is `per_user`
                        (plus the key's own bucket if its KeyLimits are
                        tighter), and the user for a principal without a key
    max_concurrent      the key (the user for a principal without a key)
    day/month quotas,   the user, by the plan's numbers, and the key, by its
    monthly budget      own KeyLimits; both count in-flight reservations

A key's limits only tighten the plan's: each effective limit is the smaller
of the two that are set.

Reserve, then settle: admission takes one request and the estimated tokens
and cost; `settle` swaps the estimate for the real usage, `release` gives
everything back except the rpm token (the request did happen). A tokens
estimate larger than a whole tpm bucket is clamped to the bucket's capacity,
otherwise the request could never be admitted; the real usage is charged in
full at settle, and the debt delays the next requests.

State lives in plain slotted objects per user and per key; the effective
limits are recomputed only when the plan or KeyLimits object changes
(a reload, a key edit), and calendar windows only when the day turns.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

from ..auth.principal import KeyLimits, Principal
from ..config.snapshot import PlanConfig
from ..errors import QuotaExceeded, RateLimited
from .bucket import EPSILON, TokenBucket
from .headers import DurationFormatter, rate_limit_headers
from .quotas import NANO_PER_USD, QuotaLimits, QuotaUsage, WindowTotals, quota_exceeded
from .windows import Calendar

# A concurrency slot frees when some other request ends, which cannot be
# predicted; this is only a hint for the client's backoff.
CONCURRENCY_RETRY_AFTER = 1.0

_KEY = "this key"
_ACCOUNT = "this account"


class _Subject:
    """Run-time state of one key or one user."""

    __slots__ = ("scope", "plan", "limits", "rpm", "tpm", "max_concurrent", "quota", "usage",
                 "inflight", "holds")

    def __init__(self, scope: str, day: int, month: int) -> None:
        self.scope = scope  # how messages name it
        self.plan: PlanConfig | None = None  # identity of what the limits below came from
        self.limits: KeyLimits | None = None
        self.rpm: TokenBucket | None = None
        self.tpm: TokenBucket | None = None
        self.max_concurrent: int | None = None
        self.quota: QuotaLimits | None = None
        self.usage = QuotaUsage(day, month)
        self.inflight = 0  # requests holding a concurrency slot here
        self.holds = 0  # open reservations pointing here; never drop while > 0

    def idle(self, now: float, day: int, month: int) -> bool:
        return (
            self.holds == 0
            and self.inflight == 0
            and (self.rpm is None or self.rpm.is_full(now))
            and (self.tpm is None or self.tpm.is_full(now))
            and self.usage.is_empty(day, month)
        )


class Reservation:
    """What one admitted request holds until it is settled or released."""

    __slots__ = ("user", "key", "slot", "tpm_a", "reserved_a", "tpm_b", "reserved_b",
                 "tokens", "cost_nano", "day", "month", "open",
                 "limit_requests", "remaining_requests", "reset_requests",
                 "limit_tokens", "remaining_tokens", "reset_tokens")

    @property
    def estimated_tokens(self) -> int:
        return self.tokens

    @property
    def estimated_cost(self) -> float:
        return self.cost_nano / NANO_PER_USD

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"<Reservation {state} tokens={self.tokens} cost_nano={self.cost_nano}>"


class Limiter:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._calendar = Calendar(clock())
        self._users: dict[int, _Subject] = {}
        self._keys: dict[int, _Subject] = {}
        self._duration = DurationFormatter()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # -- admission --------------------------------------------------------------

    def admit(self, principal: Principal, plan: PlanConfig, *, estimated_tokens: int,
              estimated_cost: float) -> Reservation:
        now = self._clock()
        cal = self._calendar.at(now)
        day = cal.day_index
        month = cal.month_index
        tokens = estimated_tokens if estimated_tokens > 0 else 0
        cost = round(estimated_cost * NANO_PER_USD) if estimated_cost > 0 else 0

        user = self._users.get(principal.user_id)
        if user is None:
            user = self._users[principal.user_id] = _Subject(_ACCOUNT, day, month)
        if user.plan is not plan:
            _configure_user(user, plan, now, self._clock)
        usage = user.usage
        if usage.day != day or usage.month != month:
            usage.roll(day, month)

        key_id = principal.key_id
        if key_id is None:
            key = None
            slot = user
            a = user
            b = None
        else:
            key = self._keys.get(key_id)
            if key is None:
                key = self._keys[key_id] = _Subject(_KEY, day, month)
            if key.plan is not plan or key.limits is not principal.limits:
                _configure_key(key, plan, principal.limits, now, self._clock)
            kusage = key.usage
            if kusage.day != day or kusage.month != month:
                kusage.roll(day, month)
            slot = key
            if plan.per_user:
                a = user
                b = key
            else:
                a = key
                b = None

        # Calendar quotas first: when both kinds are hit, "not before midnight"
        # is the answer that saves the client pointless retries.
        if user.quota is not None:
            which = usage.breach(user.quota, tokens, cost)
            if which is not None:
                raise self._quota_error(which, user, tokens, cost, now, user, key, a, b)
        if key is not None and key.quota is not None:
            which = key.usage.breach(key.quota, tokens, cost)
            if which is not None:
                raise self._quota_error(which, key, tokens, cost, now, user, key, a, b)

        cap = slot.max_concurrent
        if cap is not None and slot.inflight >= cap:
            raise self._concurrency_error(slot, now, user, key, a, b)

        rpm_a = a.rpm
        if rpm_a is not None and rpm_a.refill(now) + EPSILON < 1:
            raise self._bucket_error(rpm_a, a, 1, "requests", now, user, key, a, b)
        tpm_a = a.tpm
        if tpm_a is not None:
            clamp = tpm_a.capacity or 1
            need_a = tokens if tokens < clamp else clamp
            if tpm_a.refill(now) + EPSILON < need_a:
                raise self._bucket_error(tpm_a, a, need_a, "tokens", now, user, key, a, b)
        else:
            need_a = 0
        if b is not None:
            rpm_b = b.rpm
            if rpm_b is not None and rpm_b.refill(now) + EPSILON < 1:
                raise self._bucket_error(rpm_b, b, 1, "requests", now, user, key, a, b)
            tpm_b = b.tpm
            if tpm_b is not None:
                clamp = tpm_b.capacity or 1
                need_b = tokens if tokens < clamp else clamp
                if tpm_b.refill(now) + EPSILON < need_b:
                    raise self._bucket_error(tpm_b, b, need_b, "tokens", now, user, key, a, b)
            else:
                need_b = 0
        else:
            rpm_b = tpm_b = None
            need_b = 0

        # Every check passed: take everything at once.
        if rpm_a is not None:
            rpm_a.level -= 1
        if tpm_a is not None:
            tpm_a.level -= need_a
        if rpm_b is not None:
            rpm_b.level -= 1
        if tpm_b is not None:
            tpm_b.level -= need_b
        slot.inflight += 1
        user.holds += 1
        usage.reserve(tokens, cost)
        if key is not None:
            key.holds += 1
            key.usage.reserve(tokens, cost)

        r = Reservation()
        r.user = user
        r.key = key
        r.slot = slot
        r.tpm_a = tpm_a
        r.reserved_a = need_a
        r.tpm_b = tpm_b
        r.reserved_b = need_b
        r.tokens = tokens
        r.cost_nano = cost
        r.day = day
        r.month = month
        r.open = True
        (r.limit_requests, r.remaining_requests, r.reset_requests,
         r.limit_tokens, r.remaining_tokens, r.reset_tokens) = self._numbers(now, user, key, a, b)
        return r

    def settle(self, reservation: Reservation, *, tokens: int, cost: float) -> None:
        r = reservation
        if not r.open:
            return
        r.open = False
        now = self._clock()
        tokens = tokens if tokens > 0 else 0
        cost_nano = round(cost * NANO_PER_USD) if cost > 0 else 0
        if r.tpm_a is not None:
            r.tpm_a.adjust(r.reserved_a - tokens, now)
        if r.tpm_b is not None:
            r.tpm_b.adjust(r.reserved_b - tokens, now)
        d_tokens = tokens - r.tokens
        d_cost = cost_nano - r.cost_nano
        if d_tokens or d_cost:
            r.user.usage.correct(r.day, r.month, 0, d_tokens, d_cost)
            if r.key is not None:
                r.key.usage.correct(r.day, r.month, 0, d_tokens, d_cost)
        _unhold(r)

    def release(self, reservation: Reservation) -> None:
        r = reservation
        if not r.open:
            return
        r.open = False
        now = self._clock()
        if r.tpm_a is not None and r.reserved_a:
            r.tpm_a.adjust(r.reserved_a, now)
        if r.tpm_b is not None and r.reserved_b:
            r.tpm_b.adjust(r.reserved_b, now)
        r.user.usage.correct(r.day, r.month, -1, -r.tokens, -r.cost_nano)
        if r.key is not None:
            r.key.usage.correct(r.day, r.month, -1, -r.tokens, -r.cost_nano)
        _unhold(r)

    def headers(self, reservation: Reservation) -> dict[str, str]:
        r = reservation
        return rate_limit_headers(self._duration, r.limit_requests, r.remaining_requests,
                                  r.reset_requests, r.limit_tokens, r.remaining_tokens,
                                  r.reset_tokens)

    # -- state ------------------------------------------------------------------

    def seed(self, totals: Iterable[WindowTotals]) -> None:
        """Load persisted usage of the current windows (at startup, before
        traffic: the counters are set, not added to). Totals of a day or month
        that is already over are ignored."""
        now = self._clock()
        cal = self._calendar.at(now)
        for t in totals:
            if t.scope == "user":
                table, scope = self._users, _ACCOUNT
            elif t.scope == "key":
                table, scope = self._keys, _KEY
            else:
                raise ValueError(f"WindowTotals.scope must be 'user' or 'key', got {t.scope!r}")
            subject = table.get(t.id)
            if subject is None:
                subject = table[t.id] = _Subject(scope, cal.day_index, cal.month_index)
            subject.usage.load(t, cal.day, cal.month)

    def forget_plans(self, live_plans: Mapping[str, PlanConfig]) -> None:
        """After a reload. Buckets always carry over: a subject whose plan
        changed gets the new capacities on its next request (level clipped,
        never topped up), so a reload cannot be used to refill a bucket. A
        subject whose plan is gone lets go of the old plan object and is
        reconfigured from whatever plan its next request brings. Idle state
        is dropped."""
        for table in (self._users, self._keys):
            for subject in table.values():
                if subject.plan is not None and subject.plan.name not in live_plans:
                    subject.plan = None
        self.prune()

    def prune(self) -> int:
        """Drop users and keys with nothing to remember: no open reservation,
        full buckets, no usage in the current windows. Returns how many."""
        now = self._clock()
        cal = self._calendar.at(now)
        day, month = cal.day_index, cal.month_index
        dropped = 0
        for table in (self._users, self._keys):
            idle = [ident for ident, s in table.items() if s.idle(now, day, month)]
            for ident in idle:
                del table[ident]
            dropped += len(idle)
        return dropped

    def __len__(self) -> int:
        return len(self._users) + len(self._keys)

    # -- headers and errors -----------------------------------------------------

    def _numbers(self, now: float, user: _Subject, key: _Subject | None, a: _Subject,
                 b: _Subject | None) -> tuple:
        """The request and token limits closest to refusing this caller: of every
        limit that applies, the one with the least left. Ties go to the
        per-minute bucket, which is what OpenAI's headers describe."""
        lr = lt = None
        rr = rt = 0
        sr = st = 0.0
        for owner in (a, b):
            if owner is None:
                continue
            bucket = owner.rpm
            if bucket is not None:
                level = bucket.refill(now)
                left = int(level + EPSILON) if level > 0 else 0
                if lr is None or left < rr:
                    lr, rr, sr = int(bucket.capacity), left, bucket.time_to_full(now)
            bucket = owner.tpm
            if bucket is not None:
                level = bucket.refill(now)
                left = int(level + EPSILON) if level > 0 else 0
                if lt is None or left < rt:
                    lt, rt, st = int(bucket.capacity), left, bucket.time_to_full(now)
        cal = self._calendar
        for owner in (user, key):
            if owner is None or owner.quota is None:
                continue
            q = owner.quota
            u = owner.usage
            for limit, used, end, is_tokens in (
                (q.requests_day, u.requests_day, cal.day.end, False),
                (q.requests_month, u.requests_month, cal.month.end, False),
                (q.tokens_day, u.tokens_day, cal.day.end, True),
                (q.tokens_month, u.tokens_month, cal.month.end, True),
            ):
                if limit is None:
                    continue
                left = limit - used if used < limit else 0
                if is_tokens:
                    if lt is None or left < rt:
                        lt, rt, st = limit, left, end - now
                elif lr is None or left < rr:
                    lr, rr, sr = limit, left, end - now
        return lr, rr, sr, lt, rt, st

    def _headers_now(self, now, user, key, a, b) -> dict[str, str]:
        return rate_limit_headers(self._duration, *self._numbers(now, user, key, a, b))

    def _quota_error(self, which, owner, tokens, cost, now, user, key, a, b) -> QuotaExceeded:
        cal = self._calendar
        return quota_exceeded(
            which, scope=owner.scope, limits=owner.quota, usage=owner.usage, tokens=tokens,
            cost=cost, day=cal.day, month=cal.month, now=now, duration=self._duration,
            headers=self._headers_now(now, user, key, a, b),
        )

    def _concurrency_error(self, slot, now, user, key, a, b) -> RateLimited:
        wait = CONCURRENCY_RETRY_AFTER
        return RateLimited(
            f"Too many requests in flight on {slot.scope}: limit {slot.max_concurrent} at a "
            f"time. Please try again in {self._duration(wait)}.",
            retry_after=wait, type="requests", headers=self._headers_now(now, user, key, a, b),
        )

    def _bucket_error(self, bucket, owner, need, kind, now, user, key, a, b
                      ) -> RateLimited | QuotaExceeded:
        headers = self._headers_now(now, user, key, a, b)
        label = "requests per minute (rpm)" if kind == "requests" else "tokens per minute (tpm)"
        capacity = int(bucket.capacity)
        if capacity == 0:
            return QuotaExceeded(
                f"The limits of {owner.scope} allow 0 {label}; ask for a plan or key limit "
                f"above 0.", headers=headers)
        wait = bucket.wait(need, now)
        level = bucket.level
        used = capacity - (int(level + EPSILON) if level > 0 else 0)
        requested = f", requested {need}" if kind == "tokens" else ""
        return RateLimited(
            f"Rate limit reached for {label} on {owner.scope}: limit {capacity}, used {used}"
            f"{requested}. Please try again in {self._duration(wait)}.",
            retry_after=wait, type=kind, headers=headers,
        )


def _unhold(r: Reservation) -> None:
    r.slot.inflight -= 1
    r.user.holds -= 1
    if r.key is not None:
        r.key.holds -= 1


def _tighter(plan_value, key_value):
    if plan_value is None:
        return key_value
    if key_value is None or plan_value <= key_value:
        return plan_value
    return key_value


def _bucket(current: TokenBucket | None, capacity: int | None, now: float,
            clock: Callable[[], float]) -> TokenBucket | None:
    if capacity is None:
        return None
    if current is None:
        return TokenBucket(capacity, clock=clock, now=now)
    if current.capacity != capacity:
        current.resize(capacity, now)
    return current


def _configure_user(user: _Subject, plan: PlanConfig, now: float, clock) -> None:
    user.plan = plan
    user.rpm = _bucket(user.rpm, plan.rpm, now, clock)
    user.tpm = _bucket(user.tpm, plan.tpm, now, clock)
    user.max_concurrent = plan.max_concurrent
    user.quota = QuotaLimits.of_plan(plan)


def _configure_key(key: _Subject, plan: PlanConfig, limits: KeyLimits, now: float, clock) -> None:
    key.plan = plan
    key.limits = limits
    if plan.per_user:
        # The user's bucket already enforces the plan; the key keeps a bucket
        # only for a limit of its own that is stricter still.
        rpm = limits.rpm if limits.rpm is not None and (plan.rpm is None or limits.rpm < plan.rpm) else None
        tpm = limits.tpm if limits.tpm is not None and (plan.tpm is None or limits.tpm < plan.tpm) else None
    else:
        rpm = _tighter(plan.rpm, limits.rpm)
        tpm = _tighter(plan.tpm, limits.tpm)
    key.rpm = _bucket(key.rpm, rpm, now, clock)
    key.tpm = _bucket(key.tpm, tpm, now, clock)
    key.max_concurrent = _tighter(plan.max_concurrent, limits.max_concurrent)
    key.quota = QuotaLimits.of_key(limits)

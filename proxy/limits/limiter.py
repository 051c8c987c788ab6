"""The limiter: admit a /v1 request against its plan and key, then settle it.

`admit`, `settle` and `release` never await. Under asyncio nothing else runs
between a check and the take that follows it, so 500 concurrent admits
against a quota of 100 admit exactly 100, with no lock. (The flip side: one
Limiter belongs to one event loop; it is not for sharing between threads.)

Who is limited where:

    rpm / tpm buckets   the key; the user instead when the plan is `per_user`
                        (plus the key's own bucket if its KeyLimits are
                        stricter than the plan)
    max_concurrent      the key
    day/month quotas,   the user, by the plan's numbers, and the key, by its
    monthly budget      own KeyLimits; both count in-flight reservations

A principal without a key id (a dashboard session, the admin key) is keyed
by its user: it gets a key-like state of its own under the user's id, so its
limits are the plan's, and it shares the user's quotas. A key's limits only
tighten the plan's: each effective limit is the smaller of the two that are
set.

Reserve, then settle: admission takes one request and the estimated tokens
and cost; `settle` swaps the estimate for the real usage, `release` gives
everything back except the rpm token (the request did happen). A tokens
estimate larger than a whole tpm bucket is clamped to the bucket's capacity,
otherwise the request could never be admitted; the real usage is charged in
full at settle, and the debt delays the next requests. A reservation belongs
to the day and month it was admitted in: if that window has turned by the
time it settles, the new window's counters are left alone.

The x-ratelimit-* numbers describe, of all the request limits and of all the
token limits that apply, the one with the least left: usually the rpm/tpm
bucket, but a nearly spent daily quota takes over, so that "remaining" never
promises more than the gateway will admit. A dimension with no limit at all
gets no headers.

State lives in plain slotted objects per user and per key; the effective
limits are recomputed only when the plan or KeyLimits object changes (a
reload, a key edit), and calendar windows only when the day turns. `prune`
drops users and keys that have nothing left to remember.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

from ..auth.principal import KeyLimits, Principal
from ..config.snapshot import PlanConfig
from ..errors import QuotaExceeded, RateLimited
from .bucket import EPSILON, TokenBucket
from .headers import (LIMIT_REQUESTS, LIMIT_TOKENS, REMAINING_REQUESTS, REMAINING_TOKENS,
                      RESET_REQUESTS, RESET_TOKENS, DurationFormatter, rate_limit_headers)
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
                 "inflight")

    def __init__(self, scope: str, day: int, month: int) -> None:
        self.scope = scope  # how messages name it
        self.plan: PlanConfig | None = None  # identity of what the limits below came from
        self.limits: KeyLimits | None = None
        self.rpm: TokenBucket | None = None
        self.tpm: TokenBucket | None = None
        self.max_concurrent: int | None = None
        self.quota: QuotaLimits | None = None
        self.usage = QuotaUsage(day, month)
        # Open reservations pointing here. On a key it is the concurrency
        # count; on both it keeps `prune` from dropping state still in use.
        self.inflight = 0

    def idle(self, now: float, month: int) -> bool:
        return (
            self.inflight == 0
            and (self.rpm is None or self.rpm.is_full(now))
            and (self.tpm is None or self.tpm.is_full(now))
            and self.usage.is_empty(month)
        )


class Reservation:
    """What one admitted request holds until it is settled or released, and
    the rate-limit numbers as of its admission."""

    __slots__ = ("user", "key", "tpm_a", "reserved_a", "tpm_b", "reserved_b",
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
        state = "open" if getattr(self, "open", False) else "closed"
        return f"<Reservation {state} tokens={getattr(self, 'tokens', 0)}>"


class Limiter:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._calendar = Calendar(clock())
        self._users: dict[int, _Subject] = {}
        # Real keys by id; a principal without a key is a pseudo-key under
        # ~user_id (negative, so it never meets a real key id).
        self._keys: dict[int, _Subject] = {}
        self._duration = DurationFormatter()
        # Called on a quota refusal with (principal, which quota, "account" | "key", now);
        # synchronous and on the request path, so a listener only queues.
        self.on_quota_refused: list[Callable[[Principal, str, str, float], None]] = []

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # -- admission --------------------------------------------------------------

    def admit(self, principal: Principal, plan: PlanConfig, *, estimated_tokens: int,
              estimated_cost: float) -> Reservation:
        """Find the request's subjects, check every limit, then take from all of
        them at once: a refused request changes nothing."""
        now = self._clock()
        cal = self._calendar.at(now)
        tokens = estimated_tokens if estimated_tokens > 0 else 0
        cost = round(estimated_cost * NANO_PER_USD) if estimated_cost > 0 else 0
        user, key = self._find(principal, plan, now, cal.day_index, cal.month_index)
        # Whose buckets rate-limit the request: the user's on a per-user plan
        # (plus the key's own stricter ones), otherwise the key's alone.
        a, b = (user, key) if plan.per_user else (key, None)
        try:
            need_a, need_b = self._check(user, key, a, b, tokens, cost, now)
        except QuotaExceeded:
            if self.on_quota_refused:
                self._report_refusal(principal, user, key, tokens, cost, now)
            raise
        r = _take(user, key, a, b, need_a, need_b, tokens, cost, cal.day_index, cal.month_index)
        self._header_numbers(r, now, user, key, a, b)
        return r

    def _find(self, principal: Principal, plan: PlanConfig, now: float, day: int,
              month: int) -> tuple[_Subject, _Subject]:
        """The user's and the key's state, configured for this plan and rolled to today."""
        user_id = principal.user_id
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _Subject(_ACCOUNT, day, month)
        if user.plan is not plan:
            _configure_user(user, plan, now, self._clock)
        usage = user.usage
        if usage.day != day or usage.month != month:
            usage.roll(day, month)

        key_id = principal.key_id
        if key_id is None:
            key_id = ~user_id
        key = self._keys.get(key_id)
        if key is None:
            scope = _KEY if key_id >= 0 else _ACCOUNT
            key = self._keys[key_id] = _Subject(scope, day, month)
        if key.plan is not plan or key.limits is not principal.limits:
            _configure_key(key, plan, principal.limits, now, self._clock)
        usage = key.usage
        if usage.day != day or usage.month != month:
            usage.roll(day, month)
        return user, key

    def _report_refusal(self, principal: Principal, user: _Subject, key: _Subject, tokens: int,
                        cost: int, now: float) -> None:
        """Which quota refused the request, judged as `_check` did (off the
        admitted path: only a refusal pays for it)."""
        for scope, subject in (("account", user), ("key", key)):
            which = subject.usage.breach(subject.quota, tokens, cost) if subject.quota else None
            if which is not None:
                for listener in self.on_quota_refused:
                    listener(principal, which, scope, now)
                return

    def _check(self, user: _Subject, key: _Subject, a: _Subject, b: _Subject | None,
               tokens: int, cost: int, now: float) -> tuple[float, float]:
        """Raise the error of the first limit the request would break; return
        the tokens to reserve in a's and b's tpm buckets."""
        # Calendar quotas first: when both kinds are hit, "not before midnight"
        # is the answer that saves the client pointless retries.
        if user.quota is not None:
            which = user.usage.breach(user.quota, tokens, cost)
            if which is not None:
                raise self._quota_error(which, user, tokens, cost, now, user, key, a, b)
        if key.quota is not None:
            which = key.usage.breach(key.quota, tokens, cost)
            if which is not None:
                raise self._quota_error(which, key, tokens, cost, now, user, key, a, b)
        cap = key.max_concurrent
        if cap is not None and key.inflight >= cap:
            raise self._concurrency_error(now, user, key, a, b)
        need_a = self._check_buckets(a, tokens, now, user, key, a, b)
        need_b = self._check_buckets(b, tokens, now, user, key, a, b) if b is not None else 0
        return need_a, need_b

    def _check_buckets(self, owner: _Subject, tokens: int, now: float, user: _Subject,
                       key: _Subject, a: _Subject, b: _Subject | None) -> float:
        rpm = owner.rpm
        if rpm is not None and not rpm.can_take(1, now):
            raise self._bucket_error(rpm, owner, 1, "requests", now, user, key, a, b)
        tpm = owner.tpm
        if tpm is None:
            return 0
        need = tpm.fit(tokens)
        if not tpm.can_take(need, now):
            raise self._bucket_error(tpm, owner, need, "tokens", now, user, key, a, b)
        return need

    def _header_numbers(self, r: Reservation, now: float, user: _Subject, key: _Subject,
                        a: _Subject, b: _Subject | None) -> None:
        """The x-ratelimit-* numbers as of this admission: a's buckets, then
        whatever has less left (b's buckets, the calendar quotas)."""
        if a.rpm is not None:
            r.limit_requests, r.remaining_requests, r.reset_requests = a.rpm.header_numbers()
        else:
            r.limit_requests, r.remaining_requests, r.reset_requests = None, 0, 0.0
        if a.tpm is not None:
            r.limit_tokens, r.remaining_tokens, r.reset_tokens = a.tpm.header_numbers()
        else:
            r.limit_tokens, r.remaining_tokens, r.reset_tokens = None, 0, 0.0
        if b is not None or user.quota is not None or key.quota is not None:
            self._tighten(r, now, user, key, b)

    def settle(self, reservation: Reservation, *, tokens: int, cost: float) -> None:
        r = reservation
        if not r.open:
            return
        r.open = False
        now = self._clock()
        tokens = tokens if tokens > 0 else 0
        bucket = r.tpm_a
        if bucket is not None:
            # TokenBucket.adjust, inlined: this runs once per request.
            level = bucket.level
            if now > bucket.stamp:
                level += (now - bucket.stamp) * bucket.rate
                bucket.stamp = now
            level += r.reserved_a - tokens
            bucket.level = level if level < bucket.capacity else bucket.capacity
        if r.tpm_b is not None:
            r.tpm_b.adjust(r.reserved_b - tokens, now)
        user = r.user
        key = r.key
        user.inflight -= 1
        key.inflight -= 1
        d_tokens = tokens - r.tokens
        d_cost = (round(cost * NANO_PER_USD) if cost > 0 else 0) - r.cost_nano
        if d_tokens or d_cost:
            usage = user.usage
            if usage.day == r.day:
                usage.tokens_day += d_tokens
                usage.cost_month += d_cost
            else:
                usage.correct(r.day, r.month, 0, d_tokens, d_cost)
            usage = key.usage
            if usage.day == r.day:
                usage.tokens_day += d_tokens
                usage.cost_month += d_cost
            else:
                usage.correct(r.day, r.month, 0, d_tokens, d_cost)

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
        r.key.usage.correct(r.day, r.month, -1, -r.tokens, -r.cost_nano)
        r.user.inflight -= 1
        r.key.inflight -= 1

    def headers(self, reservation: Reservation) -> dict[str, str]:
        r = reservation
        duration = self._duration
        if r.limit_requests is not None and r.limit_tokens is not None:
            return {
                LIMIT_REQUESTS: str(r.limit_requests),
                REMAINING_REQUESTS: str(r.remaining_requests),
                RESET_REQUESTS: duration(r.reset_requests),
                LIMIT_TOKENS: str(r.limit_tokens),
                REMAINING_TOKENS: str(r.remaining_tokens),
                RESET_TOKENS: duration(r.reset_tokens),
            }
        return rate_limit_headers(duration, r.limit_requests, r.remaining_requests,
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
        month = cal.month_index
        dropped = 0
        for table in (self._users, self._keys):
            idle = [ident for ident, s in table.items() if s.idle(now, month)]
            for ident in idle:
                del table[ident]
            dropped += len(idle)
        return dropped

    def __len__(self) -> int:
        return len(self._users) + len(self._keys)

    # -- headers and errors -----------------------------------------------------

    def _tighten(self, r: Reservation, now: float, user: _Subject, key: _Subject,
                 b: _Subject | None) -> None:
        """Let the second bucket and the calendar quotas take over the header
        numbers where they have less left (ties keep what is there, the
        per-minute bucket OpenAI's headers describe)."""
        if b is not None:
            if b.rpm is not None:
                _tighten_requests(r, *b.rpm.header_numbers())
            if b.tpm is not None:
                _tighten_tokens(r, *b.tpm.header_numbers())
        cal = self._calendar
        for owner in (user, key):
            q = owner.quota
            if q is None:
                continue
            u = owner.usage
            if q.requests_day is not None:
                _tighten_requests(r, q.requests_day, q.requests_day - u.requests_day,
                                  cal.day.end - now)
            if q.requests_month is not None:
                _tighten_requests(r, q.requests_month,
                                  q.requests_month - u.requests_before - u.requests_day,
                                  cal.month.end - now)
            if q.tokens_day is not None:
                _tighten_tokens(r, q.tokens_day, q.tokens_day - u.tokens_day, cal.day.end - now)
            if q.tokens_month is not None:
                _tighten_tokens(r, q.tokens_month,
                                q.tokens_month - u.tokens_before - u.tokens_day,
                                cal.month.end - now)

    def _headers_now(self, now, user, key, a, b) -> dict[str, str]:
        """The headers a refused request gets: the numbers as of now."""
        r = Reservation()
        r.limit_requests = r.limit_tokens = None
        r.remaining_requests = r.remaining_tokens = 0
        r.reset_requests = r.reset_tokens = 0.0
        for owner in (a, b):
            if owner is not None:
                for bucket in (owner.rpm, owner.tpm):
                    if bucket is not None:
                        bucket.refill(now)
        if a.rpm is not None:
            _tighten_requests(r, *a.rpm.header_numbers())
        if a.tpm is not None:
            _tighten_tokens(r, *a.tpm.header_numbers())
        self._tighten(r, now, user, key, b)
        return self.headers(r)

    def _quota_error(self, which, owner, tokens, cost, now, user, key, a, b) -> QuotaExceeded:
        cal = self._calendar
        return quota_exceeded(
            which, scope=owner.scope, limits=owner.quota, usage=owner.usage, tokens=tokens,
            cost=cost, day=cal.day, month=cal.month, now=now, duration=self._duration,
            headers=self._headers_now(now, user, key, a, b),
        )

    def _concurrency_error(self, now, user, key, a, b) -> RateLimited:
        wait = CONCURRENCY_RETRY_AFTER
        return RateLimited(
            f"Too many requests in flight on {key.scope}: limit {key.max_concurrent} at a "
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


def _tighten_requests(r: Reservation, limit: int, left: float, reset: float) -> None:
    left = int(left) if left > 0 else 0
    if r.limit_requests is None or left < r.remaining_requests:
        r.limit_requests = limit
        r.remaining_requests = left
        r.reset_requests = reset


def _tighten_tokens(r: Reservation, limit: int, left: float, reset: float) -> None:
    left = int(left) if left > 0 else 0
    if r.limit_tokens is None or left < r.remaining_tokens:
        r.limit_tokens = limit
        r.remaining_tokens = left
        r.reset_tokens = reset


def _take(user: _Subject, key: _Subject, a: _Subject, b: _Subject | None, need_a: float,
          need_b: float, tokens: int, cost: int, day: int, month: int) -> Reservation:
    """Every check passed: take from every limit at once and say what is held.
    The buckets were refilled to now by the checks. Counters are bumped in
    place rather than through QuotaUsage methods: this is the hot path."""
    user.inflight += 1
    usage = user.usage
    usage.requests_day += 1
    usage.tokens_day += tokens
    usage.cost_month += cost
    key.inflight += 1
    usage = key.usage
    usage.requests_day += 1
    usage.tokens_day += tokens
    usage.cost_month += cost
    r = Reservation()
    r.user = user
    r.key = key
    r.tpm_a = tpm_a = a.tpm
    r.reserved_a = need_a
    r.tokens = tokens
    r.cost_nano = cost
    r.day = day
    r.month = month
    r.open = True
    if a.rpm is not None:
        a.rpm.take(1)
    if tpm_a is not None:
        tpm_a.take(need_a)
    if b is None:
        r.tpm_b = None
        r.reserved_b = 0
    else:
        r.tpm_b = b.tpm
        r.reserved_b = need_b
        if b.rpm is not None:
            b.rpm.take(1)
        if b.tpm is not None:
            b.tpm.take(need_b)
    return r


def _min_set(plan_value, key_value):
    """The tighter of two optional limits (None = not set)."""
    if plan_value is None:
        return key_value
    if key_value is None or plan_value <= key_value:
        return plan_value
    return key_value


def _stricter_than(key_value, plan_value):
    """The key's own limit where it is stricter than the plan's, else None."""
    if key_value is not None and (plan_value is None or key_value < plan_value):
        return key_value
    return None


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
    # Only a per-user plan rate-limits the user as a whole; otherwise each key
    # (or a keyless principal's key-like state) has its own buckets.
    user.rpm = _bucket(user.rpm, plan.rpm if plan.per_user else None, now, clock)
    user.tpm = _bucket(user.tpm, plan.tpm if plan.per_user else None, now, clock)
    user.quota = QuotaLimits.of_plan(plan)


def _configure_key(key: _Subject, plan: PlanConfig, limits: KeyLimits, now: float, clock) -> None:
    key.plan = plan
    key.limits = limits
    if plan.per_user:
        # The user's bucket already enforces the plan; the key keeps a bucket
        # only for a limit of its own that is stricter still.
        rpm = _stricter_than(limits.rpm, plan.rpm)
        tpm = _stricter_than(limits.tpm, plan.tpm)
    else:
        rpm = _min_set(plan.rpm, limits.rpm)
        tpm = _min_set(plan.tpm, limits.tpm)
    key.rpm = _bucket(key.rpm, rpm, now, clock)
    key.tpm = _bucket(key.tpm, tpm, now, clock)
    key.max_concurrent = _min_set(plan.max_concurrent, limits.max_concurrent)
    key.quota = QuotaLimits.of_key(limits)

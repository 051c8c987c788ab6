"""Daily and monthly quotas and the monthly budget of one user or one key.

Counters include reservations still in flight, so a burst of concurrent
requests is judged against what they may use, not only against what finished.
Money is counted in integer nano-dollars: a reservation refunded later must
leave the counter exactly where it was, which float sums do not guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ..auth.principal import KeyLimits
from ..config.snapshot import PlanConfig
from ..errors import QuotaExceeded
from .windows import Window

NANO_PER_USD = 1_000_000_000


def usd_to_nano(usd: float) -> int:
    return round(usd * NANO_PER_USD)


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """Usage already persisted for the current windows, loaded at startup."""

    scope: str  # "user" | "key"
    id: int
    day: str  # "2026-11-26"
    requests_day: int
    tokens_day: int
    month: str  # "2026-11"
    requests_month: int
    tokens_month: int
    cost_month: float  # USD


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    requests_day: int | None = None
    tokens_day: int | None = None
    requests_month: int | None = None
    tokens_month: int | None = None
    budget_nano: int | None = None

    @classmethod
    def of_plan(cls, plan: PlanConfig) -> "QuotaLimits | None":
        return cls._build(plan.requests_per_day, plan.tokens_per_day, plan.requests_per_month,
                          plan.tokens_per_month, plan.monthly_budget_usd)

    @classmethod
    def of_key(cls, limits: KeyLimits) -> "QuotaLimits | None":
        # The user's quotas already bound a key by the plan's numbers, so a key
        # needs its own counter check only for the limits it sets itself.
        return cls._build(limits.requests_per_day, limits.tokens_per_day, limits.requests_per_month,
                          limits.tokens_per_month, limits.monthly_budget_usd)

    @classmethod
    def _build(cls, rd, td, rm, tm, budget) -> "QuotaLimits | None":
        if rd is None and td is None and rm is None and tm is None and budget is None:
            return None  # lets the hot path skip the checks altogether
        return cls(rd, td, rm, tm, None if budget is None else usd_to_nano(budget))


class QuotaUsage:
    """Counters for the day and month windows they were last rolled to.

    The month's requests and tokens are kept as "earlier days of this month"
    plus today's, so each request bumps three counters instead of five.
    """

    __slots__ = ("day", "month", "requests_day", "tokens_day", "requests_before",
                 "tokens_before", "cost_month")

    def __init__(self, day: int, month: int) -> None:
        self.day = day
        self.month = month
        self.requests_day = 0
        self.tokens_day = 0
        self.requests_before = 0
        self.tokens_before = 0
        self.cost_month = 0

    @property
    def requests_month(self) -> int:
        return self.requests_before + self.requests_day

    @property
    def tokens_month(self) -> int:
        return self.tokens_before + self.tokens_day

    def roll(self, day: int, month: int) -> None:
        if self.month != month:
            self.requests_before = self.tokens_before = self.cost_month = 0
        else:
            self.requests_before += self.requests_day
            self.tokens_before += self.tokens_day
        self.day = day
        self.month = month
        self.requests_day = self.tokens_day = 0

    def breach(self, limits: QuotaLimits, tokens: int, cost: int) -> str | None:
        """The first quota one more request of this size would break, or None.

        A reservation larger than a whole quota is judged as the quota itself,
        so a fresh window still admits it once instead of never. (The checks
        are spelled out rather than looped: this runs on every request.)
        """
        limit = limits.requests_day
        if limit is not None and self.requests_day >= limit:
            return "requests_day"
        limit = limits.tokens_day
        if limit is not None:
            used = self.tokens_day
            if used >= limit or used + (tokens if tokens < limit else limit) > limit:
                return "tokens_day"
        limit = limits.requests_month
        if limit is not None and self.requests_before + self.requests_day >= limit:
            return "requests_month"
        limit = limits.tokens_month
        if limit is not None:
            used = self.tokens_before + self.tokens_day
            if used >= limit or used + (tokens if tokens < limit else limit) > limit:
                return "tokens_month"
        limit = limits.budget_nano
        if limit is not None:
            used = self.cost_month
            if used >= limit or used + (cost if cost < limit else limit) > limit:
                return "budget"
        return None

    def reserve(self, tokens: int, cost: int) -> None:
        self.requests_day += 1
        self.tokens_day += tokens
        self.cost_month += cost

    def correct(self, day: int, month: int, requests: int, tokens: int, cost: int) -> None:
        """Add deltas to the windows a reservation was counted in. Once its
        month has turned, its counters are gone and nothing is owed; once only
        its day has, the correction lands on the month's earlier days."""
        if self.month != month:
            return
        if self.day == day:
            self.requests_day += requests
            self.tokens_day += tokens
        else:
            self.requests_before += requests
            self.tokens_before += tokens
        self.cost_month += cost

    def load(self, totals: WindowTotals, day: Window, month: Window) -> None:
        """Replace the counters with persisted totals; totals of a month that
        is over are ignored, and so are a past day's."""
        if self.day != day.index or self.month != month.index:
            self.roll(day.index, month.index)
        if totals.month != month.key:
            return
        today = (totals.requests_day, totals.tokens_day) if totals.day == day.key else (0, 0)
        self.requests_day, self.tokens_day = today
        # Rollups may lag a little; the month can never hold less than today.
        self.requests_before = max(0, totals.requests_month - today[0])
        self.tokens_before = max(0, totals.tokens_month - today[1])
        self.cost_month = usd_to_nano(totals.cost_month)

    def is_empty(self, month: int) -> bool:
        """Nothing worth remembering for the current month."""
        return self.month != month or not (
            self.requests_day or self.tokens_day or self.requests_before
            or self.tokens_before or self.cost_month)


# which -> (title, limit field, usage field, unit)
_QUOTAS = {
    "requests_day": ("Daily request quota", "requests_day", "requests_day", "requests"),
    "tokens_day": ("Daily token quota", "tokens_day", "tokens_day", "tokens"),
    "requests_month": ("Monthly request quota", "requests_month", "requests_month", "requests"),
    "tokens_month": ("Monthly token quota", "tokens_month", "tokens_month", "tokens"),
    "budget": ("Monthly budget", "budget_nano", "cost_month", "usd"),
}


def quota_exceeded(
    which: str,
    *,
    scope: str,
    limits: QuotaLimits,
    usage: QuotaUsage,
    tokens: int,
    cost: int,
    day: Window,
    month: Window,
    now: float,
    duration: Callable[[float], str],
    headers: dict[str, str],
) -> QuotaExceeded:
    """The 429 for a broken quota: which one, how far (in-flight reservations
    included), and when it resets."""
    title, limit_field, usage_field, unit = _QUOTAS[which]
    limit = getattr(limits, limit_field)
    used = getattr(usage, usage_field)
    advice = "upgrade the plan or wait"
    if unit == "usd":
        amounts = f"limit {_usd(limit)}, spent {_usd(used)}"
        if cost:
            amounts += f", this request may cost up to {_usd(cost)}"
    else:
        amounts = f"limit {limit}, used {used}"
        if unit == "tokens" and tokens:
            amounts += f", this request may use up to {tokens}"
            advice = "lower max_tokens, upgrade the plan or wait"
    window = day if which.endswith("_day") else month
    wait = window.end - now
    resets = datetime.fromtimestamp(window.end, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    message = (f"{title} reached for {scope}: {amounts}. It resets at {resets} "
               f"(in {duration(wait)}); {advice} until then.")
    return QuotaExceeded(message, retry_after=wait, headers=headers)


def _usd(nano: int) -> str:
    text = f"{nano / NANO_PER_USD:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"

"""usage.threshold and budget.exceeded, decided in the usage recorder's batch.

The hot path writes nothing: the limiter's refusals arrive as notes queued on
the recorder (`BudgetRefused`), and crossings are read off the rollups the
batch has just updated, inside the batch's own transaction. Each event is
emitted through `emit_once` under a key naming what it is once per
(account or key, limit, window, threshold), so a retried batch or a restart
never fires it twice.

Only the accounts and keys in the batch that have a quota or budget at all
are looked at: one query for their plans, one for their keys' limits, one
over the rollups per UTC day in the batch.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence

import orjson

from ..config.snapshot import PlanConfig, Snapshot
from ..usage.record import UsageRecord
from .outbox import emit_once

THRESHOLDS = (50, 80, 100)

# limit name -> (plan field, key-limits field, window kind)
LIMITS = {
    "requests_per_day": ("requests_per_day", "requests_per_day", "day"),
    "tokens_per_day": ("tokens_per_day", "tokens_per_day", "day"),
    "requests_per_month": ("requests_per_month", "requests_per_month", "month"),
    "tokens_per_month": ("tokens_per_month", "tokens_per_month", "month"),
    "monthly_budget_usd": ("monthly_budget_usd", "monthly_budget_usd", "month"),
}


@dataclass(frozen=True, slots=True)
class BudgetRefused:
    """The limiter refused a request for the monthly budget (queued from the hot path)."""

    account_id: int
    key_id: int | None  # the key whose own budget was hit; None: the account's plan budget
    at: float


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


_TOTALS = """
SELECT user_id, key_id,
       SUM(CASE WHEN day = :day THEN forwarded ELSE 0 END),
       SUM(CASE WHEN day = :day THEN total_tokens ELSE 0 END),
       SUM(forwarded), SUM(total_tokens), SUM(cost_nano) / 1e9
FROM usage_daily_key
WHERE day >= :first AND day <= :day AND user_id IN ({users})
GROUP BY user_id, key_id
"""


class UsageEvents:
    """The recorder's batch hook; `snapshot()` gives the plans in force."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def __call__(self, conn: sqlite3.Connection, records: Sequence[UsageRecord],
                 notes: Sequence[object]) -> None:
        snapshot = self._snapshot()
        refusals = [n for n in notes if isinstance(n, BudgetRefused)]
        users = {r.user_id for r in records} | {n.account_id for n in refusals}
        if not users:
            return
        plans = self._plans(conn, users, snapshot)
        key_limits = self._key_limits(conn, {r.key_id for r in records if r.key_id is not None}
                                      | {n.key_id for n in refusals if n.key_id is not None})
        for note in refusals:
            self._budget_exceeded(conn, note, plans, key_limits)
        watched = {u for u, plan in plans.items() if _has_quota(plan)}
        watched |= {user for user, _ in key_limits.values()}
        if not watched:
            return
        for day in sorted({_day(r.ts) for r in records if r.user_id in watched}):
            self._crossings(conn, day, watched, plans, key_limits, records)

    # -- lookups ---------------------------------------------------------------

    def _plans(self, conn, users: set[int], snapshot: Snapshot) -> dict[int, PlanConfig]:
        marks = ", ".join("?" for _ in users)
        out = {}
        for user_id, plan in conn.execute(f"SELECT id, plan FROM users WHERE id IN ({marks})", list(users)):
            found = snapshot.plans.get(plan) or snapshot.plans.get(snapshot.auth.default_plan)
            if found is not None:
                out[user_id] = found
        return out

    def _key_limits(self, conn, keys: set[int]) -> dict[int, tuple[int, dict]]:
        """key id -> (owner, its own quota limits), for keys that set any."""
        if not keys:
            return {}
        marks = ", ".join("?" for _ in keys)
        out = {}
        for key_id, user_id, raw in conn.execute(
                f"SELECT id, user_id, limits FROM api_keys WHERE id IN ({marks}) AND limits != '{{}}'",
                list(keys)):
            limits = {k: v for k, v in orjson.loads(raw).items() if k in LIMITS and v is not None}
            if limits:
                out[key_id] = (user_id, limits)
        return out

    # -- events ----------------------------------------------------------------

    def _budget_exceeded(self, conn, note: BudgetRefused, plans, key_limits) -> None:
        month = _day(note.at)[:7]
        if note.key_id is not None:
            limit = key_limits.get(note.key_id, (None, {}))[1].get("monthly_budget_usd")
            scope, ident = "key", note.key_id
        else:
            plan = plans.get(note.account_id)
            limit = plan.monthly_budget_usd if plan is not None else None
            scope, ident = "account", note.account_id
        emit_once(conn, f"budget.exceeded:{scope}:{ident}:{month}", "budget.exceeded",
                  {"account_id": note.account_id, "key_id": note.key_id, "scope": scope,
                   "window": month, "limit_usd": limit},
                  now=note.at, account_id=note.account_id)

    def _crossings(self, conn, day: str, watched: set[int], plans, key_limits,
                   records: Iterable[UsageRecord]) -> None:
        month = day[:7]
        per_user: dict[int, list[float]] = {}
        per_key: dict[int, list[float]] = {}
        # Named and positional parameters cannot mix, so the ids (integers) are spelled in.
        sql = _TOTALS.format(users=", ".join(str(int(u)) for u in watched))
        for user_id, key_id, *values in conn.execute(sql, {"day": day, "first": month + "-01"}):
            acc = per_user.setdefault(user_id, [0, 0, 0, 0, 0.0])
            for i, value in enumerate(values):
                acc[i] += value or 0
            if key_id in key_limits:
                per_key[key_id] = [v or 0 for v in values]
        at = max(r.ts for r in records)
        for user_id, totals in per_user.items():
            plan = plans.get(user_id)
            if plan is None:
                continue
            limits = {name: getattr(plan, fields[0]) for name, fields in LIMITS.items()}
            self._fire(conn, "account", user_id, user_id, None, limits, totals, day, month, at)
        for key_id, totals in per_key.items():
            owner, limits = key_limits[key_id]
            self._fire(conn, "key", key_id, owner, key_id, limits, totals, day, month, at)

    def _fire(self, conn, scope: str, ident: int, account_id: int, key_id: int | None,
              limits: dict, totals: list[float], day: str, month: str, at: float) -> None:
        used_by_limit = {
            "requests_per_day": totals[0], "tokens_per_day": totals[1],
            "requests_per_month": totals[2], "tokens_per_month": totals[3],
            "monthly_budget_usd": totals[4],
        }
        for name, limit in limits.items():
            if not limit or limit <= 0:
                continue
            used = used_by_limit[name]
            window = day if LIMITS[name][2] == "day" else month
            for threshold in THRESHOLDS:
                if used * 100 < limit * threshold:
                    break
                emit_once(conn, f"usage.threshold:{scope}:{ident}:{name}:{window}:{threshold}",
                          "usage.threshold",
                          {"account_id": account_id, "key_id": key_id, "scope": scope, "limit": name,
                           "window": window, "threshold": threshold, "used": _figure(used),
                           "limit_value": limit},
                          now=at, account_id=account_id)


def _figure(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 6)


def _has_quota(plan: PlanConfig) -> bool:
    return any(getattr(plan, fields[0]) for fields in LIMITS.values())

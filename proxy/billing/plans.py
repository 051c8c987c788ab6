"""An account's plan over time: changing it (recorded with its time) and the
day-by-day segments of a month that proration charges."""

from __future__ import annotations

import calendar
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from ..auth.tables import record_event

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Month:
    """A UTC calendar month: "2026-11"."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Month":
        try:
            year, month = text.split("-")
            value = cls(int(year), int(month))
        except ValueError:
            raise ValueError(f"{text!r} is not a month like 2026-11") from None
        if len(text) != 7 or not (1 <= value.month <= 12 and 1970 <= value.year <= 9998):
            raise ValueError(f"{text!r} is not a month like 2026-11")
        return value

    @classmethod
    def of(cls, ts: float) -> "Month":
        d = datetime.fromtimestamp(ts, timezone.utc)
        return cls(d.year, d.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def days(self) -> int:
        return calendar.monthrange(self.year, self.month)[1]

    @property
    def start(self) -> float:
        return datetime(self.year, self.month, 1, tzinfo=timezone.utc).timestamp()

    @property
    def end(self) -> float:
        return self.next().start

    @property
    def first_day(self) -> str:
        return f"{self}-01"

    @property
    def last_day(self) -> str:
        return f"{self}-{self.days:02d}"

    def next(self) -> "Month":
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> "Month":
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


def change_plan(conn: sqlite3.Connection, account_id: int, plan: str, *, now: float,
                source: str) -> bool:
    """Move the account to `plan`, recording when; False if it was on it already."""
    row = conn.execute("SELECT plan FROM users WHERE id = ?", (account_id,)).fetchone()
    if row is None or row[0] == plan:
        return False
    conn.execute("INSERT INTO billing_plan_changes (account_id, at, from_plan, to_plan, source) "
                 "VALUES (?, ?, ?, ?, ?)", (account_id, now, row[0], plan, source))
    conn.execute("UPDATE users SET plan = ?, updated_at = ? WHERE id = ?", (plan, now, account_id))
    record_event(conn, "user", account_id, now)  # the authenticator drops its cached plan
    return True


@dataclass(frozen=True, slots=True)
class Segment:
    plan: str
    first_day: int  # 0-based day of the month, inclusive
    days: int


def segments(changes: list[tuple[float, str | None, str]], current_plan: str, created_at: float,
             month: Month) -> list[Segment]:
    """The plans of one account over `month`, by whole UTC days.

    `changes` are (at, from_plan, to_plan) in time order. A plan applies from
    the day it was taken (that day counts for the new plan); several changes in
    one day leave the last one; days before the account existed are not billed."""
    start, end = month.start, month.end
    if created_at >= end:
        return []
    before = [c for c in changes if c[0] < start]
    inside = [c for c in changes if start <= c[0] < end]
    if before:
        plan = before[-1][2]
    elif changes:
        plan = changes[0][1] or changes[0][2]
    else:
        plan = current_plan
    first = max(0, int((created_at - start) // DAY))
    boundaries: list[tuple[int, str]] = [(first, plan)]
    for at, _, to_plan in inside:
        day = max(first, int((at - start) // DAY))
        if boundaries[-1][0] == day:
            boundaries[-1] = (day, to_plan)
        else:
            boundaries.append((day, to_plan))
    out: list[Segment] = []
    for i, (day, name) in enumerate(boundaries):
        stop = boundaries[i + 1][0] if i + 1 < len(boundaries) else month.days
        if stop > day:
            if out and out[-1].plan == name:
                out[-1] = Segment(name, out[-1].first_day, out[-1].days + stop - day)
            else:
                out.append(Segment(name, day, stop - day))
    return out

"""UTC calendar windows for quotas: the current day and the current month.

Quotas reset at 00:00 UTC and on the first of the month, whatever the server's
time zone. `Calendar` keeps the current pair and recomputes them only when the
clock leaves the cached day, so the hot path compares two floats instead of
doing date arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # unix seconds, inclusive
    end: float  # unix seconds, exclusive
    key: str  # "2026-11-26" for a day, "2026-11" for a month — as the usage rollups name them
    index: int  # days since the epoch, or year * 12 + month - 1: cheap to compare

    def contains(self, ts: float) -> bool:
        return self.start <= ts < self.end


def day_window(ts: float) -> Window:
    index = int(ts // DAY)
    start = index * DAY
    key = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d")
    return Window(start, start + DAY, key, index)


def month_window(ts: float) -> Window:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    first = datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)
    if moment.month == 12:
        following = datetime(moment.year + 1, 1, 1, tzinfo=timezone.utc)
    else:
        following = datetime(moment.year, moment.month + 1, 1, tzinfo=timezone.utc)
    return Window(
        first.timestamp(),
        following.timestamp(),
        f"{moment.year:04d}-{moment.month:02d}",
        moment.year * 12 + moment.month - 1,
    )


class Calendar:
    """The day and month windows around the latest `now` it was shown."""

    __slots__ = ("day", "month", "day_index", "month_index", "_start", "_end")

    def __init__(self, now: float) -> None:
        self.day = day_window(now)
        self.month = month_window(now)
        self._sync()

    def at(self, now: float) -> "Calendar":
        # A month always turns at a day boundary, so one check covers both.
        if not (self._start <= now < self._end):
            self.day = day_window(now)
            if not self.month.contains(now):
                self.month = month_window(now)
            self._sync()
        return self

    def _sync(self) -> None:
        # Flattened copies: the hot path reads these without a second lookup.
        self.day_index = self.day.index
        self.month_index = self.month.index
        self._start = self.day.start
        self._end = self.day.end

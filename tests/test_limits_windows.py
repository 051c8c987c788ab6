from datetime import datetime, timezone

from proxy.limits.windows import Calendar, day_window, month_window


def ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_day_window_is_the_utc_calendar_day():
    w = day_window(ts(2026, 11, 26, 12, 30))
    assert w.key == "2026-11-26"
    assert w.start == ts(2026, 11, 26)
    assert w.end == ts(2026, 11, 27)
    assert w.contains(ts(2026, 11, 26, 23, 59, 59, 999999))
    assert not w.contains(ts(2026, 11, 27))


def test_day_boundaries_are_inclusive_then_exclusive():
    assert day_window(ts(2026, 11, 27)).key == "2026-11-27"
    assert day_window(ts(2026, 11, 27) - 0.001).key == "2026-11-26"


def test_month_window_and_year_turn():
    w = month_window(ts(2026, 11, 26, 12))
    assert (w.key, w.start, w.end) == ("2026-11", ts(2026, 11, 1), ts(2026, 12, 1))
    w = month_window(ts(2026, 12, 31, 23, 59))
    assert (w.key, w.start, w.end) == ("2026-12", ts(2026, 12, 1), ts(2027, 1, 1))
    assert month_window(ts(2027, 1, 1)).key == "2027-01"


def test_leap_february():
    w = month_window(ts(2028, 2, 29, 8))
    assert w.end - w.start == 29 * 86400
    assert w.index == 2028 * 12 + 1


def test_calendar_reuses_windows_until_the_day_turns():
    cal = Calendar(ts(2026, 11, 30, 10))
    day, month = cal.day, cal.month
    cal.at(ts(2026, 11, 30, 23, 59, 59))
    assert cal.day is day and cal.month is month
    cal.at(ts(2026, 12, 1))
    assert (cal.day.key, cal.month.key) == ("2026-12-01", "2026-12")
    assert cal.day_index == day.index + 1
    assert cal.month_index == month.index + 1


def test_calendar_follows_a_clock_that_steps_back():
    cal = Calendar(ts(2026, 12, 1, 0, 0, 1))
    cal.at(ts(2026, 11, 30, 23, 59, 59))
    assert (cal.day.key, cal.month.key) == ("2026-11-30", "2026-11")

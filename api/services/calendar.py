"""The working calendar: deadlines are counted in working hours (工作时).

Working time is the union of the day's periods (e.g. 08:30-12:00 and 14:00-17:30) on working
days: Monday to Friday by default, less the public holidays, plus the make-up working days
(调休) that fall on a weekend. Everything is computed in the calendar's time zone and returned
as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MAX_DAYS = 3 * 366
"""Longest span walked (about 3 years): a deadline further out is a configuration error."""


@dataclass(frozen=True)
class WorkCalendar:
    timezone: str = "Asia/Shanghai"
    periods: tuple[tuple[time, time], ...] = ((time(8, 30), time(12, 0)), (time(14, 0), time(17, 30)))
    workdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})  # ISO weekday numbers
    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("a working calendar needs at least one working period a day")
        last_end: time | None = None
        for start, end in self.periods:
            if end <= start:
                raise ValueError(f"working period {start:%H:%M}-{end:%H:%M} ends before it starts")
            if last_end is not None and start < last_end:
                raise ValueError("working periods must be in order and must not overlap")
            last_end = end
        ZoneInfo(self.timezone)  # raises for an unknown zone

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def hours_per_day(self) -> float:
        return sum(_seconds(s, e) for s, e in self.periods) / 3600

    def is_workday(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        return day.isoweekday() in self.workdays and day not in self.holidays

    def _intervals(self, start_day: date) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals (local, aware) from ``start_day`` on, for at most _MAX_DAYS days."""
        tz = self.tz
        for offset in range(_MAX_DAYS):
            day = start_day + timedelta(days=offset)
            if not self.is_workday(day):
                continue
            for s, e in self.periods:
                yield datetime.combine(day, s, tz), datetime.combine(day, e, tz)

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The instant ``hours`` working hours after ``start`` (an aware datetime)."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if hours < 0:
            raise ValueError("hours must be >= 0")
        if hours == 0:
            return start.astimezone(UTC)
        local = start.astimezone(self.tz)
        remaining = timedelta(hours=hours)
        for lo, hi in self._intervals(local.date()):
            if hi <= local:
                continue
            begin = max(lo, local)
            if remaining <= hi - begin:
                return (begin + remaining).astimezone(UTC)
            remaining -= hi - begin
        raise ValueError(f"{hours} working hours from {start.isoformat()} is beyond the calendar")

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours in [start, end); negative when end is before start."""
        if end < start:
            return -self.working_hours_between(end, start)
        a, b = start.astimezone(self.tz), end.astimezone(self.tz)
        total = timedelta(0)
        for lo, hi in self._intervals(a.date()):
            if lo >= b:
                break
            overlap = min(hi, b) - max(lo, a)
            if overlap > timedelta(0):
                total += overlap
        return total.total_seconds() / 3600


def _seconds(start: time, end: time) -> float:
    return (datetime.combine(date.min, end) - datetime.combine(date.min, start)).total_seconds()

"""The working-day calendar: Chinese public holidays, config overrides, working and quiet hours."""

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Self
from zoneinfo import ZoneInfo

import chinese_calendar  # type: ignore[import-untyped]

from bot.core.config_sections import ScheduleConfig

logger = logging.getLogger("workbot.calendar")

SEARCH_DAYS = 400
"""How many days the searches look ahead (or back) before giving up."""

_package_is_workday: Callable[[date], bool] = chinese_calendar.is_workday

_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
_MINUTES_PER_DAY = 24 * 60
# Wall-clock days near a UTC offset change are scanned minute by minute over their instants,
# widened by more than any real DST shift (at most two hours).
_SHIFT_MARGIN = timedelta(hours=3)

_Period = tuple[int, int]


def _minute_of_day(moment: time) -> int:
    return moment.hour * 60 + moment.minute


def _clock(minute: int) -> time:
    return time(minute // 60, minute % 60)


def _working_periods(working: tuple[time, time], quiet: tuple[time, time]) -> tuple[_Period, ...]:
    """Working hours minus quiet hours, as sorted [start, end) minutes of the day."""
    quiet_start, quiet_end = _minute_of_day(quiet[0]), _minute_of_day(quiet[1])
    if quiet_start < quiet_end:
        quiet_ranges = [(quiet_start, quiet_end)]
    else:
        quiet_ranges = [(quiet_start, _MINUTES_PER_DAY), (0, quiet_end)]
    periods = [(_minute_of_day(working[0]), _minute_of_day(working[1]))]
    for low, high in quiet_ranges:
        remaining: list[_Period] = []
        for start, end in periods:
            if high <= start or low >= end:
                remaining.append((start, end))
                continue
            if start < low:
                remaining.append((start, low))
            if high < end:
                remaining.append((high, end))
        periods = remaining
    return tuple(sorted(periods))


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + _MINUTE


def _check_clock(name: str, moment: time) -> None:
    if moment.tzinfo is not None or moment.second or moment.microsecond:
        raise ValueError(f"{name} must be naive whole-minute times (HH:MM), got {moment}")


class WorkCalendar:
    """Working days, working hours and quiet hours in one time zone; pure, with a per-date cache."""

    # A day is a working day if it is in extra_workdays (which wins over extra_holidays), else
    # not if it is in extra_holidays, else as chinese-calendar says (it knows the State Council's
    # adjusted working weekends). For a year the package does not cover, Monday to Friday are
    # working days (plus the overrides) and one warning per year is logged on workbot.calendar.
    #
    # Working time is a working day, within working hours [start, end) and outside quiet hours
    # (which may wrap past midnight). Clock times are whole minutes, so every boundary is a
    # whole minute. Results are aware datetimes in the calendar's zone; all comparisons and
    # arithmetic are done on UTC instants (aware datetimes sharing a tzinfo compare by wall time).

    def __init__(
        self,
        tz: ZoneInfo,
        working_hours: tuple[time, time],
        quiet_hours: tuple[time, time],
        extra_holidays: Iterable[date] = (),
        extra_workdays: Iterable[date] = (),
    ) -> None:
        for name, span in (("working_hours", working_hours), ("quiet_hours", quiet_hours)):
            for moment in span:
                _check_clock(name, moment)
        if working_hours[0] >= working_hours[1]:
            raise ValueError(
                f"working_hours must start before they end, got {working_hours[0]:%H:%M}-"
                f"{working_hours[1]:%H:%M}"
            )
        if quiet_hours[0] == quiet_hours[1]:
            raise ValueError(f"quiet_hours start and end must differ, got {quiet_hours[0]:%H:%M}")
        self._tz = tz
        self._working_hours = working_hours
        self._quiet_hours = quiet_hours
        self._extra_holidays = frozenset(extra_holidays)
        self._extra_workdays = frozenset(extra_workdays)
        self._periods = _working_periods(working_hours, quiet_hours)
        self._workdays: dict[date, bool] = {}
        self._steady: dict[date, bool] = {}
        self._warned_years: set[int] = set()

    @classmethod
    def from_config(cls, schedule: ScheduleConfig, tz: ZoneInfo) -> Self:
        """Build the calendar from the [schedule] section and the bot's time zone."""
        return cls(
            tz,
            schedule.working_hours_span,
            schedule.quiet_hours_span,
            schedule.extra_holidays,
            schedule.extra_workdays,
        )

    @property
    def tz(self) -> ZoneInfo:
        """The time zone whose wall clock defines days and hours."""
        return self._tz

    @property
    def working_periods(self) -> tuple[tuple[time, time], ...]:
        """The daily working periods, working hours minus quiet hours, as (start, end) times."""
        return tuple((_clock(start), _clock(end)) for start, end in self._periods)

    def is_workday(self, day: date) -> bool:
        """Tell whether a calendar date is a working day (overrides, then chinese-calendar)."""
        if isinstance(day, datetime):
            raise TypeError("is_workday takes a date; use is_working_time for an instant")
        cached = self._workdays.get(day)
        if cached is None:
            cached = self._decide_workday(day)
            self._workdays[day] = cached
        return cached

    def _decide_workday(self, day: date) -> bool:
        if day in self._extra_workdays:
            return True
        if day in self._extra_holidays:
            return False
        try:
            return bool(_package_is_workday(day))
        except NotImplementedError:
            if day.year not in self._warned_years:
                self._warned_years.add(day.year)
                logger.warning(
                    "chinese-calendar has no holiday data for %d; in %d only weekends and the "
                    "configured schedule.extra_holidays / extra_workdays apply "
                    "(upgrade chinese-calendar to get the official holidays)",
                    day.year,
                    day.year,
                )
            return day.weekday() < 5

    def is_working_time(self, at: datetime) -> bool:
        """Tell whether an aware instant is working time: working day, hours, not quiet."""
        local = self._local(at)
        return self.is_workday(local.date()) and self._in_periods(local.time())

    def next_working_time(self, at: datetime) -> datetime:
        """The earliest working instant at or after `at`; ValueError if none within 400 days."""
        found = self._nearest_working_time(at, _DAY, self._first_working_on)
        if found is not None:
            return found
        if not self._periods:
            raise ValueError(self._no_periods_message())
        raise ValueError(
            f"no working time within {SEARCH_DAYS} days after {self._local(at).isoformat()}; "
            "check schedule.working_hours, quiet_hours and extra_holidays"
        )

    def previous_working_time(self, at: datetime) -> datetime | None:
        """The latest working instant ≤ `at` (minute resolution), or None within 400 days."""
        # `at` itself if it is working time; otherwise the start of the last working minute
        # before it, e.g. 17:29 for working hours ending at 17:30, so that a reminder moved
        # there still precedes `at`.
        return self._nearest_working_time(at, -_DAY, self._last_working_on)

    def _nearest_working_time(
        self,
        at: datetime,
        step: timedelta,
        working_on: Callable[[date, datetime], datetime | None],
    ) -> datetime | None:
        """`at` if it is working time, else what `working_on` finds on the days from `at`'s
        onwards, one `step` at a time; None if there are no working periods or nothing is
        found within SEARCH_DAYS."""
        local = self._local(at)
        if self.is_workday(local.date()) and self._in_periods(local.time()):
            return local
        if not self._periods:
            return None
        at_utc = local.astimezone(UTC)
        day = local.date()
        for _ in range(SEARCH_DAYS + 1):
            found = working_on(day, at_utc)
            if found is not None:
                return found.astimezone(self._tz)
            day += step
        return None

    def next_at_time_on_workday(self, after: datetime, clock: time) -> datetime:
        """The first working day's local `clock` time strictly after `after` (e.g. the digest)."""
        return self._next_at(after, clock, self.is_workday)

    def next_at_time(self, after: datetime, clock: time) -> datetime:
        """The first local `clock` time strictly after `after`, on any day (e.g. the daily
        audit checkpoint)."""
        return self._next_at(after, clock, lambda _day: True)

    def _next_at(self, after: datetime, clock: time, day_ok: Callable[[date], bool]) -> datetime:
        # Today counts if day_ok and `clock` is still ahead; an instant equal to `after` does
        # not, so rescheduling from a firing time moves on to the next day.
        # A clock time skipped by a DST change lands after the gap (02:30 becomes 03:30); a
        # repeated one means its first occurrence. Working and quiet hours are not applied.
        if clock.tzinfo is not None:
            raise ValueError(f"clock must be a naive local time, got {clock}")
        local = self._local(after)
        after_utc = local.astimezone(UTC)
        day = local.date()
        for _ in range(SEARCH_DAYS + 1):
            if day_ok(day):
                candidate = datetime.combine(day, clock, tzinfo=self._tz).astimezone(UTC)
                if candidate > after_utc:
                    return candidate.astimezone(self._tz)
            day += _DAY
        raise ValueError(
            f"no working day within {SEARCH_DAYS} days after {local.isoformat()}; "
            "check schedule.extra_holidays"
        )

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"expected a timezone-aware datetime, got naive {at.isoformat()}")
        return at.astimezone(self._tz)

    def _in_periods(self, moment: time) -> bool:
        minute = _minute_of_day(moment)
        return any(start <= minute < end for start, end in self._periods)

    def _no_periods_message(self) -> str:
        working, quiet = self._working_hours, self._quiet_hours
        return (
            f"working hours {working[0]:%H:%M}-{working[1]:%H:%M} lie entirely within quiet "
            f"hours {quiet[0]:%H:%M}-{quiet[1]:%H:%M}; there is never any working time"
        )

    def _is_steady(self, day: date) -> bool:
        """True if one UTC offset holds from this day's midnight to the next, both folds."""
        cached = self._steady.get(day)
        if cached is None:
            offsets = {
                datetime.combine(edge, time(0, fold=fold), tzinfo=self._tz).utcoffset()
                for edge in (day, day + _DAY)
                for fold in (0, 1)
            }
            cached = len(offsets) == 1
            self._steady[day] = cached
        return cached

    def _instant(self, day: date, minute: int) -> datetime:
        """The UTC instant of a wall-clock minute on a steady day."""
        return datetime.combine(day, _clock(minute), tzinfo=self._tz).astimezone(UTC)

    def _near_workday(self, day: date) -> bool:
        return any(self.is_workday(day + offset * _DAY) for offset in (-1, 0, 1))

    def _shift_window(self, day: date) -> tuple[datetime, datetime]:
        """UTC instants bracketing every instant whose wall-clock date is `day`."""
        low = datetime.combine(day, time(0), tzinfo=self._tz).astimezone(UTC)
        high = datetime.combine(day + _DAY, time(0), tzinfo=self._tz).astimezone(UTC)
        return low - _SHIFT_MARGIN, high + _SHIFT_MARGIN

    def _first_working_on(self, day: date, not_before: datetime) -> datetime | None:
        """The earliest working UTC instant ≥ not_before among those around this date."""
        if self._is_steady(day):
            if not self.is_workday(day):
                return None
            for start, end in self._periods:
                if self._instant(day, end) > not_before:
                    return max(self._instant(day, start), not_before)
            return None
        if not self._near_workday(day):
            return None
        low, high = self._shift_window(day)
        if low <= not_before < high and self.is_working_time(not_before):
            return not_before
        moment = max(_ceil_minute(not_before), low)
        while moment < high:
            if self.is_working_time(moment):
                return moment
            moment += _MINUTE
        return None

    def _last_working_on(self, day: date, not_after: datetime) -> datetime | None:
        """The latest working UTC minute ≤ not_after among those around this date."""
        if self._is_steady(day):
            if not self.is_workday(day):
                return None
            for start, end in reversed(self._periods):
                if self._instant(day, start) <= not_after:
                    end_instant = self._instant(day, end)
                    return not_after if not_after < end_instant else end_instant - _MINUTE
            return None
        if not self._near_workday(day):
            return None
        low, high = self._shift_window(day)
        if low <= not_after < high and self.is_working_time(not_after):
            return not_after
        moment = min(not_after.replace(second=0, microsecond=0), high)
        while moment >= low:
            if self.is_working_time(moment):
                return moment
            moment -= _MINUTE
        return None

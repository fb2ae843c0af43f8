"""Tests for bot.core.calendar: holidays, adjusted workdays, hours, fallback years, DST."""

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import ScheduleConfig
from bot.core.calendar import SEARCH_DAYS, WorkCalendar

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = timedelta(minutes=1)
OFFICE_HOURS = (time(8, 30), time(17, 30))
NIGHT = (time(22), time(7))
NATIONAL_DAY = [date(2026, 10, day) for day in range(1, 8)]
SPRING_FORWARD = date(2026, 3, 29)  # Berlin: 02:00 CET -> 03:00 CEST, a Sunday
FALL_BACK = date(2026, 10, 25)  # Berlin: 03:00 CEST -> 02:00 CET, a Sunday


def office(
    extra_holidays: Iterable[date] = (), extra_workdays: Iterable[date] = ()
) -> WorkCalendar:
    """The default office calendar in Shanghai (08:30-17:30, quiet 22:00-07:00)."""
    return WorkCalendar(SHANGHAI, OFFICE_HOURS, NIGHT, extra_holidays, extra_workdays)


def sh(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """An aware Asia/Shanghai datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI)


def brute_next(calendar: WorkCalendar, at: datetime, limit: int = 20 * 24 * 60) -> datetime:
    """The first working instant ≥ at, found minute by minute in UTC."""
    if calendar.is_working_time(at):
        return at
    moment = at.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(limit):
        moment += MINUTE
        if calendar.is_working_time(moment):
            return moment
    raise AssertionError(f"no working minute within {limit} minutes of {at}")


def brute_previous(calendar: WorkCalendar, at: datetime, limit: int = 20 * 24 * 60) -> datetime:
    """The start of the last working minute ≤ at (or at itself), found minute by minute."""
    if calendar.is_working_time(at):
        return at
    moment = at.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(limit):
        if calendar.is_working_time(moment):
            return moment
        moment -= MINUTE
    raise AssertionError(f"no working minute within {limit} minutes before {at}")


def test_national_day_holiday_and_adjusted_workdays() -> None:
    calendar = office()
    for day in NATIONAL_DAY:
        assert not calendar.is_workday(day), day
        assert not calendar.is_working_time(datetime.combine(day, time(10), tzinfo=SHANGHAI))
    assert calendar.is_workday(date(2026, 9, 20))  # Sunday, adjusted working day
    assert calendar.is_workday(date(2026, 10, 10))  # Saturday, adjusted working day
    assert calendar.is_working_time(sh(2026, 9, 20, 10))
    assert calendar.is_working_time(sh(2026, 10, 10, 10))
    for weekend in (date(2026, 9, 19), date(2026, 9, 26), date(2026, 9, 27), date(2026, 10, 11)):
        assert not calendar.is_workday(weekend), weekend
    assert calendar.is_workday(date(2026, 9, 30))
    assert calendar.is_workday(date(2026, 10, 8))


def test_working_time_boundaries_and_other_zones() -> None:
    calendar = office()
    assert calendar.is_working_time(sh(2026, 9, 30, 8, 30))
    assert not calendar.is_working_time(sh(2026, 9, 30, 8, 29, 59))
    assert calendar.is_working_time(sh(2026, 9, 30, 17, 29, 59))
    assert not calendar.is_working_time(sh(2026, 9, 30, 17, 30))
    # 01:00 UTC is 09:00 in Shanghai; 23:00 UTC the day before is 07:00 the next day.
    assert calendar.is_working_time(datetime(2026, 9, 30, 1, 0, tzinfo=UTC))
    assert not calendar.is_working_time(datetime(2026, 9, 29, 23, 0, tzinfo=UTC))
    assert calendar.is_working_time(
        datetime(2026, 9, 29, 20, 0, tzinfo=timezone(-timedelta(hours=5)))
    )


def test_quiet_hours_cut_into_working_hours() -> None:
    late = WorkCalendar(SHANGHAI, (time(6), time(23)), NIGHT)
    assert not late.is_working_time(sh(2026, 9, 30, 6, 59))
    assert late.is_working_time(sh(2026, 9, 30, 7, 0))
    assert late.is_working_time(sh(2026, 9, 30, 21, 59))
    assert not late.is_working_time(sh(2026, 9, 30, 22, 0))
    assert late.working_periods == ((time(7), time(22)),)
    assert late.next_working_time(sh(2026, 9, 30, 22, 30)) == sh(2026, 10, 8, 7, 0)

    lunch = WorkCalendar(SHANGHAI, OFFICE_HOURS, (time(12), time(13)))
    assert lunch.working_periods == ((time(8, 30), time(12)), (time(13), time(17, 30)))
    assert not lunch.is_working_time(sh(2026, 9, 30, 12, 30))
    assert lunch.next_working_time(sh(2026, 9, 30, 12, 10)) == sh(2026, 9, 30, 13, 0)
    assert lunch.previous_working_time(sh(2026, 9, 30, 12, 30)) == sh(2026, 9, 30, 11, 59)


def test_next_working_time_skips_nights_weekends_and_the_holiday() -> None:
    calendar = office()
    cases = [
        (sh(2026, 9, 30, 17, 45), sh(2026, 10, 8, 8, 30)),  # into National Day
        (sh(2026, 9, 19, 12, 0), sh(2026, 9, 20, 8, 30)),  # Saturday -> adjusted Sunday
        (sh(2026, 9, 11, 18, 0), sh(2026, 9, 14, 8, 30)),  # ordinary Friday -> Monday
        (sh(2026, 10, 9, 18, 0), sh(2026, 10, 10, 8, 30)),  # Friday -> adjusted Saturday
        (sh(2026, 10, 10, 17, 30), sh(2026, 10, 12, 8, 30)),  # adjusted Saturday -> Monday
        (sh(2026, 9, 30, 3, 0), sh(2026, 9, 30, 8, 30)),  # night -> same morning
        (sh(2026, 10, 3, 10, 0), sh(2026, 10, 8, 8, 30)),  # inside the holiday
    ]
    for at, expected in cases:
        result = calendar.next_working_time(at)
        assert result == expected, at
        assert result.tzinfo is SHANGHAI
        assert result.utcoffset() == timedelta(hours=8)


def test_next_working_time_returns_a_working_instant_itself() -> None:
    calendar = office()
    at = datetime(2026, 9, 30, 2, 15, 42, 7, tzinfo=UTC)  # 10:15:42 in Shanghai
    result = calendar.next_working_time(at)
    assert result == at
    assert result.tzinfo is SHANGHAI
    assert result.replace(tzinfo=None) == datetime(2026, 9, 30, 10, 15, 42, 7)


def test_config_overrides_win_over_the_package() -> None:
    calendar = office(
        extra_holidays=[date(2026, 9, 14), date(2026, 9, 20)],
        extra_workdays=[date(2026, 10, 3), date(2026, 9, 27)],
    )
    assert not calendar.is_workday(date(2026, 9, 14))  # a Monday
    assert not calendar.is_workday(date(2026, 9, 20))  # the adjusted Sunday
    assert calendar.is_workday(date(2026, 10, 3))  # inside National Day
    assert calendar.is_workday(date(2026, 9, 27))  # an ordinary Sunday
    assert calendar.next_working_time(sh(2026, 9, 11, 18)) == sh(2026, 9, 15, 8, 30)
    assert calendar.next_working_time(sh(2026, 9, 19, 12)) == sh(2026, 9, 21, 8, 30)
    assert calendar.next_working_time(sh(2026, 9, 30, 17, 45)) == sh(2026, 10, 3, 8, 30)
    both = office(extra_holidays=[date(2026, 10, 2)], extra_workdays=[date(2026, 10, 2)])
    assert both.is_workday(date(2026, 10, 2))  # extra_workdays are checked first


def test_from_config_matches_the_schedule_section() -> None:
    schedule = ScheduleConfig.model_validate(
        {
            "working_hours": "09:00-18:00",
            "quiet_hours": "12:00-13:30",
            "extra_holidays": ["2026-09-14"],
            "extra_workdays": ["2026-10-03"],
        }
    )
    calendar = WorkCalendar.from_config(schedule, SHANGHAI)
    assert calendar.tz is SHANGHAI
    assert not calendar.is_workday(date(2026, 9, 14))
    assert calendar.is_workday(date(2026, 10, 3))
    for minute in range(0, 24 * 60, 7):
        clock = time(minute // 60, minute % 60)
        expected = schedule.in_working_hours(clock) and not schedule.in_quiet_hours(clock)
        at = datetime.combine(date(2026, 9, 30), clock, tzinfo=SHANGHAI)
        assert calendar.is_working_time(at) is expected, clock
    defaults = WorkCalendar.from_config(ScheduleConfig(), SHANGHAI)
    assert defaults.working_periods == (OFFICE_HOURS,)


def test_uncovered_year_falls_back_to_weekends_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workbot.calendar")
    calendar = office(extra_holidays=[date(2027, 1, 5)], extra_workdays=[date(2027, 1, 9)])
    assert calendar.is_workday(date(2027, 1, 4))  # Monday
    assert not calendar.is_workday(date(2027, 1, 2))  # Saturday
    assert not calendar.is_workday(date(2027, 1, 3))  # Sunday
    assert not calendar.is_workday(date(2027, 1, 5))  # extra holiday, a Tuesday
    assert calendar.is_workday(date(2027, 1, 9))  # extra workday, a Saturday
    for day in range(365):
        calendar.is_workday(date(2027, 1, 1) + timedelta(days=day))
    assert calendar.next_working_time(sh(2027, 1, 4, 18)) == sh(2027, 1, 6, 8, 30)
    assert calendar.next_working_time(sh(2027, 1, 8, 18)) == sh(2027, 1, 9, 8, 30)
    assert calendar.next_working_time(sh(2027, 1, 9, 18)) == sh(2027, 1, 11, 8, 30)
    assert calendar.previous_working_time(sh(2027, 1, 6, 8)) == sh(2027, 1, 4, 17, 29)
    assert calendar.next_at_time_on_workday(sh(2027, 1, 4, 10), time(9)) == sh(2027, 1, 6, 9)
    # Across the year boundary: the package's last year, then the fallback year.
    assert calendar.next_working_time(sh(2026, 12, 31, 18)) == sh(2027, 1, 1, 8, 30)

    records = [r for r in caplog.records if r.name == "workbot.calendar"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "2027" in message
    assert "weekends" in message
    assert "extra_holidays" in message

    calendar.is_workday(date(2028, 3, 1))
    calendar.is_workday(date(2028, 3, 2))
    years = [r.getMessage() for r in caplog.records if r.name == "workbot.calendar"]
    assert len(years) == 2
    assert "2028" in years[1]


def test_previous_working_time() -> None:
    calendar = office()
    cases = [
        (sh(2026, 10, 8, 8, 0), sh(2026, 9, 30, 17, 29)),  # back across National Day
        (sh(2026, 10, 5, 12, 0), sh(2026, 9, 30, 17, 29)),  # from inside the holiday
        (sh(2026, 10, 10, 7, 0), sh(2026, 10, 9, 17, 29)),
        (sh(2026, 9, 21, 8, 0), sh(2026, 9, 20, 17, 29)),  # the adjusted Sunday counts
        (sh(2026, 9, 20, 20, 0), sh(2026, 9, 20, 17, 29)),
        (sh(2026, 9, 14, 3, 0), sh(2026, 9, 11, 17, 29)),  # Monday night -> Friday
        (sh(2026, 9, 30, 17, 30), sh(2026, 9, 30, 17, 29)),
        (sh(2026, 9, 30, 10, 0, 30), sh(2026, 9, 30, 10, 0, 30)),  # working: itself
    ]
    for at, expected in cases:
        result = calendar.previous_working_time(at)
        assert result == expected, at
        assert result is not None
        assert result.tzinfo is SHANGHAI
        assert result <= at
        assert calendar.is_working_time(result)


def test_previous_working_time_keeps_a_reminder_before_its_deadline() -> None:
    calendar = office()
    deadline = sh(2026, 10, 8, 9, 0)
    nominal = deadline - timedelta(days=1)  # 2026-10-07 09:00, a holiday
    moved = calendar.previous_working_time(nominal)
    assert moved == sh(2026, 9, 30, 17, 29)
    assert moved < deadline
    assert calendar.next_working_time(nominal) == sh(2026, 10, 8, 8, 30)


def test_next_at_time_on_workday() -> None:
    calendar = office()
    nine = time(9)
    cases = [
        (sh(2026, 9, 30, 8, 0), sh(2026, 9, 30, 9, 0)),  # today, still ahead
        (sh(2026, 9, 30, 9, 0), sh(2026, 10, 8, 9, 0)),  # exactly now: strictly after
        (sh(2026, 9, 30, 10, 0), sh(2026, 10, 8, 9, 0)),  # passed: across the holiday
        (sh(2026, 10, 4, 8, 0), sh(2026, 10, 8, 9, 0)),  # inside the holiday
        (sh(2026, 9, 19, 8, 0), sh(2026, 9, 20, 9, 0)),  # Saturday -> adjusted Sunday
        (sh(2026, 10, 9, 10, 0), sh(2026, 10, 10, 9, 0)),  # -> adjusted Saturday
        (sh(2026, 9, 11, 23, 59), sh(2026, 9, 14, 9, 0)),
        (datetime(2026, 9, 30, 0, 59, tzinfo=UTC), sh(2026, 9, 30, 9, 0)),  # 08:59 local
    ]
    for after, expected in cases:
        result = calendar.next_at_time_on_workday(after, nine)
        assert result == expected, after
        assert result.tzinfo is SHANGHAI
    # The digest time need not lie in working hours (07:00 is inside quiet hours here).
    assert calendar.next_at_time_on_workday(sh(2026, 9, 30, 8), time(7)) == sh(2026, 10, 8, 7)


def test_berlin_dst_gives_sane_results() -> None:
    calendar = WorkCalendar(BERLIN, OFFICE_HOURS, NIGHT)
    spring = calendar.next_working_time(datetime(2026, 3, 27, 18, tzinfo=BERLIN))
    assert spring.replace(tzinfo=None) == datetime(2026, 3, 30, 8, 30)
    assert spring.utcoffset() == timedelta(hours=2)
    autumn = calendar.next_working_time(datetime(2026, 10, 23, 18, tzinfo=BERLIN))
    assert autumn.replace(tzinfo=None) == datetime(2026, 10, 26, 8, 30)
    assert autumn.utcoffset() == timedelta(hours=1)
    back = calendar.previous_working_time(datetime(2026, 3, 30, 7, tzinfo=BERLIN))
    assert back is not None
    assert back.replace(tzinfo=None) == datetime(2026, 3, 27, 17, 29)
    assert back.utcoffset() == timedelta(hours=1)
    digest = calendar.next_at_time_on_workday(datetime(2026, 3, 27, 10, tzinfo=BERLIN), time(9))
    assert digest.replace(tzinfo=None) == datetime(2026, 3, 30, 9)


def test_dst_transition_days_with_night_hours_match_brute_force() -> None:
    """Working hours that straddle the DST switch, on Sundays made working days."""
    calendar = WorkCalendar(
        BERLIN,
        (time(1), time(4)),
        (time(2, 15), time(2, 45)),
        extra_workdays=[SPRING_FORWARD, FALL_BACK],
    )
    for day in (SPRING_FORWARD, FALL_BACK):
        base = datetime.combine(day - timedelta(days=1), time(20), tzinfo=BERLIN).astimezone(UTC)
        for step in range(0, 12 * 60, 7):
            at = base + timedelta(minutes=step, seconds=13)
            # Compare in UTC: == between zones is always False for a time inside a DST fold.
            result = calendar.next_working_time(at).astimezone(UTC)
            assert result == brute_next(calendar, at).astimezone(UTC), at
            previous = calendar.previous_working_time(at)
            assert previous is not None
            assert previous.astimezone(UTC) == brute_previous(calendar, at).astimezone(UTC), at
    # In the spring gap the local 02:45 does not exist: 03:00 CEST is the first working minute.
    gap = calendar.next_working_time(datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    assert gap.astimezone(UTC) == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET, working
    after_quiet = calendar.next_working_time(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    assert after_quiet.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    # In autumn 02:15-02:45 is quiet twice; 02:45 CEST is the first working minute after.
    repeated = calendar.next_working_time(datetime(2026, 10, 25, 0, 20, tzinfo=UTC))
    assert repeated.astimezone(UTC) == datetime(2026, 10, 25, 0, 45, tzinfo=UTC)
    second = calendar.next_working_time(datetime(2026, 10, 25, 1, 20, tzinfo=UTC))
    assert second.astimezone(UTC) == datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET
    skipped = calendar.next_at_time_on_workday(datetime(2026, 3, 29, 0, tzinfo=UTC), time(2, 30))
    assert skipped.astimezone(UTC) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )  # lands after the gap, 03:30
    first = calendar.next_at_time_on_workday(datetime(2026, 10, 25, 0, tzinfo=UTC), time(2, 30))
    assert first.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # first 02:30, CEST


def test_impossible_configs_terminate_with_a_clear_error() -> None:
    never = WorkCalendar(SHANGHAI, OFFICE_HOURS, (time(8), time(18)))
    assert never.working_periods == ()
    assert not never.is_working_time(sh(2026, 9, 30, 10))
    with pytest.raises(ValueError, match="entirely within quiet hours"):
        never.next_working_time(sh(2026, 9, 30, 10))
    assert never.previous_working_time(sh(2026, 9, 30, 10)) is None

    start = date(2026, 9, 1)
    every_day = [start + timedelta(days=n) for n in range(-2 * SEARCH_DAYS, 2 * SEARCH_DAYS)]
    closed = office(extra_holidays=every_day)
    with pytest.raises(ValueError, match=f"no working time within {SEARCH_DAYS} days"):
        closed.next_working_time(sh(2026, 9, 30, 10))
    assert closed.previous_working_time(sh(2026, 9, 30, 10)) is None
    with pytest.raises(ValueError, match=f"no working day within {SEARCH_DAYS} days"):
        closed.next_at_time_on_workday(sh(2026, 9, 30, 10), time(9))


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="working_hours must start before"):
        WorkCalendar(SHANGHAI, (time(17), time(9)), NIGHT)
    with pytest.raises(ValueError, match="quiet_hours start and end must differ"):
        WorkCalendar(SHANGHAI, OFFICE_HOURS, (time(22), time(22)))
    with pytest.raises(ValueError, match="whole-minute"):
        WorkCalendar(SHANGHAI, (time(8, 30, 15), time(17)), NIGHT)
    calendar = office()
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar.next_working_time(datetime(2026, 9, 30, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar.is_working_time(datetime(2026, 9, 30, 10))
    with pytest.raises(TypeError, match="takes a date"):
        calendar.is_workday(datetime(2026, 9, 30, 10))


CALENDAR = office(extra_holidays=[date(2027, 1, 5)], extra_workdays=[date(2027, 1, 9)])
AWARE_2024_2028 = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2028, 12, 31, 23, 59, 59),
    timezones=st.sampled_from([SHANGHAI, UTC, timezone(timedelta(hours=-5, minutes=-30))]),
)


@settings(max_examples=200, deadline=None)
@given(AWARE_2024_2028)
def test_next_working_time_property(at: datetime) -> None:
    result = CALENDAR.next_working_time(at)
    assert result >= at
    assert result.tzinfo is SHANGHAI
    assert CALENDAR.is_working_time(result)
    if result == at:
        return
    assert not CALENDAR.is_working_time(at)
    # Boundaries are whole minutes: checking `at` and every whole minute before the result
    # proves that no working instant lies in [at, result).
    moment = result.astimezone(UTC) - MINUTE
    assert moment.second == 0
    while moment > at:
        assert not CALENDAR.is_working_time(moment), moment
        moment -= MINUTE


@settings(max_examples=200, deadline=None)
@given(AWARE_2024_2028)
def test_previous_working_time_property(at: datetime) -> None:
    result = CALENDAR.previous_working_time(at)
    assert result is not None
    assert result <= at
    assert result.tzinfo is SHANGHAI
    assert CALENDAR.is_working_time(result)
    if result == at:
        return
    assert result.second == 0
    moment = result.astimezone(UTC) + MINUTE
    while moment <= at:
        assert not CALENDAR.is_working_time(moment), moment
        moment += MINUTE

"""China's working-day calendar (bot/domain/workdays.py).

Facts used below, from the State Council's 2026 notice as chinesecalendar 1.11.0 encodes it:
春节 15-23 Feb 2026 off, Sat 14 Feb and Sat 28 Feb worked; 中秋 Fri 25 - Sun 27 Sep off;
国庆 Thu 1 - Wed 7 Oct off, Sun 20 Sep and Sat 10 Oct worked.
2027 is in neither the package nor the repo's override file: provisional, from the holidays
package (0.109) for CN: 1 Jan (Fri); 5-10 Feb; 1-5 Oct 2027 (Fri-Tue, 4 and 5 "observed").
"""
from __future__ import annotations

import logging
import tomllib
from datetime import date, datetime, timedelta, timezone

import pytest

from bot.domain.workdays import (Calendar, CalendarError, check_command, load_overrides,
                                 official_years, parse_overrides)
from tests.support.calendar import D, OVERRIDES, TZ, at, cal  # noqa: F401 (cal: a fixture)
from tests.support.tiers import RULES

LEAD = RULES.booking.lead_workdays  # the shipped rule (the handbook's 2 working days)
CUTOFF = RULES.booking.cancel_cutoff  # the shipped rule (the handbook's noon)


OVERRIDE_2027 = """
[years.2027]
notice = "test notice 2027"
holidays = [
    2027-01-01,
    {from = 2027-10-01, to = 2027-10-07},
    "2026-12-31",
]
workdays = [2027-09-26, "2027-10-09"]
"""


@pytest.fixture
def cal_2027(tmp_path) -> Calendar:
    path = tmp_path / "calendar_overrides.toml"
    path.write_text(OVERRIDE_2027, encoding="utf-8")
    return Calendar.from_file(path)


# --- Days ----------------------------------------------------------------------------------


@pytest.mark.parametrize("day, workday", [
    ("2026-12-02", True),    # a Wednesday
    ("2026-12-05", False),   # a Saturday
    ("2026-12-06", False),   # a Sunday
    ("2026-09-30", True),    # Wednesday before 国庆
    ("2026-10-01", False),   # 国庆
    ("2026-10-07", False),   # last day of 国庆, a Wednesday
    ("2026-10-08", True),
    ("2026-10-10", True),    # Saturday, make-up workday
    ("2026-10-11", False),   # Sunday
    ("2026-09-20", True),    # Sunday, make-up workday
    ("2026-09-25", False),   # 中秋, a Friday
    ("2026-02-13", True),
    ("2026-02-14", True),    # Saturday, make-up workday
    ("2026-02-15", False),   # 春节
    ("2026-02-23", False),   # last day of 春节, a Monday
    ("2026-02-24", True),
    ("2026-02-28", True),    # Saturday, make-up workday
    ("2026-01-01", False),
    ("2026-01-04", True),    # Sunday, make-up workday
])
def test_workdays_2026(cal, day, workday):
    assert cal.is_workday(D(day)) is workday
    assert cal.is_holiday(D(day)) is not workday
    assert not cal.is_provisional(D(day))


@pytest.mark.parametrize("request_at, earliest", [
    # Ordinary weeks: Wednesday → Friday, Saturday → Tuesday.
    ("2026-12-02 10:00", "2026-12-04"),
    ("2026-12-03 10:00", "2026-12-07"),   # Thursday → Monday
    ("2026-12-04 10:00", "2026-12-08"),   # Friday → Tuesday
    ("2026-12-05 10:00", "2026-12-08"),   # Saturday → Tuesday
    ("2026-12-06 10:00", "2026-12-08"),   # Sunday → Tuesday
    # 国庆 2026
    ("2026-09-18 10:00", "2026-09-21"),   # Fri: Sun 20 Sep is worked, then Mon 21
    ("2026-09-23 10:00", "2026-09-28"),   # Wed: Thu 24, (25-27 off) Mon 28
    ("2026-09-29 10:00", "2026-10-08"),   # Tue: Wed 30, (1-7 Oct off) Thu 8
    ("2026-09-30 10:00", "2026-10-09"),
    ("2026-10-03 10:00", "2026-10-09"),   # during the holiday
    ("2026-10-08 10:00", "2026-10-10"),   # Thu: Fri 9, Sat 10 (make-up workday)
    ("2026-10-09 10:00", "2026-10-12"),   # Fri: Sat 10, (Sun 11 off) Mon 12
    # 春节 2026
    ("2026-02-12 10:00", "2026-02-14"),   # Thu: Fri 13, Sat 14 (make-up workday)
    ("2026-02-13 10:00", "2026-02-24"),   # Fri: Sat 14, (15-23 off) Tue 24
    ("2026-02-14 10:00", "2026-02-25"),   # on the make-up Saturday
    ("2026-02-16 10:00", "2026-02-25"),
    ("2026-02-26 10:00", "2026-02-28"),   # Thu: Fri 27, Sat 28 (make-up workday)
    # Into 2027 (provisional): Thu 31 Dec, (Fri 1 Jan holiday, weekend) Mon 4 Jan
    ("2026-12-30 10:00", "2027-01-04"),
])
def test_earliest_bookable(cal, request_at, earliest):
    assert cal.earliest_bookable(at(request_at), lead_workdays=LEAD) == D(earliest)


def test_request_date_is_the_local_date_of_the_moment(cal):
    # Wednesday 23:59:59 → Friday; Thursday 00:00 → Monday.
    assert cal.earliest_bookable(at("2026-12-02 23:59:59"), lead_workdays=LEAD) == D("2026-12-04")
    assert cal.earliest_bookable(at("2026-12-03 00:00:00"), lead_workdays=LEAD) == D("2026-12-07")
    # The same moments in UTC (Shanghai is UTC+8).
    utc = timezone.utc
    assert (cal.earliest_bookable(datetime(2026, 12, 2, 15, 59, 59, tzinfo=utc), lead_workdays=LEAD)
            == D("2026-12-04"))
    assert (cal.earliest_bookable(datetime(2026, 12, 2, 16, 0, 0, tzinfo=utc), lead_workdays=LEAD)
            == D("2026-12-07"))


def test_a_naive_request_time_is_refused(cal):
    with pytest.raises(ValueError):
        cal.earliest_bookable(datetime(2026, 12, 2, 10, 0), lead_workdays=LEAD)


def test_lead_workdays_is_a_parameter(cal):
    assert cal.earliest_bookable(at("2026-12-02 10:00"), lead_workdays=1) == D("2026-12-03")
    assert cal.earliest_bookable(at("2026-12-02 10:00"), lead_workdays=3) == D("2026-12-07")


def test_add_workdays(cal):
    assert cal.add_workdays(D("2026-12-02"), 0) == D("2026-12-02")
    assert cal.add_workdays(D("2026-12-02"), 1) == D("2026-12-03")
    assert cal.add_workdays(D("2026-12-04"), 1) == D("2026-12-07")
    assert cal.add_workdays(D("2026-10-08"), -1) == D("2026-09-30")
    # Make-up workdays count: Sat 10 Oct 2026 is the 2nd working day after Thu 8 Oct.
    assert cal.add_workdays(D("2026-10-08"), 2) == D("2026-10-10")


@pytest.mark.parametrize("day, before", [
    ("2026-12-08", "2026-12-07"),  # Tuesday → Monday
    ("2026-12-07", "2026-12-04"),  # Monday → Friday
    ("2026-12-06", "2026-12-04"),  # Sunday → Friday
    ("2026-10-08", "2026-09-30"),  # after 国庆
    ("2026-10-11", "2026-10-10"),  # Sunday after a make-up Saturday
    ("2026-02-24", "2026-02-14"),  # after 春节: the make-up Saturday
    ("2026-09-21", "2026-09-20"),  # Monday after a make-up Sunday
])
def test_last_workday_before(cal, day, before):
    assert cal.last_workday_before(D(day)) == D(before)


# --- Free cancellation -------------------------------------------------------------------


@pytest.mark.parametrize("service, deadline", [
    ("2026-12-08", "2026-12-07 12:00"),
    ("2026-12-07", "2026-12-04 12:00"),  # a Monday: Friday noon
    ("2026-10-08", "2026-09-30 12:00"),  # the day before is a holiday: before 国庆
    ("2026-10-05", "2026-09-30 12:00"),  # a service during the holiday
    ("2026-02-24", "2026-02-14 12:00"),  # after 春节: the make-up Saturday
    ("2026-10-11", "2026-10-10 12:00"),
])
def test_free_cancel_deadline(cal, service, deadline):
    got = cal.free_cancel_deadline(D(service), cutoff=CUTOFF)
    assert got == at(deadline)
    assert got.utcoffset() == timedelta(hours=8)


def test_free_cancel_deadline_both_sides_of_noon(cal):
    deadline = cal.free_cancel_deadline(D("2026-10-08"), cutoff=CUTOFF)
    assert at("2026-09-30 11:59:59") < deadline          # still free
    assert not at("2026-09-30 12:00:00") < deadline      # counted from 12:00 on
    # 04:00 UTC is noon in Shanghai.
    assert datetime(2026, 9, 30, 3, 59, 59, tzinfo=timezone.utc) < deadline
    assert not datetime(2026, 9, 30, 4, 0, 0, tzinfo=timezone.utc) < deadline


# --- Sources: official, provisional, override ----------------------------------------------


def test_official_years_edges(cal):
    years = official_years()
    assert (years.start, years.stop - 1) == (2004, 2026)
    assert cal.source(2003) == "provisional"
    assert cal.source(2004) == "official"
    assert cal.source(2026) == "official"
    assert cal.source(2027) == "provisional"


@pytest.mark.parametrize("day, workday", [
    ("2027-01-01", False),  # New Year's Day, a Friday
    ("2027-01-04", True),
    ("2027-02-05", False),  # 除夕 (Friday)
    ("2027-02-10", False),  # Wednesday, observed
    ("2027-02-11", True),
    ("2027-09-30", True),
    ("2027-10-01", False),  # National Day, a Friday
    ("2027-10-04", False),  # observed
    ("2027-10-05", False),  # observed
    ("2027-10-06", True),   # provisional: the notice will likely make it a holiday
    ("2027-10-09", False),  # a Saturday: no make-up workday on a provisional calendar
])
def test_provisional_2027(cal, day, workday):
    assert cal.source(2027) == "provisional"
    assert cal.is_provisional(D(day))
    assert cal.is_workday(D(day)) is workday


def test_lead_time_on_the_provisional_calendar(cal):
    # Thu 30 Sep 2027: (1-5 Oct off) Wed 6, Thu 7.
    assert cal.earliest_bookable(at("2027-09-30 10:00"), lead_workdays=LEAD) == D("2027-10-07")
    # Thu 4 Feb 2027: (5-10 Feb off) Thu 11, Fri 12.
    assert cal.earliest_bookable(at("2027-02-04 10:00"), lead_workdays=LEAD) == D("2027-02-12")
    assert cal.touches_provisional(D("2026-12-30"), D("2027-01-04"))
    assert not cal.touches_provisional(D("2026-12-01"), D("2026-12-31"))


def test_a_provisional_year_warns_once(caplog):
    calendar = Calendar()
    with caplog.at_level(logging.WARNING, logger="bot.domain.workdays"):
        calendar.is_workday(D("2027-03-01"))
        calendar.is_workday(D("2027-10-01"))
        calendar.earliest_bookable(at("2027-06-01 10:00"), lead_workdays=LEAD)
        calendar.is_workday(D("2026-03-02"))  # official: no warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2027" in warnings[0].getMessage()


def test_override_year(cal_2027):
    assert cal_2027.source(2027) == "override"
    assert not cal_2027.is_provisional(D("2027-10-06"))
    assert not cal_2027.is_workday(D("2027-10-06"))      # a listed holiday (range)
    assert not cal_2027.is_workday(D("2027-10-07"))      # range end included
    assert cal_2027.is_workday(D("2027-10-08"))
    assert cal_2027.is_workday(D("2027-10-09"))           # listed Saturday
    assert cal_2027.is_workday(D("2027-09-26"))           # listed Sunday
    assert not cal_2027.is_workday(D("2027-10-10"))       # unlisted Sunday
    assert cal_2027.is_workday(D("2027-02-10"))           # unlisted weekday: the library's
                                                          # provisional holiday no longer counts
    assert not cal_2027.is_workday(D("2027-01-01"))
    # Thu 30 Sep 2027: (1-7 Oct off) Fri 8, Sat 9 (make-up workday).
    assert cal_2027.earliest_bookable(at("2027-09-30 10:00"), lead_workdays=LEAD) == D("2027-10-09")
    assert cal_2027.free_cancel_deadline(D("2027-10-08"), cutoff=CUTOFF) == at("2027-09-30 12:00")


def test_an_override_entry_reaching_into_the_previous_year_wins(cal, cal_2027):
    assert cal.is_workday(D("2026-12-31"))
    assert cal_2027.source(2026) == "official"
    assert not cal_2027.is_workday(D("2026-12-31"))
    assert cal_2027.is_workday(D("2026-12-30"))


def test_an_override_wins_over_the_library():
    calendar = Calendar(parse_overrides({"years": {"2026": {"holidays": ["2026-10-01"]}}}))
    assert calendar.source(2026) == "override"
    assert not calendar.is_workday(D("2026-10-01"))
    assert calendar.is_workday(D("2026-10-02"))   # a Friday, off in the library
    assert not calendar.is_workday(D("2026-10-10"))  # the library's make-up Saturday


def test_check_year(cal, cal_2027):
    source, message = cal.check_year(2026)
    assert source == "official"
    assert "WARNING" not in message
    source, message = cal.check_year(2027)
    assert source == "provisional"
    assert "WARNING" in message and "2027" in message and "calendar_overrides.toml" in message
    source, message = cal_2027.check_year(2027)
    assert source == "override"
    assert "test notice 2027" in message and "WARNING" not in message
    assert check_command(cal, [2026])[0] == 0
    status, text = check_command(cal, [2026, 2027])
    assert status == 1 and text.count("\n") >= 2


# --- The override file -------------------------------------------------------------------


def test_the_repo_file_loads_and_its_example_matches_the_library(cal):
    lines = OVERRIDES.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# EXAMPLE"))
    example = "\n".join(line[2:] for line in lines[start + 1:] if line.startswith("# "))
    example_calendar = Calendar(parse_overrides(tomllib.loads(example)))
    assert example_calendar.source(2026) == "override"
    day = D("2026-01-01")
    while day.year == 2026:
        assert example_calendar.is_workday(day) == cal.is_workday(day), day
        day += timedelta(days=1)


def test_a_missing_override_file_is_empty(tmp_path):
    assert load_overrides(tmp_path / "nope.toml") == {}


@pytest.mark.parametrize("text, problem", [
    ("[years.2027]\nworkdays = [2027-10-08]\n", "years.2027.workdays[#1]: 2027-10-08 is a weekday"),
    ("[years.2027]\nholidays = [\"2027-13-01\"]\n", "years.2027.holidays[#1]: '2027-13-01' is not a date"),
    ("[years.2027]\nholidays = [2027-10-01, 2027-10-01]\n", "already listed"),
    ("[years.2027]\nholidays = [2027-10-09]\nworkdays = [2027-10-09]\n", "already listed"),
    ("[years.2027]\nholidays = [{from = 2027-10-07, to = 2027-10-01}]\n", "ends"),
    ("[years.2027]\nholidays = [2029-10-01]\n", "not in or next to 2027"),
    ("[years.2027]\nholiday = [2027-10-01]\n", "years.2027.holiday: unknown key"),
    ("[years.27]\nholidays = []\n", "four digits"),
    ("[2027]\nholidays = []\n", "2027: unknown key"),
    ("[years.2027\n", "not valid TOML"),
])
def test_a_bad_override_file_names_the_key(tmp_path, text, problem):
    path = tmp_path / "calendar_overrides.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalendarError) as caught:
        load_overrides(path)
    message = str(caught.value)
    assert problem in message and str(path) in message and "\n" not in message


def test_a_calendar_without_working_days_fails_loudly():
    from bot.domain.workdays import YearOverride
    every_day = frozenset(date(2030, 1, 1) + timedelta(days=i) for i in range(365))
    calendar = Calendar({2030: YearOverride(holidays=every_day)})
    with pytest.raises(CalendarError, match="no working day"):
        calendar.add_workdays(D("2030-06-01"), 1)

"""Typed Chinese dates (bot/domain/dates.py) and the booking checks on them.

Every expected value below was worked out by hand from the calendar (see test_workdays.py for
the 2026 holidays and the provisional 2027 ones). Each row: what the customer types, then the
expected date with the booking check's result (None: bookable), or no date and the parse
refusal.

Reference MON: Monday 30 November 2026, 10:00 Asia/Shanghai. Earliest bookable: Wednesday
2 December (Tue 1 and Wed 2 are the two working days). Window: 90 days, to Sunday 28 February
2027 inclusive.
"""
from __future__ import annotations

from datetime import date

import pytest

from bot.domain.dates import (ParsedDate, normalize, parse_date, service_date_notes,
                              validate_service_date)
from tests.support.calendar import D, OVERRIDES, TZ, at, cal  # noqa: F401 (cal: a fixture)
from tests.support.tiers import RULES


MON = "2026-11-30 10:00"

# (text, expected date or None, booking check result when a date / parse reason when None)
TABLE_MON = [
    # Month and day, every way of writing it
    ("12月3日", "2026-12-03", None),
    ("12月3号", "2026-12-03", None),
    ("12.3", "2026-12-03", None),
    ("12/3", "2026-12-03", None),
    ("12-3", "2026-12-03", None),
    ("2026-12-03", "2026-12-03", None),
    ("2026年12月3日", "2026-12-03", None),
    ("2026/12/3", "2026-12-03", None),
    ("2026.12.3", "2026-12-03", None),
    ("十二月三日", "2026-12-03", None),
    ("十二月三号", "2026-12-03", None),
    ("１２月３日", "2026-12-03", None),             # full-width digits
    ("12月3日上午", "2026-12-03", None),
    ("12月3日下午3点", "2026-12-03", None),
    ("我想约12月8号吧。", "2026-12-08", None),
    ("12月3日？", "2026-12-03", None),
    ("12月二十日", "2026-12-20", None),
    # Weekdays: this week is Mon 30 Nov - Sun 6 Dec
    ("下周三", "2026-12-09", None),
    ("下星期一", "2026-12-07", None),
    ("下周三下午", "2026-12-09", None),
    ("这周五", "2026-12-04", None),
    ("本周日", "2026-12-06", None),                 # a Sunday: not refused here
    ("周五", "2026-12-04", None),
    ("星期五", "2026-12-04", None),
    ("礼拜六", "2026-12-05", None),
    ("周一", "2026-11-30", "too_soon"),              # today
    ("下下周一", "2026-12-14", None),
    # Relative days: the lead-time edge is Wed 2 Dec
    ("今天", "2026-11-30", "too_soon"),
    ("明天", "2026-12-01", "too_soon"),
    ("后天", "2026-12-02", None),
    ("后天上午", "2026-12-02", None),
    ("大后天", "2026-12-03", None),
    ("3天后", "2026-12-03", None),
    # A bare day: the next one on or after today
    ("3号", "2026-12-03", None),
    ("3日", "2026-12-03", None),
    ("13号", "2026-12-13", None),
    ("30号", "2026-11-30", "too_soon"),
    ("1号", "2026-12-01", "too_soon"),
    ("31号", "2026-12-31", None),                    # November has no 31st
    # Next month, month ends
    ("下个月5号", "2026-12-05", None),               # a Saturday: not refused here
    ("月底", "2026-11-30", "too_soon"),
    ("下月底", "2026-12-31", None),
    ("下个月底", "2026-12-31", None),
    # Next year: a month-day means its nearest occurrence
    ("1月4日", "2027-01-04", None),
    ("2027年1月4日", "2027-01-04", None),
    ("明年1月4日", "2027-01-04", None),
    ("2月28日", "2027-02-28", None),                 # 90 days ahead: the window's last day
    ("2027年2月28日", "2027-02-28", None),
    ("3月1日", "2027-03-01", "beyond_window"),       # 91 days
    ("2027年3月1日", "2027-03-01", "beyond_window"),
    # Holidays and the working-day calendar (2027 is provisional)
    ("元旦", "2027-01-01", None),                    # a holiday: not refused here
    ("元旦后第一个工作日", "2027-01-04", None),      # Fri 1 Jan off, weekend, Mon 4
    ("春节", "2027-02-06", None),                    # 正月初一 2027
    ("春节后第一个工作日", "2027-02-11", None),      # 6-10 Feb off (provisional)
    ("国庆后第一个工作日", "2027-10-06", "beyond_window"),  # 1-5 Oct 2027 off (provisional)
    # Past
    ("11月29日", None, "past"),
    ("6月1日", None, "past"),                        # 182 days ago is nearer than 183 ahead
    ("昨天", None, "past"),
    ("上周五", None, "past"),
    ("2025年12月3日", None, "past"),
    ("2026-11-29", None, "past"),
    # Spans of days: ask which day
    ("下周", None, "ambiguous"),
    ("本周", None, "ambiguous"),
    ("12月", None, "ambiguous"),
    ("十二月", None, "ambiguous"),
    ("下个月", None, "ambiguous"),
    ("周末", None, "ambiguous"),
    ("12月中旬", None, "ambiguous"),
    ("一周后", None, "ambiguous"),
    ("最近", None, "ambiguous"),
    # Not a date
    ("啊啊啊", None, "nonsense"),
    ("明年的某一天", None, "nonsense"),
    ("32号", None, "nonsense"),
    ("0号", None, "nonsense"),
    ("13月5日", None, "nonsense"),
    ("12月0日", None, "nonsense"),
    ("2月30日", None, "nonsense"),
    ("2月29日", None, "nonsense"),                   # neither 2026 nor 2027 is a leap year
    ("2026-02-30", None, "nonsense"),
    ("13月", None, "nonsense"),
    ("每周五", None, "nonsense"),
    ("洁牙", None, "nonsense"),
    ("", None, "empty"),
    ("  。", None, "empty"),
]

# Reference TUE_BEFORE_NATIONAL_DAY: Tuesday 29 September 2026, 10:00. Earliest bookable:
# Thursday 8 October (Wed 30 Sep, then 1-7 Oct off).
TUE_SEP = "2026-09-29 10:00"
TABLE_SEP = [
    ("国庆", "2026-10-01", "too_soon"),
    ("10月7日", "2026-10-07", "too_soon"),
    ("9月30日", "2026-09-30", "too_soon"),
    ("明天", "2026-09-30", "too_soon"),
    ("10月8日", "2026-10-08", None),
    ("国庆后第一个工作日", "2026-10-08", None),
    ("国庆节后的第二个工作日", "2026-10-09", None),
    ("10月10日", "2026-10-10", None),                # a make-up Saturday
    ("9月25日", None, "past"),                       # 中秋 2026, four days ago
]

# Reference SUN_DEC: Sunday 20 December 2026, 10:00 (year rollover). Earliest bookable:
# Tuesday 22 December. Window: to Saturday 20 March 2027 inclusive.
SUN_DEC = "2026-12-20 10:00"
TABLE_DEC = [
    ("1月4日", "2027-01-04", None),
    ("1.4", "2027-01-04", None),
    ("3号", "2027-01-03", None),                     # a Sunday: not refused here
    ("19号", "2027-01-19", None),
    ("20号", "2026-12-20", "too_soon"),
    ("12月25日", "2026-12-25", None),
    ("12月15日", None, "past"),
    ("12.3", None, "past"),
    ("下个月5号", "2027-01-05", None),
    ("元旦", "2027-01-01", None),
    ("元旦后第一个工作日", "2027-01-04", None),
    ("月底", "2026-12-31", None),
    ("下月底", "2027-01-31", None),
    ("周五", "2026-12-25", None),
    ("周日", "2026-12-20", "too_soon"),
    ("下周一", "2026-12-21", "too_soon"),
    ("明天", "2026-12-21", "too_soon"),
    ("后天", "2026-12-22", None),
    ("3月20日", "2027-03-20", None),                 # 90 days
    ("3月21日", "2027-03-21", "beyond_window"),      # 91 days
]

# Reference SUN_JAN: Sunday 3 January 2027, 10:00: last December is past, not next year.
SUN_JAN = "2027-01-03 10:00"
TABLE_JAN = [
    ("12月28日", None, "past"),
    ("12月31日", None, "past"),
    ("1月2日", None, "past"),
    ("2号", "2027-02-02", None),
    ("周一", "2027-01-04", "too_soon"),              # earliest: Tue 5 Jan
    ("1月5日", "2027-01-05", None),
]


def validate(d, request_dt, cal, **rule):
    """`validate_service_date` under the shipped booking rules, or those `rule` changes."""
    booking = RULES.booking
    return validate_service_date(d, request_dt, cal, **{"lead_workdays": booking.lead_workdays,
                                                        "window_days": booking.window_days,
                                                        **rule})


def _check(cal, reference, text, expected, code):
    result = parse_date(text, at(reference), cal)
    if expected is None:
        assert result == ParsedDate(reason=code), (text, result)
        assert not result.ok
        return
    assert result == ParsedDate(D(expected)), (text, result)
    assert result.ok
    assert validate(result.date, at(reference), cal) == code, text


@pytest.mark.parametrize("text, expected, code", TABLE_MON)
def test_monday_30_november(cal, text, expected, code):
    _check(cal, MON, text, expected, code)


@pytest.mark.parametrize("text, expected, code", TABLE_SEP)
def test_before_national_day(cal, text, expected, code):
    _check(cal, TUE_SEP, text, expected, code)


@pytest.mark.parametrize("text, expected, code", TABLE_DEC)
def test_late_december(cal, text, expected, code):
    _check(cal, SUN_DEC, text, expected, code)


@pytest.mark.parametrize("text, expected, code", TABLE_JAN)
def test_early_january(cal, text, expected, code):
    _check(cal, SUN_JAN, text, expected, code)


def test_the_table_is_big_enough():
    assert len(TABLE_MON) + len(TABLE_SEP) + len(TABLE_DEC) + len(TABLE_JAN) >= 60


def test_a_passed_festival_means_the_next_one(cal):
    # 中秋 2026 was Fri 25 Sep: on 29 Sep the next 中秋 is 2027's (15 Sep, provisional).
    assert parse_date("中秋", at(TUE_SEP), cal) == ParsedDate(D("2027-09-15"))
    assert parse_date("今年中秋", at(TUE_SEP), cal) == ParsedDate(reason="past")


def test_a_bare_weekday_already_passed_this_week_is_next_weeks(cal):
    friday = at("2026-12-04 10:00")
    assert parse_date("周一", friday, cal) == ParsedDate(D("2026-12-07"))
    assert parse_date("这周一", friday, cal) == ParsedDate(reason="past")
    # Fri 4 Dec: Mon 7, Tue 8 are the two working days.
    assert validate(D("2026-12-07"), friday, cal) == "too_soon"
    assert validate(D("2026-12-08"), friday, cal) is None


def test_today_is_the_local_date_of_the_reference(cal):
    assert parse_date("明天", at("2026-11-30 23:59:59"), cal) == ParsedDate(D("2026-12-01"))
    assert parse_date("明天", at("2026-12-01 00:00:00"), cal) == ParsedDate(D("2026-12-02"))
    assert parse_date("11月30日", at("2026-11-30 23:59:59"), cal) == ParsedDate(D("2026-11-30"))
    assert parse_date("11月30日", at("2026-12-01 00:00:00"), cal) == ParsedDate(reason="past")


# --- validate_service_date -----------------------------------------------------------------


def test_lead_time_at_midnight(cal):
    # Tue 1 Dec 23:59:59 → earliest Thu 3 Dec; Wed 2 Dec 00:00 → earliest Fri 4 Dec.
    assert validate(D("2026-12-03"), at("2026-12-01 23:59:59"), cal) is None
    assert validate(D("2026-12-03"), at("2026-12-02 00:00:00"), cal) == "too_soon"
    assert validate(D("2026-12-04"), at("2026-12-02 00:00:00"), cal) is None


def test_validate_edges(cal):
    monday = at(MON)
    assert validate(D("2026-11-29"), monday, cal) == "past"
    assert validate(D("2026-11-30"), monday, cal) == "too_soon"
    assert validate(D("2026-12-01"), monday, cal) == "too_soon"
    assert validate(D("2026-12-02"), monday, cal) is None
    assert validate(D("2027-02-28"), monday, cal) is None
    assert validate(D("2027-03-01"), monday, cal) == "beyond_window"
    # Settings are parameters.
    assert validate(D("2026-12-01"), monday, cal, lead_workdays=1) is None
    assert validate(D("2026-12-02"), monday, cal, lead_workdays=3) == "too_soon"
    assert validate(D("2026-12-30"), monday, cal, window_days=30) is None
    assert validate(D("2026-12-31"), monday, cal, window_days=30) == "beyond_window"


def test_a_holiday_or_weekend_service_date_is_not_refused(cal):
    # Request Tue 22 Sep 2026: Wed 23, Thu 24 → 中秋 (Fri 25) and 国庆 dates are bookable.
    tuesday = at("2026-09-22 10:00")
    assert validate(D("2026-09-24"), tuesday, cal) is None
    assert validate(D("2026-09-25"), tuesday, cal) is None
    assert validate(D("2026-10-01"), tuesday, cal) is None
    assert validate(D("2026-09-23"), tuesday, cal) == "too_soon"


def test_service_date_notes(cal):
    monday = at(MON)
    assert service_date_notes(D("2026-12-02"), monday, cal) == frozenset()
    assert service_date_notes(D("2026-12-05"), monday, cal) == {"day_off"}
    assert service_date_notes(D("2027-01-04"), monday, cal) == {"provisional"}
    assert service_date_notes(D("2027-01-01"), monday, cal) == {"day_off", "provisional"}


def test_normalize():
    assert normalize(" 我想约 十二月 三十一号 吧！") == "12月31号"
    assert normalize("２０２６／１２／３") == "2026/12/3"
    assert normalize("星期日") == "星期日"

"""What the customer typed, read for what it says (issue 14 §1): a choice step takes a tap
or number, then an exact label or keyword, then the step's own parser (a typed date is a
date), and a near match only after asking back. Through /wechat with a fixed clock:
Wednesday 2 December 2026, 10:00 Asia/Shanghai. DOMAIN.md: the earliest bookable date is
the 2nd working day after the request, so 12月4日…12月8日 are the five dates offered at an
institution open every day; the window is 90 days (to 2 March 2027)."""
from __future__ import annotations

from datetime import date

import pytest
import time_machine
from sqlmodel import Session

from models import Booking
from tests.test_booking import INSTITUTIONS, U, bookings, walk, world  # noqa: F401 (fixture)

NOW = "2026-12-02 10:00:00+08:00"
TO_DATES = ("预约洁牙", "本人", "上海", "上海洁牙门诊")  # S1 is open every day


async def at_date_step(wx) -> str:
    *_, ask = await walk(wx, U, *TO_DATES)
    assert "1. 12月4日" in ask and "5. 12月8日" in ask, ask
    return ask


# --- The date step: a typed date is the date typed ------------------------------------------------


@pytest.mark.parametrize("typed,day", [
    ("12月15号", date(2026, 12, 15)),
    ("12月16号", date(2026, 12, 16)),
    ("12月24号", date(2026, 12, 24)),
    ("12月5日", date(2026, 12, 5)),  # inside the offered list, typed rather than numbered
    ("5号", date(2026, 12, 5)),
    ("10号", date(2026, 12, 10)),
    ("下周三", date(2026, 12, 9)),
    ("2026-12-20", date(2026, 12, 20)),
    ("元旦", date(2027, 1, 1)),
])
async def test_a_typed_date_is_booked_as_typed(wx_plain, world, services, typed, day):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        summary = await wx_plain.say(U, typed)
        assert f"{day.year}年{day.month}月{day.day}日" in summary, summary
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == day and b.quota_year == day.year


@pytest.mark.parametrize("typed,why", [
    ("12月3号", "2026年12月4日"),  # inside the lead time: the earliest date is said
    ("2027-03-15", "90"),  # beyond the 90-day window
    ("12月1日", "过去"),  # yesterday
])
async def test_a_typed_date_the_rules_refuse_gets_the_reason(wx_plain, world, services, typed,
                                                             why):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        reply = await wx_plain.say(U, typed)
        assert why in reply and "请核对预约信息" not in reply, reply
        confirm = await wx_plain.say(U, "确认")  # nothing to confirm: still at the date step
        assert "请核对预约信息" not in confirm
    assert bookings(services) == []


async def test_a_typed_date_in_a_spent_year_is_refused_not_moved(wx_plain, world, services):
    """With 2026's use spent the list starts 1月1日; 12月18日 is refused for that reason and
    never becomes 2027年1月1日 (which would spend 2027's use)."""
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES, "1", "确认")  # 4 December: 2026's use
        *_, ask = await walk(wx_plain, U, *TO_DATES)
        assert "1. 1月1日" in ask
        assert "2026年的洁牙" in ask.split("1. 1月1日")[0]  # said before the list
        reply = await wx_plain.say(U, "12月18日")
        assert "2026" in reply and "用完" in reply and "请核对预约信息" not in reply, reply
        await wx_plain.say(U, "确认")
    assert [b.preferred_date for b in bookings(services)] == [date(2026, 12, 4)]


async def test_a_summary_in_another_year_says_which_years_use_it_spends(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        summary = await wx_plain.say(U, "2027-01-06")
        this_year = await walk(wx_plain, U, "返回", "12月7日")
    assert "将使用2027年的洁牙" in summary
    assert "将使用" not in this_year[-1] and "2026年12月7日" in this_year[-1]

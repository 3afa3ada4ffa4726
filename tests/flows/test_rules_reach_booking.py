"""The booking rules the chat applies are rules.toml's (issue 18 §4: no rule value repeated
as a default in code): each test changes one booking rule in a copy of the shipped rules.toml
and books through the signed /wechat door. Fixed clock: Wednesday 2 December 2026, 10:00
Asia/Shanghai; 上海洁牙门诊 is open every day. As shipped (docs/programme.md: the 2nd working
day, 90 days) the dates offered start on Friday 4 December (tests/flows/test_booking_typed.py)."""
from __future__ import annotations

import time_machine

from tests.support.booking import INSTITUTIONS, U, bookings, walk, world  # noqa: F401 (fixture)
from tests.support.rules import change, changed, settings  # noqa: F401  (fixtures)

NOW = "2026-12-02 10:00:00+08:00"
TO_DATES = ("预约洁牙", "本人", "上海", "上海洁牙门诊")


@change(("lead_workdays = 2", "lead_workdays = 3"))
async def test_the_lead_time_decides_the_first_date(wx_plain, world, services):
    # 3 working days after Wednesday 2 December: Thursday 3, Friday 4, Monday 7.
    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, ask = await walk(wx_plain, U, *TO_DATES)
        assert "1. 12月7日" in ask and "12月4日" not in ask, ask
        typed = await wx_plain.say(U, "12月4日")
        assert "2026年12月7日" in typed and "请核对预约信息" not in typed, typed
    assert bookings(services) == []


@change(("window_days = 90", "window_days = 30"))
async def test_the_window_decides_the_last_date(wx_plain, world, services):
    # 30 days after 2 December is 1 January 2027: 1 January is bookable, 2 January is not.
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES)
        late = await wx_plain.say(U, "2027-01-02")
        assert "30" in late and "请核对预约信息" not in late, late
        summary = await wx_plain.say(U, "2027-01-01")
        assert "2027年1月1日" in summary and "请核对预约信息" in summary, summary

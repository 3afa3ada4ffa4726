"""A booking refused at commit is answered from the facts as they are then, not as the
message read them before (issue 18: the booking facts live in the message's memo, and the
commit's refusal reads them again). Through /wechat with a fixed clock: Wednesday 2 December
2026, 10:00 Asia/Shanghai. docs/programme.md: 洁牙 is once a year for a gold customer; the
earliest bookable date is the 2nd working day after the request (12月4日)."""
from __future__ import annotations

import dataclasses
from datetime import date

import time_machine

from bot.domain import booking_store
from tests.support.booking import U, bookings, walk, world  # noqa: F401 (fixture)

NOW = "2026-12-02 10:00:00+08:00"
TO_DATES = ("预约洁牙", "本人", "上海", "上海洁牙门诊")  # S1 is open every day


async def test_the_year_spent_while_confirming_is_said_and_next_year_offered(
        wx_plain, world, services, monkeypatch):
    """Another 洁牙 for this customer lands between the confirm step's check and the commit
    (a race with another device, played here inside the commit): the refusal says 2026's use
    is spent and the date step offers 2027's dates."""
    submit = booking_store.submit_booking

    def raced(session, new, *args, **kw):
        submit(session, dataclasses.replace(new, request_key=new.request_key + ":other"),
               *args, **kw)  # the competing booking, counted first
        return submit(session, new, *args, **kw)

    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, summary = await walk(wx_plain, U, *TO_DATES, "1")
        assert "2026年12月4日" in summary and "请核对预约信息" in summary, summary
        monkeypatch.setattr(booking_store, "submit_booking", raced)
        refused = await wx_plain.say(U, "确认")
        monkeypatch.setattr(booking_store, "submit_booking", submit)
        assert "2026年的洁牙" in refused and "用完" in refused, refused
        assert "1. 1月1日" in refused and "12月4日" not in refused.split("用完")[-1], refused
        *_, summary = await walk(wx_plain, U, "1")
        assert "2027年1月1日" in summary, summary
        await wx_plain.say(U, "确认")
    assert [b.preferred_date for b in bookings(services)] == [date(2027, 1, 1)]

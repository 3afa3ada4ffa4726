"""Times in the console are Asia/Shanghai's wall clock (DOMAIN: "Times are shown in
Asia/Shanghai everywhere a person reads them"), on every page that shows one, the audit's
before and after records included (issue 14), with the clock where UTC and Shanghai disagree
on the date: a message left at 05:05 Shanghai on 7 December (21:05 UTC on the 6th) and
answered at 22:30 Shanghai (14:30 UTC), a booking confirmed at 22:30 Shanghai."""
from __future__ import annotations

import re

import pytest
import time_machine
from sqlalchemy import update
from sqlmodel import Session

from models import WechatUser
from tests.support.console import ADMIN_LOGIN, SPEC_LOGIN, add_staff, csrf_of, post, sign_in
from tests.support.staff import SPEC, U, audits, booked, desk  # noqa: F401

pytestmark = pytest.mark.settings(admin_enabled=True)

LEFT = "2026-12-07 05:05:00+08:00"  # 2026-12-06 21:05 UTC
ANSWERED = "2026-12-07 22:30:00+08:00"  # 2026-12-07 14:30 UTC
UTC_ONLY = ("+00:00", "2026-12-06 21:05", "2026-12-06T21:05", "14:30")


@pytest.fixture
def console(desk, services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, "oStaffAdmn000000000000001", "赵主管", "admin", ADMIN_LOGIN)
    return desk


def no_utc(page: str, where: str) -> None:
    for utc in UTC_ONLY:
        assert utc not in page, (where, utc, re.findall(rf".{{0,80}}{re.escape(utc)}.{{0,40}}", page))


async def test_a_left_message_and_its_reply_are_shown_in_shanghai_time(http, console, services,
                                                                       sent):
    from bot.domain.messages import leave_message

    with time_machine.travel(LEFT, tick=False):
        with Session(services.engine) as s:
            mid = leave_message(s, U, "体检报告什么时候出？", services.now(), console.id)
            s.flush()
            mid = mid.id
            s.commit()
    with time_machine.travel(ANSWERED, tick=True):
        with Session(services.engine) as s:  # the customer wrote just now: inside the window
            s.execute(update(WechatUser).where(WechatUser.openid == U)
                      .values(last_seen_at=services.now()))
            s.commit()
        await sign_in(http, SPEC_LOGIN)
        res = await post(http, "/admin/messages", f"/admin/messages/{mid}/reply",
                         {"text": "报告预计三个工作日内出。"})
        assert res.status_code == 200, res.text
        messages = (await http.get("/admin/messages?all=1")).text
        audit = (await http.get(f"/admin/audit?target=message:{mid}")).text
    (row,) = audits(services, "reply")
    assert "+00:00" in row.after  # stored in UTC, as every instant is
    assert "2026-12-07 05:05" in messages and "已处理 2026-12-07 22:30" in messages
    no_utc(messages, "/admin/messages")
    # The row's time, and the record after it: left 05:05 on the 7th, closed 22:30 the same day.
    assert "<td>2026-12-07 22:30</td>" in audit
    assert "2026-12-07T05:05:00+08:00" in audit and "2026-12-07T22:30:00" in audit
    no_utc(audit, "/admin/audit")


async def test_a_booking_confirmed_late_at_night_shows_its_shanghai_times(wx_plain, http, console,
                                                                          services, wechat_api):
    with time_machine.travel("2026-11-25 10:00:00+08:00", tick=True):
        b = await booked(wx_plain, services)
    with time_machine.travel("2026-11-25 22:30:00+08:00", tick=True):  # 14:30 UTC
        await sign_in(http, SPEC_LOGIN)
        page = await http.get(f"/admin/bookings/{b.number}")
        res = await http.post(f"/admin/bookings/{b.number}/confirm", data={
            "day": "2026-11-30", "at": "09:30", "place": "", "version": str(b.version),
            "csrf": csrf_of(page.text)})
        assert res.status_code == 200, res.text
        story = (await http.get(f"/admin/bookings/{b.number}")).text
        audit = (await http.get(f"/admin/audit?target={b.number}")).text
    assert "<dt>提交时间</dt><dd>2026-11-25 10:00</dd>" in story
    assert "<dt>确认时间</dt><dd>2026-11-25 22:30</dd>" in story
    assert "<td>2026-11-25 22:30</td>" in story  # the status history's row
    no_utc(story, "/admin/bookings/…")
    assert "<td>2026-11-25 22:30</td>" in audit
    no_utc(audit, "/admin/audit")

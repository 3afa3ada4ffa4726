"""The console's bookings (issue 16): the queue and its filters, the masked CSV, a booking's
page, and the actions, which are the chat commands' own (#确认, #完成, #取消): the same
template message to the customer (in the WeChat double's log), the same audit rows, the same
refusals, and the version check against a colleague's change."""
from __future__ import annotations

import json
from datetime import date

import pytest
import time_machine
from sqlalchemy import update
from sqlmodel import Session

from bot.domain.vocab import BookingStatus
from models import Booking
from tests.support.console import ADMIN_LOGIN, SPEC_LOGIN, add_staff, csrf_of, post, sign_in
from tests.support.booking import WED, bookings
from tests.support.staff import (ADMIN, SPEC, U, audits, booked, delivered, desk,  # noqa: F401
                              notes)

pytestmark = pytest.mark.settings(admin_enabled=True)


@pytest.fixture
def console(desk, services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)
    return desk


async def test_the_queue_shows_the_booking_masked_and_filters_it(wx_plain, http, console,
                                                                 services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await sign_in(http, SPEC_LOGIN)
        page = await http.get("/admin/bookings")
        assert b.number in page.text and "洁牙" in page.text and "李*" in page.text
        assert "李四" not in page.text and "受理" in page.text
        for query, shown in (("status=submitted&service=dental&city=北京", True),
                             ("status=completed", False), ("city=上海", False),
                             ("needs_action=1", True), ("from=2026-11-27&to=2026-11-27", True),
                             ("from=2026-11-28", False), ("to=2026-11-26", False)):
            res = await http.get(f"/admin/bookings?{query}")
            assert res.status_code == 200 and (b.number in res.text) == shown, query
        csv = await http.get("/admin/bookings.csv?service=dental")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("预约号,服务,受益人") and b.number in lines[1]
    assert "李*" in lines[1] and "李四" not in csv.text
    assert csv.headers["cache-control"] == "no-store"


async def test_confirming_from_the_console_is_the_chat_commands_confirmation(
        wx_plain, http, console, services, wechat_api):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await sign_in(http, SPEC_LOGIN)
        page = await http.get(f"/admin/bookings/{b.number}")
        assert page.status_code == 200 and "确认并通知客户" in page.text
        res = await http.post(f"/admin/bookings/{b.number}/confirm", data={
            "day": "2026-11-30", "at": "09:30", "place": "", "version": str(b.version),
            "csrf": csrf_of(page.text)})
        assert res.status_code == 200, res.text
        assert "2026年11月30日" in res.text and "北京洁牙门诊" in res.text
        (b1,) = bookings(services)
        assert b1.status == BookingStatus.CONFIRMED and b1.confirmed_date == date(2026, 11, 30)
        (note,) = notes(services, "booking_confirmed")
        assert note.booking_id == b.id
        template = await delivered(wechat_api, "template", U)
        assert "北京洁牙门诊" in json.dumps(template["body"]["data"], ensure_ascii=False)
        (row,) = audits(services, "confirm")
        assert (row.staff_openid, row.target) == (SPEC, b.number)
        assert json.loads(row.before)["status"] == "submitted"
        assert json.loads(row.after)["status"] == "confirmed"
        # The booking's page tells its story: the audit row and the message sent.
        story = (await http.get(f"/admin/bookings/{b.number}")).text
        assert "确认" in story and "booking_confirmed" in story and "sent" in story


async def test_a_stale_form_is_refused_and_changes_nothing(wx_plain, http, console, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await sign_in(http, SPEC_LOGIN)
        page = await http.get(f"/admin/bookings/{b.number}")
        # A colleague confirms by chat while the form is open.
        await wx_plain.say(ADMIN, f"#确认 {b.number} 2026-12-01 14:00")
        res = await http.post(f"/admin/bookings/{b.number}/confirm", data={
            "day": "2026-11-30", "at": "09:30", "place": "", "version": str(b.version),
            "csrf": csrf_of(page.text)})
        assert res.status_code == 409 and "刚刚被其他同事办理过" in res.text
        (b1,) = bookings(services)
        assert (b1.confirmed_date, b1.confirmed_time) == (date(2026, 12, 1), "14:00")
        assert [a.staff_openid for a in audits(services, "confirm")] == [ADMIN]
        # The same version, the current one: accepted (the edge of the check).
        fresh = await http.get(f"/admin/bookings/{b.number}")
        ok = await http.post(f"/admin/bookings/{b.number}/cancel", data={
            "reason": "机构临时停诊", "version": str(b1.version), "csrf": csrf_of(fresh.text)})
        assert ok.status_code == 200 and "机构临时停诊" in ok.text
    assert bookings(services)[0].status == BookingStatus.CANCELLED


async def test_refusals_are_the_chat_commands_and_bad_input_is_answered(wx_plain, http,
                                                                       console, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await sign_in(http, SPEC_LOGIN)
        page = f"/admin/bookings/{b.number}"
        closed = await post(http, page, f"{page}/confirm", {
            "day": "2026-11-29", "at": "09:30", "place": "", "version": str(b.version)})
        assert closed.status_code == 400 and "不营业" in closed.text
        bad = await post(http, page, f"{page}/confirm", {
            "day": "30/11/2026", "at": "9点", "place": "", "version": str(b.version)})
        assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
        early = await post(http, page, f"{page}/close", {"outcome": "completed",
                                                         "version": str(b.version)})
        assert early.status_code == 400 and "需先确认" in early.text
        missing = await http.get("/admin/bookings/YY2611259999")
        assert missing.status_code == 404
    assert bookings(services)[0].status == BookingStatus.SUBMITTED
    assert [a.action for a in audits(services)] == ["sign_in"]  # and no staff action


async def test_a_confirmation_inside_the_lead_time_warns_as_the_chat_command_does(
        wx_plain, http, console, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await sign_in(http, SPEC_LOGIN)
        page = f"/admin/bookings/{b.number}"
        res = await post(http, page, f"{page}/confirm", {
            "day": "2026-11-26", "at": "10:00", "place": "", "version": str(b.version)})
    assert res.status_code == 200 and "提前预约期限之内" in res.text
    assert bookings(services)[0].status == BookingStatus.CONFIRMED

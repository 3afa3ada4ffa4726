"""Tests for the rule breaks a mutation audit found the suite did not notice (issue 15, "Tests
the mutation audit showed missing"). Each goes through the real doors: the customer and the
staff member talk to /wechat, the reminder sweep is the scheduler's own job, run at a
controlled time. Expected values come from docs/programme.md ("Booking rules", "What a message
means") and the README ("Reminders"), not from the code under test."""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

import pytest
import time_machine
from apscheduler.schedulers.background import BackgroundScheduler
from sqlmodel import Session
from sqlmodel import select as sm_select

from bot.domain.vocab import BookingStatus
from models import Booking, Notification
from scheduler import add_jobs
from tests.support import factories
from tests.support.booking import MID, WED, bookings, walk
from tests.support.staff import SPEC, STRANGER, U, desk, notes  # noqa: F401 (desk: a fixture)

SH = "+08:00"


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment + SH)


async def book(wx, services, day: str, *, openid: str = U) -> str:
    """预约洁牙 for oneself at 北京洁牙门诊 (closed on Sundays and on 2 December 2026) on
    `day`; returns the booking number the customer was given."""
    *_, done = await walk(wx, openid, "预约洁牙", "本人", "北京", "北京洁牙门诊", day, "确认")
    number = bookings(services)[-1].number
    assert number in done, done
    settle(services)
    return number


def job(services, name: str):
    """The scheduler's job `name` (as `python main.py scheduler` runs it), to call by hand."""
    sched = add_jobs(BackgroundScheduler(timezone=services.settings.tz), services.settings,
                     services=services)
    return sched.get_job(name).func


def settle(services) -> None:
    """Send what the outbox holds that is due now (the scheduler's dispatch job) and wait for
    the rows kicked after each commit to be sent, so that nothing is in flight when the test
    moves the clock on."""
    import time as _time

    out = Notification.__table__.c
    for _ in range(250):
        job(services, "dispatch")()
        now = _time.time()
        with services.engine.connect() as c:
            busy = c.execute(sm_select(out.id).where(
                (out.status == "sending") | ((out.status == "pending")
                                             & (out.next_attempt_at <= now)))).first()
        if busy is None:
            return
        _time.sleep(0.02)
    raise AssertionError("the outbox did not drain")


def reminder_rows(services, booking_id: int) -> list[tuple[str, dict]]:
    """The day-before reminders queued for a booking: (channel, payload), oldest first."""
    with Session(services.engine) as s:
        rows = s.exec(sm_select(Notification).where(
            Notification.booking_id == booking_id,
            Notification.dedupe_key.like("reminder:%")).order_by(Notification.id)).all()
        return [(r.channel, json.loads(r.payload)) for r in rows]


def reminded_times(services, booking_id: int) -> list[str]:
    """The service time each queued reminder template message tells the customer."""
    return [p["template"]["data"]["time3"]["value"]
            for channel, p in reminder_rows(services, booking_id) if channel == "wechat"]


# --- 1. The year a use counts in is the service date's year ----------------------------------


async def test_a_booking_into_next_year_leaves_this_years_use_free(wx_plain, desk, services):
    """DOMAIN: a request on 20 December for 5 January uses next year's quota. So 2026's
    use stays free, and a second date in 2027 is refused while a 2026 date is not."""
    with time_machine.travel(at("2026-12-20 10:00:00"), tick=True):  # a Sunday
        first = await book(wx_plain, services, "2027-01-05")
        benefits = await wx_plain.say(U, "我的权益")
        assert "洁牙" in benefits and "剩余 1/1" in benefits  # this year's use is untouched

        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
        refused = await wx_plain.say(U, "2027-01-06")
        assert "2027年" in refused and "用完" in refused  # 2027's one use is the first booking
        assert "2027年1月6日" not in refused  # no summary of the refused date
        summary = await wx_plain.say(U, "2026-12-30")
        assert "2026年12月30日" in summary
        done = await wx_plain.say(U, "确认")
        benefits = await wx_plain.say(U, "我的权益")
    second = bookings(services)[-1]
    assert second.number in done and second.number != first
    assert [(b.preferred_date, b.quota_year) for b in bookings(services)] == [
        (date(2027, 1, 5), 2027), (date(2026, 12, 30), 2026)]
    assert "剩余 0/1" in benefits  # now 2026's use is taken too


async def test_a_confirmation_into_next_year_moves_the_use_to_that_year(wx_plain, desk, services):
    """DOMAIN: a use counts in the year of the preferred date while submitted, of the
    confirmed date once confirmed: a booking for 30 December confirmed for 4 January gives
    2026's use back and takes 2027's."""
    with time_machine.travel(at("2026-12-21 10:00:00"), tick=True):
        number = await book(wx_plain, services, "2026-12-30")
        assert "剩余 0/1" in await wx_plain.say(U, "我的权益")
        reply = await wx_plain.say(SPEC, f"#确认 {number} 2027-01-04 09:30")
        assert number in reply and "2027年1月4日" in reply
        benefits = await wx_plain.say(U, "我的权益")
        assert "剩余 1/1" in benefits  # 2026's use was given back
        # ... so a 2026 date can be booked again, and 2027 is spent
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
        refused = await wx_plain.say(U, "2027-01-06")
        assert "2027年" in refused and "用完" in refused
        await walk(wx_plain, U, "2026-12-31", "确认")
    first, second = bookings(services)
    assert (first.status, first.confirmed_date, first.quota_year) == (
        BookingStatus.CONFIRMED, date(2027, 1, 4), 2027)
    assert (second.status, second.preferred_date, second.quota_year) == (
        BookingStatus.SUBMITTED, date(2026, 12, 31), 2026)


async def test_a_confirmation_into_a_year_already_spent_is_refused(wx_plain, desk, services):
    """The 2027 use is taken by a second booking: confirming the 2026 booking into 2027
    would make two uses in 2027, so staff are told the year is spent and nothing moves."""
    with time_machine.travel(at("2026-12-21 10:00:00"), tick=True):
        a = await book(wx_plain, services, "2026-12-30")
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
        await walk(wx_plain, U, "2027-01-05", "确认")
        reply = await wx_plain.say(SPEC, f"#确认 {a} 2027-01-04 09:30")
        assert "2027" in reply and "用完" in reply
        mine = await wx_plain.say(U, "我的预约")
        assert "2026年12月30日" in mine  # the customer still sees the date they asked for
        ok = await wx_plain.say(SPEC, f"#确认 {a} 2026-12-30 09:30")  # its own year still works
        assert "2026年12月30日" in ok
    first, second = bookings(services)
    assert (first.status, first.confirmed_date, first.quota_year) == (
        BookingStatus.CONFIRMED, date(2026, 12, 30), 2026)
    assert (second.status, second.quota_year) == (BookingStatus.SUBMITTED, 2027)
    assert len(notes(services, "booking_confirmed")) == 1  # only the confirmation that held


async def test_a_use_recorded_outside_the_chat_counts_at_the_commit(wx_plain, desk, services):
    """The uses of a quota are the bookings themselves (the quota_use row is only their
    lock): a 2026 use staff record by phone while the customer is at the summary is seen
    by the re-check at 确认, and nothing is booked."""
    with time_machine.travel(MID, tick=True):
        summary = (await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊", "1"))[-1]
        assert "确认" in summary
        with Session(services.engine) as s:
            now = services.now()
            s.add(Booking(number="YY2606100099", request_key="phone-1", customer_id=desk.id,
                          tier="gold", service="dental", preferred_date=date(2026, 6, 1),
                          quota_year=2026, status=BookingStatus.COMPLETED, counted=True,
                          created_at=now, updated_at=now))
            s.commit()
        refused = await wx_plain.say(U, "确认")
        benefits = await wx_plain.say(U, "我的权益")
    assert "2026年" in refused and "用完" in refused
    assert [b.number for b in bookings(services)] == ["YY2606100099"]
    assert "剩余 0/1" in benefits


# --- 2, 5, 6. The day-before reminder ----------------------------------------------------------


async def test_a_same_date_reconfirmation_after_the_hour_sends_one_reminder(wx_plain, desk,
                                                                           services, sent):
    """README: a booking confirmed after the reminder hour for tomorrow is reminded at once;
    a reminder is sent once per booking and date. Moving the time on the same day tells the
    customer the new time (a second confirmation) but does not remind them twice."""
    with time_machine.travel(WED, tick=True):
        number = await book(wx_plain, services, "2026-12-03")
    (b,) = bookings(services)
    with time_machine.travel(at("2026-12-02 11:00:00"), tick=False):
        await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 09:30")
        assert len(reminder_rows(services, b.id)) == 2  # at once: template message and SMS
        settle(services)
    with time_machine.travel(at("2026-12-02 11:20:00"), tick=False):
        reply = await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 14:00")
        assert "改为" in reply and "14:00" in reply
        assert job(services, "reminders")() == 0  # the sweep finds nothing left to do
        settle(services)
    assert len(notes(services, "booking_confirmed")) == 2
    assert sorted(c for c, _ in reminder_rows(services, b.id)) == ["sms", "wechat"]
    reminders = [m for m in sent if m["api"] == "template"
                 and m["body"]["template_id"] == "demo-booking-reminder"]
    assert len(reminders) == 1 and reminders[0]["body"]["touser"] == U
    to_customer = [text for phone, text in services.sms.provider.sent if phone == "13900001111"]
    assert len(to_customer) == 3  # two confirmations and one reminder


async def test_a_reminder_still_waiting_tells_the_re_confirmed_time(wx_plain, desk, services,
                                                                    sent):
    """Queued at the reminder hour for tomorrow 09:30 but not yet sent (WeChat slow), then
    moved by staff to 14:00 the same day: the one reminder the customer gets says 14:00."""
    with time_machine.travel(WED, tick=True):
        number = await book(wx_plain, services, "2026-12-03")
    (b,) = bookings(services)
    with time_machine.travel(at("2026-12-01 15:00:00"), tick=False):
        await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 09:30")
        settle(services)
    with time_machine.travel(at("2026-12-02 10:00:00"), tick=False):
        assert job(services, "reminders")() == 1  # queued, not yet sent
    with time_machine.travel(at("2026-12-02 10:05:00"), tick=False):
        reply = await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 14:00")
        assert "14:00" in reply
        settle(services)
    reminders = [m for m in sent if m["api"] == "template"
                 and m["body"]["template_id"] == "demo-booking-reminder"]
    assert len(reminders) == 1
    assert reminders[0]["body"]["data"]["time3"]["value"] == "2026年12月3日 14:00"
    texts = [t for phone, t in services.sms.provider.sent if phone == "13900001111"]
    assert sum("14:00" in t for t in texts) == 2 and not any("09:30" in t for t in texts[2:])


async def test_a_reminded_booking_moved_to_another_day_is_reminded_again(wx_plain, desk, services):
    """Reminded on 2 December for 3 December, then moved by staff to Saturday 5 December:
    the day before the new date the customer is reminded of the new date."""
    with time_machine.travel(WED, tick=True):
        number = await book(wx_plain, services, "2026-12-03")
    (b,) = bookings(services)
    with time_machine.travel(at("2026-12-01 15:00:00"), tick=False):
        await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 09:30")
        settle(services)
    with time_machine.travel(at("2026-12-02 10:00:00"), tick=False):
        assert job(services, "reminders")() == 1
        settle(services)
    assert reminded_times(services, b.id) == ["2026年12月3日 09:30"]
    with time_machine.travel(at("2026-12-02 15:00:00"), tick=False):
        reply = await wx_plain.say(SPEC, f"#确认 {number} 2026-12-05 10:00")
        assert "改为" in reply and "2026年12月5日" in reply
        settle(services)
    with time_machine.travel(at("2026-12-03 10:00:00"), tick=False):
        assert job(services, "reminders")() == 0  # nothing is due on 4 December
    with time_machine.travel(at("2026-12-04 10:00:00"), tick=False):
        assert job(services, "reminders")() == 1
        assert job(services, "reminders")() == 0  # and only once
    assert reminded_times(services, b.id) == ["2026年12月3日 09:30", "2026年12月5日 10:00"]
    assert sorted(c for c, _ in reminder_rows(services, b.id)) == ["sms", "sms", "wechat", "wechat"]


@pytest.fixture
async def confirmed_for_3_december(wx_plain, desk, services):
    """A booking for Thursday 3 December 2026 09:30, confirmed by staff a week before (so
    free cancellation ends at 12:00 on Wednesday 2 December, with no grace period)."""
    with time_machine.travel(WED, tick=True):
        number = await book(wx_plain, services, "2026-12-03")
        await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 09:30")
        settle(services)
    (b,) = bookings(services)
    assert b.status == BookingStatus.CONFIRMED
    return b


def _reminder_edge(services) -> tuple[datetime, datetime]:
    """The last second before the reminder hour and the hour itself, on 2 December 2026.
    README: REMINDER_HOUR, 10:00 unless set."""
    hour = services.settings.reminder_time
    assert hour == time(10, 0)  # the documented default these tests run with
    edge = datetime.combine(date(2026, 12, 2), hour, tzinfo=services.settings.tz)
    return edge - timedelta(seconds=1), edge


async def test_the_reminder_sweep_starts_at_the_reminder_hour(services, confirmed_for_3_december):
    before, edge = _reminder_edge(services)
    b = confirmed_for_3_december
    with time_machine.travel(before, tick=False):
        assert job(services, "reminders")() == 0
    assert reminder_rows(services, b.id) == []
    with time_machine.travel(edge, tick=False):
        assert job(services, "reminders")() == 1
    assert reminded_times(services, b.id) == ["2026年12月3日 09:30"]


@pytest.mark.parametrize("second,at_once", [(-1, False), (0, True)])
async def test_a_confirmation_for_tomorrow_is_reminded_at_once_from_the_hour(
        wx_plain, desk, services, second, at_once):
    """README: a booking confirmed after the reminder hour for tomorrow is reminded at once
    (before the hour, the sweep at the hour reminds it)."""
    with time_machine.travel(WED, tick=True):
        number = await book(wx_plain, services, "2026-12-03")
    (b,) = bookings(services)
    before, edge = _reminder_edge(services)
    with time_machine.travel(edge + timedelta(seconds=second), tick=False):
        await wx_plain.say(SPEC, f"#确认 {number} 2026-12-03 09:30")
        settle(services)
    assert len(notes(services, "booking_confirmed")) == 1
    assert reminded_times(services, b.id) == (["2026年12月3日 09:30"] if at_once else [])
    with time_machine.travel(edge, tick=False):
        assert job(services, "reminders")() == (0 if at_once else 1)
    assert reminded_times(services, b.id) == ["2026年12月3日 09:30"]  # once either way


# --- 4. No cancelling once the service has started ---------------------------------------------


@pytest.mark.parametrize("moment,started", [
    ("2026-12-03 09:29:59", False),  # a minute before: a late (counted) cancellation
    ("2026-12-03 09:30:00", True),   # DOMAIN: never after the service starts
])
async def test_no_cancellation_once_the_service_has_started(wx_plain, services,
                                                             confirmed_for_3_december,
                                                             moment, started):
    b = confirmed_for_3_december
    with time_machine.travel(at(moment), tick=False):
        mine = await wx_plain.say(U, "我的预约")
        reply = await wx_plain.say(U, f"取消预约 {b.number}")
        assert b.number in reply
        if started:
            assert "确认取消" not in reply and "95359" in reply  # call instead
            assert f"取消预约 {b.number}" not in mine  # no longer offered
            await wx_plain.say(U, "确认取消")
            assert b.number not in await wx_plain.say(U, "取消预约")
        else:
            assert "确认取消" in reply and "2026年12月2日 12:00" in reply  # late and counted
            assert f"取消预约 {b.number}" in mine
            done = await wx_plain.say(U, "确认取消")
            assert b.number in done
    (after,) = bookings(services)
    if started:
        assert after.status == BookingStatus.CONFIRMED and after.cancelled_at is None
        assert notes(services, "booking_cancelled") == []
    else:
        assert after.status == BookingStatus.CANCELLED_LATE and after.counted


# --- 3. `#…` from someone who is not staff is ordinary text ------------------------------------


STRANGER2 = "oStaffNobody0000000000002"


@pytest.mark.parametrize("line", ["#确认 YY2611250001 2026-11-30 09:30", "#帮助", "#预约",
                                  "#群发 全部 你好", "#查询 13900001111", "#不存在的指令",
                                  "#完成 YY2611250001", "#留言"])
async def test_non_staff_hash_text_gets_the_answer_the_text_gets(wx_plain, desk, services, line):
    """DOMAIN: only from a staff openid is `#…` a staff command; from anyone else it is
    read as what it says (the FAQ, a service, or the fallback), just as without the #."""
    with Session(services.engine) as s:  # a second bound customer, to compare with U
        from bot.domain.accounts import bind

        bind(s, "oStaffCust000000000000002",
             factories.customer(s, name="李四", tier="gold", phone="13900002222"),
             services.now())
        s.commit()
    for hashed, plain in ((STRANGER, STRANGER2), (U, "oStaffCust000000000000002")):
        got = await wx_plain.say(hashed, line)
        assert got == await wx_plain.say(plain, line[1:]), (hashed, line)
        assert "#帮助" not in got and "用法" not in got  # nothing tells them commands exist


async def test_non_staff_hash_text_gets_the_faq_or_the_fallback(wx_plain, desk):
    # DOMAIN, FAQ: how to check one's tier (WeChat, website, app, hotline 95359)
    faq = await wx_plain.say(STRANGER, "#查询 13900001111")
    assert "95359" in faq and "我的等级" in faq and "139" not in faq.replace("95359", "")
    # the fallback, with suggestions of what to say
    fallback = await wx_plain.say(STRANGER, "#不存在的指令")
    assert "帮助" in fallback and "人工" in fallback
    # 帮助 shows what the bot can do: for someone unbound, binding first
    assert "绑定" in await wx_plain.say(STRANGER, "#帮助")
    assert "我的等级" in await wx_plain.say(U, "#帮助")

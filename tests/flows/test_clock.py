"""One clock (issue 14 §3 and §4): every instant is stored as an aware UTC value and every
time a person reads is Asia/Shanghai (docs/programme.md: chat, SMS, console, CLI).

The clock stands where UTC and Shanghai disagree: 2026-12-02 22:30 in Shanghai is 14:30 UTC
(same date, other hour); 2026-12-03 07:30 in Shanghai is 2026-12-02 23:30 UTC (other date).
Expected values are Shanghai wall-clock times worked out by hand from docs/programme.md's rules."""
from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import DateTime, select
from sqlalchemy.exc import StatementError
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

import models
from bot.domain import notify
from bot.infra import outbox
from models import Booking, LeftMessage, Notification
from tests.conftest import APP_ID, APP_SECRET, TOKEN
from tests.support.booking import book_dental, bookings
from tests.support.outbox import Clock, customer_with_booking, dispatcher, rows, templates
from tests.support.staff import ADMIN, SPEC, U, desk, tiers  # noqa: F401 (fixtures)
from tests.support import ROOT

SH = ZoneInfo("Asia/Shanghai")
LATE = "2026-12-02 22:30:00+08:00"   # Wednesday evening; 14:30 UTC the same day
EARLY = "2026-12-03 07:30:00+08:00"  # Thursday morning; 23:30 UTC the day before


def cli(settings, *args: str):
    """`python main.py …` in-process, on the test's database and the loopback WeChat double."""
    from bot.cli import app

    env = {"DATABASE_URL": settings.database_url, "WECHAT_APP_ID": APP_ID,
           "WECHAT_API_BASE_URL": settings.wechat_api_base_url, "WECHAT_APP_SECRET": APP_SECRET,
           "WECHAT_TOKEN": TOKEN, "REDIS_URL": "", "SECRET_KEY": "cli-secret-key-0123456789",
           "TIMEZONE": "Asia/Shanghai"}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


# --- Storage: one column type, aware UTC on SQLite and PostgreSQL ---------------------------------


def test_every_instant_column_is_the_one_utc_type():
    columns = [(t.name, c.name, c.type) for t in SQLModel.metadata.sorted_tables
               for c in t.columns if isinstance(c.type, DateTime)
               or getattr(c.type, "impl", None).__class__ is DateTime]
    assert len(columns) >= 20
    for table, column, kind in columns:
        assert isinstance(kind, models.UtcDateTime), (table, column, kind)


def test_an_instant_reads_back_as_the_same_aware_utc_value(engine):
    at = datetime(2026, 12, 3, 7, 30, tzinfo=SH)  # 2026-12-02 23:30 UTC
    with Session(engine) as s:
        s.add(LeftMessage(openid="oClock", text="t", created_at=at,
                          closed_at=datetime(2026, 12, 2, 14, 30, tzinfo=timezone.utc)))
        s.commit()
    with Session(engine) as s:
        m = s.get(LeftMessage, 1)
        assert m.created_at == at and m.created_at.utcoffset() == timedelta(0)
        assert (m.created_at.year, m.created_at.month, m.created_at.day, m.created_at.hour) == (
            2026, 12, 2, 23)
        assert m.closed_at == datetime(2026, 12, 2, 22, 30, tzinfo=SH)
        # Compared in SQL against an aware value: the instant, not the wall clock.
        hit = s.execute(select(LeftMessage.id).where(
            LeftMessage.created_at > datetime(2026, 12, 3, 7, 0, tzinfo=SH))).scalars().all()
        miss = s.execute(select(LeftMessage.id).where(
            LeftMessage.created_at > datetime(2026, 12, 3, 0, 0, tzinfo=timezone.utc))).scalars().all()
        assert (hit, miss) == ([1], [])


def test_a_naive_datetime_is_refused_not_guessed(engine):
    with Session(engine) as s:
        s.add(LeftMessage(openid="oClock", text="t", created_at=datetime(2026, 12, 2, 22, 30)))
        with pytest.raises(StatementError, match="timezone"):
            s.commit()


# --- Chat: 我的预约 and the SMS agree on the free-cancellation deadline ---------------------------


@pytest.mark.parametrize("clock,day,expected,sms", [
    # Confirmed 2 Dec 22:30 for Fri 4 Dec: the 12:00 deadline of Thu 3 Dec is < 24 h away, so
    # free until 24 h after the confirmation: 3 Dec 22:30 (UTC would say 14:30).
    (LATE, "2026-12-04", "2026年12月3日 22:30前可免费取消", "12月3日22:30前可免费取消"),
    # Confirmed 3 Dec 07:30 for Fri 4 Dec 09:30: until 4 Dec 07:30 (UTC: 3 Dec 23:30).
    (EARLY, "2026-12-04", "2026年12月4日 07:30前可免费取消", "12月4日07:30前可免费取消"),
])
async def test_my_bookings_shows_the_free_cancellation_deadline_in_shanghai_time(
        wx_plain, desk, services, clock, day, expected, sms):
    with time_machine.travel(clock, tick=True):
        await book_dental(wx_plain, U, day="1")
        (b,) = bookings(services)
        reply = await wx_plain.say(SPEC, f"#确认 {b.number} {day} 09:30")
        assert "2026年12月4日" in reply
        mine = await wx_plain.say(U, "我的预约")
    assert expected in mine, mine
    (text_row,) = [r for r in rows(services, channel="sms") if "confirmed" in r.dedupe_key]
    assert sms in json.loads(text_row.payload)["text"]


# --- Staff views ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clock,shown,lookup", [
    (LATE, "12月2日 22:30", "最近联系：2026年12月2日 22:30"),
    (EARLY, "12月3日 07:30", "最近联系：2026年12月3日 07:30"),
])
async def test_left_messages_and_the_last_contact_are_shown_in_shanghai_time(
        wx_plain, desk, services, db_url, clock, shown, lookup):
    with time_machine.travel(clock, tick=True):
        await wx_plain.say(U, "人工")  # outside 09:00-21:00: the customer may leave a message
        await wx_plain.say(U, "请明早回电话")
        listed = await wx_plain.say(SPEC, "#留言")
        found = await wx_plain.say(SPEC, "#查询 13900001111")
        (msg_id,) = _message_ids(services)
        await wx_plain.say(SPEC, f"#回复 {msg_id} 好的")
        shown_cli = cli(services.settings, "messages", "list")
        audit_cli = cli(services.settings, "audit", "list")
    assert "请明早回电话" in listed and shown in listed, listed
    assert lookup in found, found
    stamp = datetime.fromisoformat(clock).strftime("%Y-%m-%d %H:%M")
    line = next(x for x in shown_cli.splitlines() if x.startswith(f"#{msg_id}\t"))
    assert f"\t{stamp}\t" in line and f"closed {stamp} by {SPEC}" in line, line
    assert f"\t{stamp}:" in audit_cli and "\treply\t" in audit_cli, audit_cli


def _message_ids(services) -> list[int]:
    with Session(services.engine) as s:
        return list(s.execute(select(LeftMessage.id)).scalars().all())


async def test_broadcast_history_is_shown_in_shanghai_time(wx_plain, tiers, services):
    with time_machine.travel(EARLY, tick=True):
        await wx_plain.say(ADMIN, "#群发 钻石 周末活动")
        await wx_plain.say(ADMIN, "#确认群发")
        history = await wx_plain.say(ADMIN, "#群发记录")
    assert "12月3日 07:30" in history and "12月2日" not in history, history


def test_outbox_list_shows_shanghai_time(services, db_url):
    now = datetime.fromisoformat(EARLY)
    with Session(services.engine) as s:
        outbox.enqueue(s, kind="custom", channel=outbox.WECHAT, recipient="oClockOutbox0001",
                       payload={"text": "x"}, key="clock:outbox", now=now)
        s.commit()
    listed = cli(services.settings, "outbox", "list")
    assert "\t2026-12-03 07:30\t" in listed, listed


def test_staff_invite_says_until_when_in_shanghai_time(services):
    with time_machine.travel(LATE, tick=False):
        out = cli(services.settings, "staff", "invite", "--name", "新专员", "--role", "specialist")
    assert "until 2026-12-03 22:30" in out, out  # valid 24 hours


# --- The server log ------------------------------------------------------------------------------


def test_log_lines_carry_iso_8601_time_with_the_offset():
    from bot.app import log_formatter

    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "hello", None, None)
    record.created = datetime(2026, 12, 2, 14, 30, 5, 250000, tzinfo=timezone.utc).timestamp()
    line = log_formatter(SH).format(record)
    assert line.startswith("2026-12-02T22:30:05.250+08:00 INFO bot: hello"), line


def test_the_configured_process_logs_with_the_offset(tmp_path):
    import subprocess
    import sys

    code = ("import logging; from zoneinfo import ZoneInfo; from bot.app import configure_logging;"
            "configure_logging('INFO', tz=ZoneInfo('Asia/Shanghai'));"
            "logging.getLogger('bot.test').warning('ping')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, timeout=60,
                         cwd=str(ROOT))
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00 WARNING bot\.test: ping",
                    res.stderr), res.stderr


# --- §4: a service day is named by its date; 明天 only when it is tomorrow -----------------------


def _reminder_sms(services) -> str:
    (row,) = [r for r in rows(services, channel="sms") if r.dedupe_key.startswith("reminder:")]
    return json.loads(row.payload)["text"]


def test_a_reminder_for_tomorrow_says_tomorrow_and_the_date(services, db_url):
    booking = customer_with_booking(services, day=date(2026, 12, 4))
    with time_machine.travel(EARLY, tick=False):  # 3 Dec in Shanghai, still 2 Dec in UTC
        out = cli(services.settings, "jobs", "run", "reminders")
    assert "1" in out
    text = _reminder_sms(services)
    assert "明天（12月4日）09:30" in text and booking.number in text, text


def test_a_reminder_sent_on_the_service_day_does_not_say_tomorrow(services, db_url):
    customer_with_booking(services, day=date(2026, 12, 3))
    # The run for services on 3 Dec, caught up at 07:30 on 3 Dec itself.
    with time_machine.travel(EARLY, tick=False):
        cli(services.settings, "jobs", "run", "reminders", "--date", "2026-12-02")
    text = _reminder_sms(services)
    assert "明天" not in text and "12月3日" in text and "09:30" in text, text


def test_a_reminder_queued_days_ahead_names_the_date(services):
    booking = customer_with_booking(services, day=date(2026, 12, 8))
    with Session(services.engine, expire_on_commit=False) as s:
        notify.reminder(s, s.get(Booking, booking.id), datetime.fromisoformat(EARLY))
        s.commit()
    text = _reminder_sms(services)
    assert "明天" not in text and "12月8日" in text, text


# --- §4: a booking's confirmation goes out before its reminder ------------------------------------


def test_the_reminder_waits_for_a_confirmation_the_outbox_is_still_retrying(
        services, wechat_api, sent):
    booking = customer_with_booking(services, day=date(2026, 12, 3))
    now = datetime(2026, 12, 2, 11, 0, tzinfo=SH)  # past the 10:00 reminder hour
    with Session(services.engine, expire_on_commit=False) as s:
        notify.booking_confirmed(s, s.get(Booking, booking.id), now)  # and the reminder at once
        s.commit()
    wechat_api.state.fail_next.append(45009)  # WeChat's rate limit: the confirmation waits
    clock = Clock(now.timestamp())
    d = dispatcher(services, clock)
    d.drain()
    ids = [t["template_id"] for t in templates(sent)]
    assert "demo-booking-reminder" not in ids, ids
    (confirmed,) = [r for r in rows(services, channel="wechat") if ":confirmed:" in r.dedupe_key]
    assert confirmed.status == "pending" and confirmed.tries == 1
    clock.t += 60  # past the backoff
    d.drain()
    ids = [t["template_id"] for t in templates(sent)]
    assert ids == ["demo-booking-confirmed", "demo-booking-reminder"], ids
    assert {r.status for r in rows(services)} == {"sent"}


def test_a_confirmation_that_died_does_not_hold_the_reminder_forever(services, wechat_api, sent):
    booking = customer_with_booking(services, day=date(2026, 12, 3))
    now = datetime(2026, 12, 2, 11, 0, tzinfo=SH)
    with Session(services.engine, expire_on_commit=False) as s:
        notify.booking_confirmed(s, s.get(Booking, booking.id), now)
        s.commit()
    wechat_api.state.fail_next.append(47003)  # a permanent refusal: the row is dead
    d = dispatcher(services, Clock(now.timestamp()))
    d.drain()
    (confirmed,) = [r for r in rows(services, channel="wechat") if ":confirmed:" in r.dedupe_key]
    assert confirmed.status == "dead"
    assert [t["template_id"] for t in templates(sent)] == ["demo-booking-reminder"]


# --- Template messages: an instant in a time field is Shanghai time --------------------------------


def test_the_reply_notice_template_says_when_in_shanghai_time(services, sent):
    """A staff reply to a customer outside WeChat's 48-hour window goes as the reply_notice
    template; its time field is when the reply was written, as the customer's clock shows it."""
    now = datetime.fromisoformat(EARLY).astimezone(timezone.utc)  # an instant, in any zone
    seen = now - timedelta(days=3)  # the customer's last message: outside the window
    booking = customer_with_booking(services, day=date(2026, 12, 8), seen=seen)
    with Session(services.engine) as s:
        openid = s.execute(select(models.WechatUser.openid).where(
            models.WechatUser.customer_id == booking.customer_id)).scalar_one()
        notify.text_message(s, openid, "您好，专员已为您查询", now, key="clock:reply")
        s.commit()
    dispatcher(services, Clock(now.timestamp())).drain()
    (body,) = [t for t in templates(sent) if t["template_id"] == "demo-reply-notice"]
    assert body["data"]["time2"]["value"] == "2026年12月3日 07:30", body


async def test_a_confirmation_for_tomorrow_by_chat_reaches_the_customer_before_its_reminder(
        wx_plain, desk, services, wechat_api):
    """Staff confirm after the reminder hour for tomorrow: both messages leave at once, the
    confirmation first, on WeChat and by SMS."""
    import asyncio

    with time_machine.travel("2026-12-02 10:30:00+08:00", tick=True):
        await book_dental(wx_plain, U, day="1")  # Wednesday: the earliest date is Friday
        (b,) = bookings(services)
        reply = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-12-03 09:30")  # tomorrow
        assert "2026年12月3日" in reply, reply
        for _ in range(250):
            ids = [c["body"].get("template_id") for c in wechat_api.state.sent
                   if c["api"] == "template" and c["body"].get("touser") == U]
            reminded_by_sms = any("温馨提醒" in t for _, t in services.sms.provider.sent)
            if "demo-booking-reminder" in ids and reminded_by_sms:  # both lanes sent it
                break
            await asyncio.sleep(0.02)
    assert ids == ["demo-booking-received", "demo-booking-confirmed", "demo-booking-reminder"], (
        ids, [(r.id, r.kind, r.channel, r.status, r.tries, r.last_error) for r in rows(services)])
    texts = [t for _, t in services.sms.provider.sent]
    assert [("预约成功" in t, "温馨提醒" in t) for t in texts] == [(True, False), (False, True)], texts


def test_the_confirmation_sms_says_the_grace_deadline_in_shanghai_time(services):
    """The booking as read back from the database (its instants in UTC): confirmed at 07:30 on
    3 Dec for 4 Dec 09:30, free cancellation until 4 Dec 07:30 (DOMAIN: 24 hours after the
    confirmation, as the 12:00 deadline of 3 Dec was less than 24 hours away)."""
    booking = customer_with_booking(services, day=date(2026, 12, 4))
    confirmed = datetime.fromisoformat(EARLY)
    with Session(services.engine) as s:
        b = s.get(Booking, booking.id)
        b.confirmed_at = confirmed
        s.add(b)
        s.commit()
    with Session(services.engine, expire_on_commit=False) as s:
        b = s.get(Booking, booking.id)
        assert b.confirmed_at.utcoffset() == timedelta(0)
        notify.booking_confirmed(s, b, confirmed.astimezone(timezone.utc))
        s.commit()
    (row,) = [r for r in rows(services, channel="sms") if ":confirmed:" in r.dedupe_key]
    assert "12月4日07:30前可免费取消" in json.loads(row.payload)["text"]

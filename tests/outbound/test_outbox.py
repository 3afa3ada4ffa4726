"""The outbox: every message delivered exactly once, against the loopback WeChat double with
controlled time (each dispatcher here runs on a test clock; the double remembers a
template's client_msg_id for ten minutes of real time, which these tests stay well inside)."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import date, datetime, timedelta, timezone
from itertools import count

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from bot.domain import notify
import scheduler as jobs
from bot.domain.accounts import bind
from bot.domain.privacy import export
from bot.domain.vocab import BookingStatus
from bot.infra import outbox
from bot.infra.db import make_engine
from bot.infra.outbox import Dispatcher, backoff
from bot.wechat.simulator import event_xml
from models import Booking, Institution, Notification, WechatUser
from tests.support import factories
from tests.support.outbox import Clock, NOW, T0, TOMORROW, customer_with_booking, dispatcher, rows, templates  # noqa: F401


def remind(services, booking, now=NOW):
    with Session(services.engine, expire_on_commit=False) as s:
        b = s.get(Booking, booking.id)
        ids = notify.reminder(s, b, now)
        s.commit()
    return ids


# --- Backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_a_cap():
    assert [backoff(n, jitter=lambda: 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert [backoff(n, jitter=lambda: 1.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(30, jitter=lambda: 1.0) == 600.0  # capped
    assert 300.0 <= backoff(30) <= 600.0


# --- Exactly once ----------------------------------------------------------------------------


def test_crash_between_send_and_mark_resends_the_same_client_msg_id(services, wechat_api, sent):
    """The send succeeds, the process dies before marking: the row stays `sending`; once its
    lease has run out it is sent again with the same client_msg_id, and WeChat (the double,
    which remembers it for ten minutes) does not deliver it twice."""
    booking = customer_with_booking(services)
    remind(services, booking)
    clock = Clock()
    d = dispatcher(services, clock)
    claimed = outbox.claim(services.engine, clock(), 10, d.lease)
    [tpl] = [r for r in claimed if r.channel == "wechat"]
    assert tpl.client_msg_id
    d._send_one(tpl, json.loads(tpl.payload))  # delivered …
    # … and the worker dies here. Within the lease nobody else takes the row:
    clock.t += d.lease - 1
    assert not d.run_once()
    clock.t += 2  # the lease ran out (60 s, far inside WeChat's ten minutes)
    done = d.run_once()
    assert done["sent"] == 2  # the template again, and the SMS that was also left claimed
    assert len(templates(sent)) == 1
    assert [m["body"]["client_msg_id"] for m in wechat_api.state.duplicates] == [tpl.client_msg_id]
    [row] = rows(services, id=tpl.id)
    assert (row.status, row.tries) == ("sent", 2)


def test_a_worker_whose_lease_ran_out_cannot_mark_the_row(services, sent):
    booking = customer_with_booking(services)
    remind(services, booking)
    clock = Clock()
    d = dispatcher(services, clock)
    first = outbox.claim(services.engine, clock(), 10, d.lease)
    clock.t += d.lease + 1
    d.run_once()  # another worker re-claims and sends
    late = outbox.mark(services.engine, [(r, outbox.Outcome("retry", "late worker")) for r in first],
                       clock(), 12)
    assert all(r.status == "sent" for r in rows(services))
    assert late  # counted by the late worker, but fenced out in the database


@pytest.mark.parametrize("workers", ["threads"])
def test_two_schedulers_and_dispatchers_at_once_send_each_reminder_once(services, sent, db_url,
                                                                         workers):
    bookings = [customer_with_booking(services) for _ in range(12)]
    engines = [make_engine(db_url), make_engine(db_url)]
    errors = []

    def scheduler(engine):
        try:
            jobs.queue_reminders(engine, services.settings, NOW.date(), NOW)
            dispatcher(services, Clock(), engine, outbox_batch_size=3).drain()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in engines:
        e.dispose()
    assert not errors
    sent_to = sorted(m["touser"] for m in templates(sent))
    with Session(services.engine) as s:
        openids = sorted(s.get(WechatUser, u).openid for u in [
            s.execute(select(WechatUser.openid).where(WechatUser.customer_id == b.customer_id))
            .scalar_one() for b in bookings])
    assert [(r.status, r.last_error) for r in rows(services) if r.status != "sent"] == []
    assert sent_to == openids  # each reminder exactly once
    assert len(services.sms.provider.sent) >= len(bookings)
    assert all(r.status == "sent" for r in rows(services))
    assert len(rows(services)) == 2 * len(bookings)


def test_a_booking_cancelled_after_its_reminder_was_queued_gets_no_reminder(services, sent):
    booking = customer_with_booking(services)
    remind(services, booking)
    with Session(services.engine, expire_on_commit=False) as s:
        b = s.get(Booking, booking.id)
        b.status = BookingStatus.CANCELLED
        notify.booking_cancelled(s, b, NOW, counted=False)
        s.commit()
    dispatcher(services, Clock()).drain()
    assert [t["template_id"] for t in templates(sent)] == ["demo-booking-cancelled"]
    assert not services.sms.provider.sent or all("明天" not in t for _, t in services.sms.provider.sent)
    dropped = [r for r in rows(services) if r.dedupe_key.startswith("reminder:")]
    assert {r.status for r in dropped} == {"dropped"}
    # and a later sweep does not remind it either
    assert jobs.queue_reminders(services.engine, services.settings, NOW.date(), NOW) == 0


def test_unsubscribed_users_get_nothing_on_wechat_but_the_sms_goes(services, wechat_api, sent):
    gone = customer_with_booking(services, following=False)
    remind(services, gone)
    assert not rows(services, channel="wechat")  # not even queued: they do not follow
    left_later = customer_with_booking(services)
    remind(services, left_later)
    with services.engine.begin() as c:  # unsubscribes after the reminder was queued
        c.execute(update(WechatUser.__table__).where(
            WechatUser.__table__.c.customer_id == left_later.customer_id).values(following=False))
    third = customer_with_booking(services)
    remind(services, third)
    wechat_api.state.unfollowed.add(rows(services, channel="wechat")[-1].recipient)  # 43004
    dispatcher(services, Clock()).drain()
    assert templates(sent) == []
    wechat = rows(services, channel="wechat")
    assert [r.status for r in wechat] == ["dropped", "dropped"]
    assert "following is false" in wechat[0].last_error and "43004" in wechat[1].last_error
    sms = rows(services, channel="sms")
    assert [r.status for r in sms] == ["sent"] * 3
    assert len(services.sms.provider.sent) == 3


def test_a_five_minute_wechat_outage_backs_up_and_drains(services, wechat_api, sent):
    bookings = [customer_with_booking(services) for _ in range(5)]
    for b in bookings:
        remind(services, b)
    clock = Clock()
    d = dispatcher(services, clock)
    wechat_api.state.outage_until = 10**12  # WeChat answers -1 from now on
    end = T0 + 300
    while clock.t < end:
        d.run_once()
        clock.t += 5
    waiting = rows(services, channel="wechat")
    assert {r.status for r in waiting} == {"pending"} and all(r.tries > 3 for r in waiting)
    assert templates(sent) == []
    wechat_api.state.outage_until = 0  # WeChat is back
    for _ in range(200):
        d.run_once()
        clock.t += 5
        if all(r.status == "sent" for r in rows(services)):
            break
    assert all(r.status == "sent" for r in rows(services))  # nothing lost
    assert sorted(t["touser"] for t in templates(sent)) == sorted(
        r.recipient for r in rows(services, channel="wechat"))  # nothing doubled
    assert not wechat_api.state.duplicates


@pytest.mark.parametrize("failure,status", [(45009, "pending"), (-1, "pending"),
                                            ("500", "pending"), (47003, "dead"),
                                            (40001, "pending")])
def test_failures_are_retried_or_dead_lettered(services, wechat_api, sent, failure, status):
    booking = customer_with_booking(services)
    remind(services, booking)
    wechat_api.state.fail_next.append(failure)
    if failure == 40001:
        wechat_api.state.fail_next.append(40001)  # the client's own refresh retry fails too
    d = dispatcher(services, Clock())
    d.run_once()
    [row] = rows(services, channel="wechat")
    assert row.status == status, row.last_error
    if status == "pending":
        assert row.next_attempt_at > T0 and row.last_error


def test_a_timeout_is_retried(services, wechat_api, sent):
    booking = customer_with_booking(services)
    remind(services, booking)
    wechat_api.state.timeout_seconds = 1.5
    wechat_api.state.fail_next.append("timeout")
    s = services.settings.model_copy(update={"outbound_read_timeout": 0.5})
    from bot.infra.wechat_api import make_client

    d = Dispatcher(services.engine, s, make_client(s, services.engine), services.sms.provider,
                   prepare=notify.prepare, clock=Clock(), jitter=lambda: 0.0)
    d.run_once()
    [row] = rows(services, channel="wechat")
    assert row.status == "pending" and "unreachable" in row.last_error


def test_after_max_tries_the_row_is_dead_and_can_be_retried(services, wechat_api, sent):
    booking = customer_with_booking(services)
    remind(services, booking)
    clock = Clock()
    d = dispatcher(services, clock, outbox_max_tries=3)
    wechat_api.state.outage_until = 10**12
    for _ in range(5):
        d.run_once()
        clock.t += 3600
    [row] = rows(services, channel="wechat")
    assert (row.status, row.tries) == ("dead", 3) and "gave up after 3 tries" in row.last_error
    assert [r.id for r in outbox.listing(services.engine, dead_only=True)] == [row.id]
    wechat_api.state.outage_until = 0
    assert outbox.retry(services.engine, clock(), all_dead=True) == 1
    d.run_once()
    assert rows(services, id=row.id)[0].status == "sent"


# --- WeChat's customer-service window --------------------------------------------------------


def test_customer_service_messages_respect_the_48_hour_window(services, sent):
    openid = "oWindow000000001"
    with Session(services.engine) as s:
        s.add(WechatUser(openid=openid, following=True, last_seen_at=NOW, bind_failures=0))
        s.commit()
    clock = Clock()
    d = dispatcher(services, clock)
    with Session(services.engine) as s:
        for i in range(6):
            notify.text_message(s, openid, f"第{i + 1}条", NOW, key=f"cs:{i}")
        s.commit()
    d.drain()
    out = rows(services, recipient=openid)
    custom = [m for m in sent if m["api"] == "custom"]
    assert len(custom) == 5  # five customer-service messages …
    # … the sixth falls back to the reply-notice template
    assert [t["template_id"] for t in templates(sent)] == ["demo-reply-notice"]
    assert out[-1].status == "sent" and "5 customer-service" in out[-1].last_error
    # A new message from the user opens the window again; 49 hours after it, it is closed.
    with services.engine.begin() as c:
        c.execute(update(WechatUser.__table__).values(
            last_seen_at=NOW + timedelta(minutes=5)))
    clock.t = T0 + 600
    with Session(services.engine) as s:
        notify.text_message(s, openid, "窗口内", NOW + timedelta(minutes=10), key="cs:again")
        s.commit()
    d.drain()
    assert len([m for m in sent if m["api"] == "custom"]) == 6
    clock.t = T0 + 49 * 3600
    with Session(services.engine) as s:
        row_id = outbox.enqueue(s, kind="custom", channel="wechat", recipient=openid,
                                payload={"text": "太晚了"}, key="cs:late",
                                now=NOW + timedelta(hours=49))
        s.commit()
    d.drain()
    [late] = rows(services, id=row_id)
    assert late.status == "dead" and "48-hour" in late.last_error


def test_a_late_reply_goes_through_the_outbox(services, pipeline, sent):
    openid = "oLate00000000001"
    with Session(services.engine) as s:
        s.add(WechatUser(openid=openid, following=True, last_seen_at=services.now(),
                         bind_failures=0))
        s.commit()
    pipeline._late_reply(openid, "迟到的回复", "msg-1")
    pipeline._late_reply(openid, "迟到的回复", "msg-1")  # the same message twice: one row
    [row] = rows(services, recipient=openid)
    assert row.kind == "late_reply" and row.expires_at is not None
    import time

    for _ in range(300):  # sent at once by the kick on the wechat-io lane
        services.dispatcher.drain()
        if rows(services, recipient=openid)[0].status == "sent":
            break
        time.sleep(0.01)
    assert [m["body"]["text"]["content"] for m in sent if m["api"] == "custom"] == ["迟到的回复"]


def test_a_binding_code_dies_with_the_code(services):
    clock = Clock()
    with Session(services.engine) as s:
        notify.binding_code(s, "13912345678", "123456", 5, NOW, key="bind:1")
        s.commit()
    clock.t = T0 + services.settings.bind_code_ttl_seconds + 1
    dispatcher(services, clock).drain()
    [row] = rows(services)
    assert row.status == "expired" and "123456" not in row.payload
    assert not services.sms.provider.sent


# --- Reminders -------------------------------------------------------------------------------


def test_reminders_follow_the_hour_and_never_repeat(services, sent):
    booking = customer_with_booking(services)
    settings = services.settings
    early = NOW.replace(hour=9, minute=59)
    assert jobs.sweep_reminders(services.engine, settings, early) == 0
    assert jobs.sweep_reminders(services.engine, settings, NOW) == 1
    assert jobs.sweep_reminders(services.engine, settings, NOW + timedelta(minutes=2)) == 0
    dispatcher(services, Clock()).drain()
    [tpl] = templates(sent)
    assert tpl["template_id"] == "demo-booking-reminder"
    assert tpl["data"]["character_string1"]["value"] == booking.number
    assert tpl["data"]["time3"]["value"] == "2026年12月3日 09:30"
    [(phone, text)] = services.sms.provider.sent
    assert phone == "13812345678" and "确认" in text and "取消预约" in text
    with Session(services.engine) as s:
        assert s.get(Booking, booking.id).reminded_at is not None


def test_a_booking_confirmed_after_the_hour_for_tomorrow_is_reminded_at_once(services, sent):
    booking = customer_with_booking(services)
    with Session(services.engine, expire_on_commit=False) as s:
        b = s.get(Booking, booking.id)
        notify.booking_confirmed(s, b, NOW)
        s.commit()
    kinds = sorted(r.dedupe_key.split(":")[0] + ":" + r.channel for r in rows(services))
    assert kinds == ["booking:sms", "booking:wechat", "reminder:sms", "reminder:wechat"]
    dispatcher(services, Clock()).drain()
    confirmed = next(t for t in templates(sent) if t["template_id"] == "demo-booking-confirmed")
    assert confirmed["data"]["thing5"]["value"] == "请带身份证"


def test_confirmed_sms_names_the_fees_for_expert_outpatient(services):
    booking = customer_with_booking(services, service="expert_outpatient",
                                    day=TOMORROW + timedelta(days=5))
    with Session(services.engine, expire_on_commit=False) as s:
        notify.booking_confirmed(s, s.get(Booking, booking.id), NOW)
        s.commit()
    [sms] = rows(services, channel="sms")
    text = json.loads(sms.payload)["text"]
    assert "身份证" in text and "医疗费用由您自理" in text and "北京市朝阳区某路1号" in text


async def test_reminder_replies_confirm_attendance(services, wx_plain):
    openid = "oAttend000000001"
    tomorrow = services.now().date() + timedelta(days=1)
    booking = customer_with_booking(services, openid=openid, day=tomorrow)
    reply = await wx_plain.say(openid, "确认")
    assert booking.number in reply
    with Session(services.engine) as s:
        assert s.get(Booking, booking.id).attendance_confirmed_at is not None


async def test_with_two_bookings_tomorrow_the_bot_asks_which(services, wx_plain):
    openid = "oAttend000000002"
    tomorrow = services.now().date() + timedelta(days=1)
    first = customer_with_booking(services, openid=openid, day=tomorrow)
    with Session(services.engine, expire_on_commit=False) as s:
        second = Booking(number="YY2612029999", request_key=uuid.uuid4().hex,
                         customer_id=first.customer_id, tier="gold", service="checkup",
                         institution_id=first.institution_id, preferred_date=tomorrow,
                         confirmed_date=tomorrow, confirmed_time="14:00",
                         quota_year=tomorrow.year, status=BookingStatus.CONFIRMED,
                         created_at=NOW, updated_at=NOW)
        s.add(second)
        s.commit()
    ask = await wx_plain.say(openid, "确认")
    assert first.number in ask and second.number in ask
    pick = "1" if ask.index(second.number) < ask.index(first.number) else "2"
    done = await wx_plain.say(openid, pick)
    assert second.number in done
    with Session(services.engine) as s:
        assert s.get(Booking, second.id).attendance_confirmed_at is not None
        assert s.get(Booking, first.id).attendance_confirmed_at is None


# --- TEMPLATESENDJOBFINISH, privacy ------------------------------------------------------


async def test_templatesendjobfinish_records_the_delivery(services, wx_plain, sent):
    booking = customer_with_booking(services)
    remind(services, booking)
    dispatcher(services, Clock()).drain()
    [row] = rows(services, channel="wechat")
    assert row.msgid
    await wx_plain.deliver(event_xml(row.recipient, "TEMPLATESENDJOBFINISH", None,
                                     MsgID=str(row.msgid), Status="failed:user block"),
                           row.recipient)
    assert rows(services, id=row.id)[0].delivery == "failed:user block"


def test_privacy_export_shows_queued_and_sent_messages(services, sent):
    booking = customer_with_booking(services)
    remind(services, booking)
    with Session(services.engine) as s:
        openid = s.execute(select(WechatUser.openid).where(
            WechatUser.customer_id == booking.customer_id)).scalar_one()
        notify.binding_code(s, "13812345678", "654321", 5, NOW, key="bind:x")
        notify.text_message(s, openid, "您好", NOW, key="cs:p")
        s.commit()
    d = dispatcher(services, Clock())
    d.run_once(ids=[rows(services, channel="wechat")[0].id])
    with Session(services.engine) as s:
        data = export(s, openid)
    msgs = data["messages"]
    assert {m["kind"] for m in msgs} >= {"reminder", "sms", "custom"}
    assert {m["status"] for m in msgs} >= {"sent", "pending"}
    assert "654321" not in json.dumps(data, ensure_ascii=False)


# --- Mass send -------------------------------------------------------------------------------


def test_mass_send_is_one_row_and_deduplicated_by_wechat(services, wechat_api, sent):
    with Session(services.engine, expire_on_commit=False) as s:
        row = notify.mass_send(s, 101, "客户服务节来啦", NOW, key="mass:1")
        again = notify.mass_send(s, 101, "客户服务节来啦", NOW, key="mass:1")
        s.commit()
    assert row.id == again.id
    clock = Clock()
    d = dispatcher(services, clock)
    [claimed] = outbox.claim(services.engine, clock(), 10, d.lease)
    d._send_one(claimed, json.loads(claimed.payload))  # sent, then the worker died
    clock.t += d.lease + 1
    d.run_once()
    [mass] = [m["body"] for m in sent if m["api"] == "mass"]
    assert mass["filter"] == {"is_to_all": False, "tag_id": 101} and mass["clientmsgid"]
    assert len(wechat_api.state.duplicates) == 1


def test_the_five_message_window_holds_across_concurrent_senders(services, wechat_api, sent,
                                                                 migrated_db, db_url):
    """Two workers' dispatchers (engines of their own) send one user's ten customer-service
    messages at once, each taking one row at a time while WeChat is slow: still no more
    than five customer-service messages since the user's last message (DOMAIN: WeChat's
    limit); the others fall back to the reply-notice template."""
    openid = "oWindowRace00001"
    with Session(services.engine) as s:
        s.add(WechatUser(openid=openid, following=True, last_seen_at=NOW, bind_failures=0))
        for i in range(10):
            notify.text_message(s, openid, f"第{i + 1}条", NOW, key=f"race:{i}")
        s.commit()
    wechat_api.state.delay = 0.05  # every send takes a while: the other worker reads meanwhile
    engines = [make_engine(db_url) for _ in range(2)]
    workers = [dispatcher(services, Clock(), engine=e, outbox_batch_size=1) for e in engines]
    barrier = threading.Barrier(2)

    def run(d):
        barrier.wait()
        d.drain()

    threads = [threading.Thread(target=run, args=(d,)) for d in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wechat_api.state.delay = 0.0
    for e in engines:
        e.dispose()
    custom = [m for m in sent if m["api"] == "custom" and m["body"]["touser"] == openid]
    assert len(custom) == 5
    assert len([t for t in templates(sent) if t["touser"] == openid]) == 5
    assert {r.status for r in rows(services, recipient=openid)} == {"sent"}

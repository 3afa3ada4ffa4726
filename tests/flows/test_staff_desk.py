"""Staff views and actions, second hardening round (issue 15): customer-written text reaches
staff as plain text; the queue and the call-back views; the version check on bookings;
refusals of past confirmations; staff cancellations by SMS; #注册 guesses; the broadcast
allowance under concurrency. Everything goes through /wechat as staff send it."""
from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone

import pytest
import time_machine
from sqlalchemy import update
from sqlmodel import Session
from sqlmodel import select as sm_select

from models import Booking, Broadcast, Customer, HospitalVisit, LeftMessage
from tests.support import factories
from tests.conftest import USE_PG
from tests.support.booking import WED, bookings
from tests.support.staff import SPEC, U, audits, booked, desk, notes, tiers  # noqa: F401 (fixtures)
from tests.support.staff import MENU_LINK, PHISH  # noqa: F401

# What the probe sent: one tap on it would send the attacker's staff command.
SHORT_LINK = '<a href="weixin://bizmsgmenu?msgmenuid=1">取消</a>'  # fits a 64-character field
AFTER_HOURS = "2026-11-25 22:30:00+08:00"  # 人工 outside the service hours takes a message


async def test_a_left_message_full_of_markup_reaches_staff_as_plain_text(wx_plain, desk,
                                                                         services):
    with time_machine.travel(AFTER_HOURS, tick=True):
        await wx_plain.say(U, "人工")
        await wx_plain.say(U, MENU_LINK + PHISH)
        listed = await wx_plain.say(SPEC, "#留言")
    assert "<a" not in listed and "</a>" not in listed
    # The text is all there, as text a person reads: escaped, not dropped.
    assert "&lt;a href=\"weixin://bizmsgmenu?msgmenucontent=%23取消" in listed
    assert "&amp;msgmenuid=x\"&gt;查看附件&lt;/a&gt;" in listed
    assert "&lt;a href=\"http://vip-insurer.example/login\"&gt;" in listed
    with Session(services.engine) as s:  # stored as the customer wrote it
        (m,) = s.exec(sm_select(LeftMessage)).all()
        assert m.text == MENU_LINK + PHISH


async def test_markup_in_names_visits_and_booking_notes_is_plain_text_to_staff(
        wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        with Session(services.engine) as s:
            s.execute(update(Booking).where(Booking.id == b.id)
                      .values(hospital_preference=PHISH, department=SHORT_LINK))
            s.execute(update(Customer).where(Customer.id == desk.id).values(name=PHISH))
            s.add(HospitalVisit(customer_id=desk.id, hospital=MENU_LINK, ward=SHORT_LINK,
                                admission_date=date(2026, 11, 20),
                                created_at=datetime.now(timezone.utc)))
            s.commit()
        replies = {line: await wx_plain.say(SPEC, line)
                   for line in ("#预约", "#探视", f"#查询 {b.number}", "#查询 13900001111")}
    for line, reply in replies.items():
        assert "<a" not in reply and "</a>" not in reply, line
    assert "&lt;a href=\"http://vip-insurer.example/login\"&gt;请重新登录&lt;/a&gt;" in replies["#预约"]
    assert "查看附件&lt;/a&gt;" in replies["#探视"] and "取消&lt;/a&gt;" in replies["#探视"]


# --- The queue, the call-back views and the lookup ----------------------------------------------


async def test_the_queue_is_by_service_date_soonest_first_with_the_year(wx_plain, desk,
                                                                        services):
    now = datetime.now(timezone.utc)
    with Session(services.engine) as s:
        other = factories.customer(s, name="周八", tier="gold", phone="13900002222")
        rows = [  # number, customer, preferred, confirmed, created order
            ("YY2611200001", desk.id, date(2027, 1, 8), None),
            ("YY2611200002", other.id, date(2026, 12, 10), None),
            ("YY2611200003", desk.id, date(2026, 12, 20), date(2026, 12, 4)),
        ]
        for i, (number, cid, preferred, confirmed) in enumerate(rows):
            s.add(Booking(number=number, request_key=f"q-{i}", customer_id=cid, tier="gold",
                          service="dental", preferred_date=preferred,
                          confirmed_date=confirmed, confirmed_time="09:00" if confirmed else None,
                          quota_year=(confirmed or preferred).year,
                          status="confirmed" if confirmed else "submitted", counted=True,
                          created_at=now, updated_at=now))
        s.commit()
    with time_machine.travel(WED, tick=True):
        queue = await wx_plain.say(SPEC, "#预约")
    order = re.findall(r"YY\d{10}", queue)
    # 4 Dec (confirmed), 10 Dec, 8 Jan next year: by the date the service happens.
    assert order == ["YY2611200003", "YY2611200002", "YY2611200001"]
    assert "2027年1月8日" in queue and "2026年12月10日" in queue and "2026年12月4日" in queue


async def test_left_messages_and_visits_give_a_masked_name_and_the_phone_audited(
        wx_plain, desk, services):
    with time_machine.travel(AFTER_HOURS, tick=True):
        await wx_plain.say(U, "人工")
        await wx_plain.say(U, "请给我回个电话")
        await wx_plain.say("oStaffNobody0000000000009", "人工")  # a follower never bound
        await wx_plain.say("oStaffNobody0000000000009", "你好")
    with Session(services.engine) as s:
        s.add(HospitalVisit(customer_id=desk.id, hospital="北京三甲医院", ward="5病区",
                            admission_date=date(2026, 11, 20),
                            created_at=datetime.now(timezone.utc)))
        s.commit()
        (msg_id, _) = s.exec(sm_select(LeftMessage.id)).all()
        visit_id = s.exec(sm_select(HospitalVisit.id)).one()
    listed = await wx_plain.say(SPEC, "#留言 未处理")
    line = next(l for l in listed.splitlines() if l.startswith(f"[{msg_id}]"))
    assert "李*" in line and "13900001111" in line and "李四" not in line
    assert "请给我回个电话" in line
    visits = await wx_plain.say(SPEC, "#探视 未处理")
    assert "李*" in visits and "13900001111" in visits and "李四" not in visits
    shown = [(a.staff_openid, a.target, json.loads(a.after)["for"])
             for a in audits(services, "phone_shown")]
    assert shown == [(SPEC, f"customer:{desk.id}", f"message:{msg_id}"),
                     (SPEC, f"customer:{desk.id}", f"visit:{visit_id}")]
    # Answered and done: nothing to call back, the phone is masked again and not audited.
    await wx_plain.say(SPEC, f"#回复 {msg_id} 您好，已为您处理")
    await wx_plain.say(SPEC, f"#探视完成 {visit_id}")
    later = await wx_plain.say(SPEC, "#留言") + await wx_plain.say(SPEC, "#探视")
    assert "13900001111" not in later and "139****1111" in later
    assert len(audits(services, "phone_shown")) == 2


async def test_lookup_keeps_each_fact_on_its_own_line(wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        await booked(wx_plain, services)
        reply = await wx_plain.say(SPEC, "#查询 13900001111")
    lines = reply.splitlines()
    assert any(l.startswith("剩余次数：") for l in lines)
    assert any(l.startswith("最近联系：") for l in lines)
    assert not any("次数" in l and "最近联系" in l for l in lines)


# --- Confirmations: a time already past, and two staff at once -------------------------------------


@pytest.mark.parametrize("at,refused", [("09:59", True), ("10:00", True), ("10:01", False)])
async def test_a_confirmation_for_a_time_already_past_is_refused(wx_plain, desk, services,
                                                                 at, refused):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
    with time_machine.travel(WED, tick=False):  # exactly 10:00:00 on 25 November
        reply = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-25 {at}")
    (b1,) = bookings(services)
    if refused:
        assert "已经过去" in reply and "客户将收到" not in reply
        assert b1.status == "submitted" and notes(services, "booking_confirmed") == []
        assert audits(services, "confirm") == []
    else:
        assert "客户将收到" in reply and "已经过去" not in reply
        assert (b1.status, b1.confirmed_time) == ("confirmed", at)
        assert len(notes(services, "booking_confirmed")) == 1


async def test_a_confirmation_from_a_stale_view_is_told_someone_else_changed_it(
        wx_plain, desk, services):
    """The console's case: it passes the version it showed; a colleague changed it since."""
    from bot.domain import staff_desk
    from bot.domain.bookings import calendar

    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        with Session(services.engine) as s:
            shown = staff_desk.booking_version(s, b.number)
        await wx_plain.say("oStaffAdmn000000000000001", f"#确认 {b.number} 2026-11-30 09:30")
        with Session(services.engine) as s:
            with pytest.raises(staff_desk.StaffRefused) as exc:
                staff_desk.confirm_booking(s, SPEC, b.number, date(2026, 12, 1), "14:00", None,
                                           services.now(), services.rules, calendar(),
                                           version=shown)
            s.rollback()
        assert exc.value.code == "changed"
        for line in (f"#取消 {b.number} 重复", f"#完成 {b.number}"):
            with Session(services.engine) as s:
                with pytest.raises(staff_desk.StaffRefused, match="changed"):
                    (staff_desk.staff_cancel(s, SPEC, b.number, "重复", services.now(),
                                             version=shown) if "取消" in line else
                     staff_desk.close_booking(s, SPEC, b.number, "completed", services.now(),
                                              version=shown))
    (b1,) = bookings(services)
    assert (b1.status, b1.confirmed_date, b1.confirmed_time) == ("confirmed", date(2026, 11, 30),
                                                                 "09:30")
    assert len(notes(services, "booking_confirmed")) == 1
    assert [a.action for a in audits(services)] == ["confirm"]
    from bot.infra.texts import render

    text = render("staff/refused", **{"code": exc.value.code, **exc.value.facts})
    assert "其他同事" in text and "2026年11月30日" in text and "已确认" in text


if USE_PG:
    async def test_two_staff_reconfirming_at_once_the_later_is_told_it_changed(
            wx_plain, desk, services):
        """Two connections, as two workers: each reads the version when its command starts
        (as the chat command does), then both confirm at once. One wins; the other is
        refused, and the customer gets one confirmation."""
        import threading

        from sqlalchemy import func, select

        from bot.domain import staff_desk
        from bot.domain.bookings import calendar

        with time_machine.travel(WED, tick=True):
            b = await booked(wx_plain, services)
            await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
            barrier = threading.Barrier(4)
            results: list = []

            def attempt(i: int) -> None:
                with Session(services.engine) as s:
                    seen = staff_desk.booking_version(s, b.number)
                    barrier.wait()
                    try:
                        staff_desk.confirm_booking(s, f"staff{i}", b.number, date(2026, 12, 1),
                                                   f"1{i}:00", None, services.now(),
                                                   services.rules, calendar(), version=seen)
                        s.execute(select(func.pg_sleep(0.2)))
                        s.commit()
                        results.append("ok")
                    except staff_desk.StaffRefused as exc:
                        s.rollback()
                        results.append(exc.code)

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert sorted(results) == ["changed", "changed", "changed", "ok"]
        assert len(notes(services, "booking_confirmed")) == 2  # the first and the winner
        assert [a.action for a in audits(services)] == ["confirm", "reconfirm"]


# --- Broadcasts: the monthly allowance holds against concurrent sends ------------------------------


if USE_PG:
    def test_five_concurrent_broadcasts_never_make_a_fifth_in_a_month(tiers, services):
        """Five admins' confirmations at once on separate connections, no per-user lock: the
        locked allowance row alone keeps the month at WeChat's 4."""
        import threading

        from sqlalchemy import func, select

        from bot.domain import broadcasts
        from bot.domain.staff_desk import StaffRefused

        now = datetime.fromisoformat("2026-11-03 10:00:00+08:00")
        barrier = threading.Barrier(5)
        results: list = []

        def attempt(i: int) -> None:
            with Session(services.engine) as s:
                barrier.wait()
                try:
                    broadcasts.send(s, f"admin{i}", ["diamond"], f"活动{i}", now)
                    s.execute(select(func.pg_sleep(0.1)))
                    s.commit()
                    results.append("ok")
                except StaffRefused as exc:
                    s.rollback()
                    results.append(exc.code)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == ["allowance_spent", "ok", "ok", "ok", "ok"]
        with Session(services.engine) as s:
            assert s.execute(select(func.count()).select_from(Broadcast).where(
                Broadcast.tier == "diamond", Broadcast.month == "2026-11")).scalar_one() == 4
        assert len(notes(services, "mass_send")) == 4


# --- The CLI: binding, unbinding and exports are audited; bound users join their tier tag --------

OPERATOR = "ops-liu"  # the operating-system user running the CLI (getpass reads LOGNAME)


def run_cli(db_url, wechat_api, *args):
    import subprocess
    import sys

    from tests.conftest import APP_ID, APP_SECRET
    from tests.support import ROOT
    from tests.support.imports import cli_env

    env = cli_env(db_url)
    env.update(WECHAT_API_BASE_URL=wechat_api.state.base_url, WECHAT_APP_ID=APP_ID,
               WECHAT_APP_SECRET=APP_SECRET, LOGNAME=OPERATOR)
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _tag_of(engine, double, openid: str) -> str | None:
    """The tier whose WeChat tag (in the double) holds `openid`."""
    from bot.domain.broadcasts import tier_tags

    with Session(engine) as s:
        tags = tier_tags(s)
    held = [tier for tier, tag_id in tags.items()
            if openid in double.state.tag_members.get(tag_id, set())]
    return held[0] if held else None


def test_cli_bind_unbind_and_export_are_audited_with_the_os_user(db_url, engine, double):
    from models import StaffAudit

    with Session(engine) as s:
        c = factories.customer(s, name="吴九", tier="platinum", phone="13600003333")
        s.commit()
        cid, number = c.id, c.id_number
    res = run_cli(db_url, double, "bind", "oCliBind0000000000000001", number)
    assert res.returncode == 0, res.stderr
    # Into the tier's WeChat tag at once: the first broadcast needs no daily job first.
    assert _tag_of(engine, double, "oCliBind0000000000000001") == "platinum"
    assert run_cli(db_url, double, "privacy", "export", "oCliBind0000000000000001").returncode == 0
    assert run_cli(db_url, double, "unbind", "oCliBind0000000000000001").returncode == 0
    assert _tag_of(engine, double, "oCliBind0000000000000001") is None
    with Session(engine) as s:
        rows = [(a.staff_openid, a.action, a.target, a.after)
                for a in s.exec(sm_select(StaffAudit).order_by(StaffAudit.id)).all()]
    assert [r[:3] for r in rows] == [
        (OPERATOR, "bind", "oCliBind0000000000000001"),
        (OPERATOR, "privacy_export", "oCliBind0000000000000001"),
        (OPERATOR, "unbind", "oCliBind0000000000000001")]
    assert json.loads(rows[0][3]) == {"customer_id": cid}
    listed = run_cli(db_url, double, "audit", "list", "--staff", OPERATOR)
    assert listed.stdout.count(OPERATOR) == 3 and number not in listed.stdout


def test_cli_bind_file_audits_each_binding_and_tags_the_users(db_url, engine, double, tmp_path):
    from models import StaffAudit

    with Session(engine) as s:
        cs = [factories.customer(s, name=f"批量{i}", tier=t, birth=date(1971 + i, 3, 4))
              for i, t in enumerate(("diamond", "gold"))]
        s.commit()
        rows = [(f"oCliFile000000000000000{i}", c.id, c.id_number) for i, c in enumerate(cs)]
    path = tmp_path / "bind.csv"
    path.write_text("openid,id_number\n" + "".join(f"{o},{n}\n" for o, _, n in rows),
                    encoding="utf-8")
    res = run_cli(db_url, double, "bind", "--file", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert [_tag_of(engine, double, o) for o, _, _ in rows] == ["diamond", "gold"]
    with Session(engine) as s:
        audited = [(a.staff_openid, a.action, a.target, json.loads(a.after)["customer_id"])
                   for a in s.exec(sm_select(StaffAudit).order_by(StaffAudit.id)).all()]
    assert audited == [(OPERATOR, "bind", o, cid) for o, cid, _ in rows]
    # A file refused as a whole binds nothing and audits nothing.
    bad = tmp_path / "bad.csv"
    bad.write_text("openid,id_number\noCliFile0000000000000009,nonsense\n", encoding="utf-8")
    assert run_cli(db_url, double, "bind", "--file", str(bad)).returncode == 1
    with Session(engine) as s:
        assert len(s.exec(sm_select(StaffAudit)).all()) == 2


@pytest.mark.parametrize("job", ["tiers", "daily"])
def test_jobs_run_for_a_date_after_today_asks_for_yes(db_url, engine, double, job):
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    with Session(engine) as s:  # no policy left: any tier run drops this customer at once
        c = factories.customer(s, name="郑十", tier="diamond")
        s.commit()
        cid = c.id
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    tomorrow = (today + timedelta(days=1)).isoformat()

    def tier() -> str:
        with Session(engine) as s:
            return s.get(Customer, cid).tier

    refused = run_cli(db_url, double, "jobs", "run", job, "--date", tomorrow)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert tier() == "diamond"  # nothing ran
    ran = run_cli(db_url, double, "jobs", "run", job, "--date", today.isoformat())
    assert ran.returncode == 0, ran.stderr  # today needs no --yes
    assert tier() == "mass"
    with Session(engine) as s:
        s.execute(update(Customer).where(Customer.id == cid)
                  .values(tier="diamond", needs_recompute=True))  # as an import leaves it
        s.commit()
    ran = run_cli(db_url, double, "jobs", "run", job, "--date", tomorrow, "--yes")
    assert ran.returncode == 0, ran.stderr
    assert tier() == "mass"


# --- #注册 guesses are counted, locked out and logged ---------------------------------------------


async def test_registration_guesses_lock_the_account_out_and_are_logged(wx_plain, desk, services,
                                                                        caplog):
    """BIND_MAX_FAILURES (5) wrong codes from one WeChat account lock its registration for
    BIND_LOCK_MINUTES (30); the right code is refused until the lock ends, then works."""
    from datetime import timedelta

    from models import Staff
    from tests.support.staff import invite

    guesser = "oStaffGuess0000000000001"
    code = invite(services)
    start = datetime.fromisoformat("2026-11-25 10:00:00+08:00")
    with time_machine.travel(start, tick=False):
        for i in range(4):
            assert "已经用过" in await wx_plain.say(guesser, f"#注册 WRONGCODE{i}")
        locked = await wx_plain.say(guesser, "#注册 WRONGCODE9")  # the fifth: locks
        assert "暂时不能登记" in locked and "10:30" in locked
        assert "暂时不能登记" in await wx_plain.say(guesser, f"#注册 {code}")
    # Another account is not locked by this one's guesses.
    assert "已经用过" in await wx_plain.say("oStaffGuess0000000000002", "#注册 WRONGCODEX")
    with time_machine.travel(start + timedelta(minutes=30, seconds=-1), tick=False):
        assert "暂时不能登记" in await wx_plain.say(guesser, f"#注册 {code}")
    with Session(services.engine) as s:
        assert s.get(Staff, guesser) is None
    with time_machine.travel(start + timedelta(minutes=30), tick=False):
        assert "登记成功" in await wx_plain.say(guesser, f"#注册 {code}")
    failed = audits(services, "register_failed")
    assert [a.staff_openid for a in failed] == [guesser] * 5 + ["oStaffGuess0000000000002"]
    logged = [r.getMessage() for r in caplog.records if "registration refused" in r.getMessage()]
    assert len(logged) == 6
    assert not any("WRONGCODE" in m or code in m for m in logged)
    assert not any("WRONGCODE" in (a.after or "") for a in failed)


# --- A staff cancellation: by SMS when the confirmation went by SMS; its reason in 我的预约 -------


def _sms(services) -> list[dict]:
    return [dict(json.loads(n.payload), key=n.dedupe_key, to=n.recipient)
            for n in notes(services, "sms")]


async def test_a_staff_cancellation_goes_by_sms_when_the_confirmation_did(wx_plain, desk,
                                                                         services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
        assert [m["template"] for m in _sms(services)] == ["booking_confirmed"]
        await wx_plain.say(SPEC, f"#取消 {b.number} 医生临时停诊，已为您另行安排")
        mine = await wx_plain.say(U, "我的预约")
    confirmed, cancelled = _sms(services)
    assert cancelled["template"] == "booking_cancelled" and cancelled["to"] == "13900001111"
    assert "医生临时停诊" in cancelled["text"] and b.number in cancelled["text"]
    assert "11月30日 09:30" in cancelled["text"] and "不计" in cancelled["text"]
    assert b.number in mine and "医生临时停诊，已为您另行安排" in mine


async def test_a_staff_cancellation_of_an_unconfirmed_booking_sends_no_sms(wx_plain, desk,
                                                                          services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await wx_plain.say(SPEC, f"#取消 {b.number} 重复提交")
        mine = await wx_plain.say(U, "我的预约")
    assert _sms(services) == []  # no SMS told them of the booking: none tells of its end
    assert len(notes(services, "booking_cancelled")) == 1  # the template message only
    assert "重复提交" in mine


async def test_a_reply_quotes_what_the_customer_asked_short_and_inert(wx_plain, desk, services):
    asked = "请问体检报告多久能出来？" + "我上周做的体检一直没有收到通知" + PHISH
    with time_machine.travel(AFTER_HOURS, tick=True):
        await wx_plain.say(U, "人工")
        await wx_plain.say(U, asked)
    with Session(services.engine) as s:
        msg_id = s.exec(sm_select(LeftMessage.id)).one()
    await wx_plain.say(SPEC, f"#回复 {msg_id} 报告一般5个工作日内出，我们帮您催一下")
    (note,) = notes(services, "custom")
    text = json.loads(note.payload)["text"]
    quote = re.search(r"「(.*?)」", text)[1]
    # What the customer said, as plain text (a text message is not HTML: no 「&lt;」, and
    # no link of theirs sent back live), cut at 30 characters of it, the cut marked.
    said = "请问体检报告多久能出来？" + "我上周做的体检一直没有收到通知" + "请重新登录"
    assert quote == said[:29] + "…", quote
    assert "<" not in text and "&lt;" not in text and "href" not in text
    assert text.endswith("报告一般5个工作日内出，我们帮您催一下")
    # A question that is all markup is quoted as text, never as a link.
    with time_machine.travel(AFTER_HOURS, tick=True):
        await wx_plain.say(U, "人工")
        await wx_plain.say(U, SHORT_LINK)
    with Session(services.engine) as s:
        second = max(s.exec(sm_select(LeftMessage.id)).all())
    await wx_plain.say(SPEC, f"#回复 {second} 您好")
    text = json.loads(notes(services, "custom")[1].payload)["text"]
    assert "<a" not in text and "&lt;" not in text and "「取消」" in text, text


async def test_a_broadcast_confirmed_after_a_colleague_spent_the_month_is_refused(
        wx_plain, tiers, services):
    from models import Staff

    other = "oStaffAdmn000000000000002"
    with Session(services.engine) as s:
        s.add(Staff(openid=other, name="钱主管", role="admin", created_at=datetime.now(timezone.utc)))
        s.commit()
    with time_machine.travel("2026-11-03 10:00:00+08:00", tick=True):
        for text in ("一", "二", "三"):
            await wx_plain.say(other, f"#群发 钻石 {text}")
            await wx_plain.say(other, "#确认群发")
        assert "还可群发约1次" in await wx_plain.say("oStaffAdmn000000000000001", "#群发 钻石 四A")
        assert "还可群发约1次" in await wx_plain.say(other, "#群发 钻石 四B")
        assert "群发已提交" in await wx_plain.say(other, "#确认群发")
        late = await wx_plain.say("oStaffAdmn000000000000001", "#确认群发")
    assert "钻石" in late and "上限" in late and "diamond" not in late
    assert len(notes(services, "mass_send")) == 4

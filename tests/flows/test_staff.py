"""Staff in chat (issue 11): every command through /wechat with good and bad arguments, from
staff and from non-staff; confirmation against the booking rules; the audit; broadcasts by
tier tag with WeChat's monthly allowance; the menu. What the customer is told is checked
through the `notification` rows the notify module was asked for."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import func, select, update
from sqlmodel import Session
from sqlmodel import select as sm_select

from bot.domain import broadcasts
from bot.domain.accounts import bind, unbind
from bot.domain.staff_desk import create_invite
from bot.domain.vocab import BookingStatus
from bot.infra.texts import render
from models import (Booking, Broadcast, Customer, HospitalVisit, Institution, LeftMessage,
                    Notification, Staff, StaffAudit, StaffInvite, TagMember)
from tests.support import factories
from tests.support.booking import INSTITUTIONS, WED, book_dental, bookings
from tests.support import ROOT
from tests.support.imports import cli_env
from tests.support.staff import ADMIN, DIAMOND, SPEC, STRANGER, U, audits, booked, delivered, desk, invite, notes, tiers  # noqa: F401


# --- Help, roles, and what non-staff see ----------------------------------------------------------


async def test_help_lists_what_each_role_may_use(wx_plain, desk):
    spec = await wx_plain.say(SPEC, "#帮助")
    admin = await wx_plain.say(ADMIN, "#帮助")
    for usage in ("#确认 <预约号> <YYYY-MM-DD> <HH:MM> [机构名称]", "#完成 <预约号>",
                  "#预约 [状态] [服务] [城市]", "#查询 <手机号|保单号|预约号>"):
        assert usage in spec and usage in admin
    assert "#群发" not in spec and "#群发 <层级…|全部> <内容>" in admin and "#确认群发" in admin
    assert "#注册" not in spec  # the one public command is not a staff tool


async def test_a_specialist_is_refused_admin_commands_with_the_reason(wx_plain, desk, services):
    for line in ("#群发 钻石 周末活动", "#确认群发", "#群发记录"):
        reply = await wx_plain.say(SPEC, line)
        assert "仅限管理员" in reply and "健康专员" in reply
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Broadcast)).scalar_one() == 0


@pytest.mark.parametrize("line", ["#确认 YY2611250001 2026-11-30 09:30", "#帮助", "#预约",
                                  "#群发 全部 你好", "#查询 13900001111", "#不存在的指令"])
async def test_non_staff_hash_text_is_ordinary_text(wx_plain, desk, line):
    for who in (U, STRANGER):
        reply = await wx_plain.say(who, line)
        assert "指令" not in reply and "用法" not in reply and "员工" not in reply
        assert "138" not in reply and "139" not in reply


async def test_staff_unknown_command_and_bad_arguments_get_usage(wx_plain, desk):
    assert await wx_plain.say(SPEC, "#乱写") == render("staff/unknown_command")
    cases = [
        ("#确认", "#确认 <预约号> <YYYY-MM-DD> <HH:MM> [机构名称]", "预约号"),
        ("#确认 YY2611250001 明天 09:30", "#确认 <预约号> <YYYY-MM-DD> <HH:MM> [机构名称]",
         "YYYY-MM-DD"),
        ("#确认 YY2611250001 2026-11-30 9点", "#确认 <预约号> <YYYY-MM-DD> <HH:MM> [机构名称]",
         "HH:MM"),
        ("#完成", "#完成 <预约号>", "预约号"),
        ("#完成 YY1 多余", "#完成 <预约号>", "预约号"),
        ("#爽约 123", "#爽约 <预约号>", "预约号"),
        ("#取消 YY2611250001", "#取消 <预约号> <原因>", "原因"),
        ("#预约 随便", "#预约 [状态] [服务] [城市]", "状态"),
        ("#预约 受理 理发", "#预约 [状态] [服务] [城市]", "服务"),
        ("#查询", "#查询 <手机号|保单号|预约号>", "手机号|保单号|预约号"),
        ("#留言 全部", "#留言 [未处理]", "未处理"),
        ("#回复 abc 你好", "#回复 <留言号> <内容>", "留言号"),
        ("#回复 3", "#回复 <留言号> <内容>", "内容"),
        ("#探视 都要", "#探视 [未处理]", "未处理"),
        ("#探视完成", "#探视完成 <编号>", "编号"),
    ]
    for line, usage, wrong in cases:
        assert await wx_plain.say(SPEC, line) == render("staff/usage", usage=usage, wrong=wrong), line
    assert await wx_plain.say(ADMIN, "#群发 全部") == render(
        "staff/usage", usage="#群发 <层级…|全部> <内容>", wrong="内容")
    assert await wx_plain.say(ADMIN, "#群发 周末活动") == render(
        "staff/usage", usage="#群发 <层级…|全部> <内容>", wrong="层级…|全部")


# --- A booking from 受理 to 已确认 to 已完成, by chat alone ---------------------------------------


async def test_a_booking_goes_from_submitted_to_confirmed_to_completed_by_chat(
        wx_plain, desk, services, sent, wechat_api):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        queue = await wx_plain.say(SPEC, "#预约")
        assert b.number in queue and "洁牙" in queue and "李*" in queue and "李四" not in queue
        assert "北京" in queue and "11月27日" in queue and "受理" in queue
        assert b.number in await wx_plain.say(SPEC, "#预约 受理 洁牙 北京")
        assert b.number not in await wx_plain.say(SPEC, "#预约 受理 洁牙 上海")
        assert b.number not in await wx_plain.say(SPEC, "#预约 已完成")

        reply = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
        assert "2026年11月30日" in reply and "09:30" in reply and "北京洁牙门诊" in reply
        (b1,) = bookings(services)
        assert b1.status == BookingStatus.CONFIRMED and b1.confirmed_date == date(2026, 11, 30)
        assert b1.confirmed_time == "09:30" and b1.confirmed_at is not None
        (note,) = notes(services, "booking_confirmed")
        assert note.customer_id == desk.id and note.booking_id == b.id
        # The customer's template message, as WeChat received it (the double's log).
        template = await delivered(wechat_api, "template", U)
        assert "北京洁牙门诊" in json.dumps(template["body"]["data"], ensure_ascii=False)

        # Twice: one confirmation message, and the reply says it was already confirmed.
        again = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
        assert "无需重复确认" in again
        assert len(notes(services, "booking_confirmed")) == 1

        early = await wx_plain.say(SPEC, f"#完成 {b.number}")
        assert "还没到" in early and bookings(services)[0].status == BookingStatus.CONFIRMED
    with time_machine.travel("2026-11-30 15:00:00+08:00", tick=True):
        done = await wx_plain.say(SPEC, f"#完成 {b.number}")
        assert b.number in done and "已完成" in done
        assert "已经是" in await wx_plain.say(SPEC, f"#完成 {b.number}")
    (b2,) = bookings(services)
    assert b2.status == BookingStatus.COMPLETED and b2.counted
    actions = [(a.action, a.target, a.staff_openid) for a in audits(services)]
    assert actions == [("confirm", b.number, SPEC), ("completed", b.number, SPEC)]
    first = audits(services, "confirm")[0]
    assert json.loads(first.before)["status"] == "submitted"
    assert json.loads(first.after)["status"] == "confirmed"


async def test_reconfirming_another_date_moves_the_booking_and_tells_the_customer_again(
        wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
        reply = await wx_plain.say(ADMIN, f"#确认 {b.number} 2026-12-01 14:00 北京洁牙门诊")
        assert "改为" in reply and "2026年12月1日" in reply
    (b1,) = bookings(services)
    assert (b1.confirmed_date, b1.confirmed_time) == (date(2026, 12, 1), "14:00")
    assert len(notes(services, "booking_confirmed")) == 2
    assert [a.action for a in audits(services)] == ["confirm", "reconfirm"]


async def test_confirm_inside_the_lead_time_is_allowed_with_a_warning(wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        reply = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-26 10:00")
    assert "提前预约期限之内" in reply
    assert bookings(services)[0].status == BookingStatus.CONFIRMED


async def test_confirm_in_a_provisional_year_warns_that_the_notice_is_missing(
        wx_plain, desk, services):
    with time_machine.travel("2026-12-21 10:00:00+08:00", tick=True):
        b = await booked(wx_plain, services)
        reply = await wx_plain.say(SPEC, f"#确认 {b.number} 2027-01-11 09:00")
    assert "2027年的放假安排通知尚未载入" in reply
    (b1,) = bookings(services)
    assert b1.status == BookingStatus.CONFIRMED and b1.quota_year == 2027


@pytest.mark.parametrize("line,why", [
    ("#确认 {n} 2026-11-29 09:30", "不营业"),  # Sunday: 北京洁牙门诊 is closed
    ("#确认 {n} 2026-12-02 09:30", "不营业"),  # a closed date
    ("#确认 {n} 2026-11-20 09:30", "已经过去"),
    ("#确认 {n} 2027-06-01 09:30", "超出"),
    ("#确认 {n} 2026-11-30 09:30 北京商业体检中心", "不提供"),
    ("#确认 {n} 2026-11-30 09:30 不存在的医院", "没有名为"),
    ("#确认 YY2611259999 2026-11-30 09:30", "没有预约号"),
])
async def test_confirm_refuses_what_breaks_a_rule_with_the_reason(wx_plain, desk, services,
                                                                  line, why):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        reply = await wx_plain.say(SPEC, line.format(n=b.number))
    assert why in reply
    assert bookings(services)[0].status == BookingStatus.SUBMITTED
    assert notes(services, "booking_confirmed") == [] and audits(services) == []


async def test_confirm_refuses_when_the_quota_no_longer_holds(wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        with Session(services.engine) as s:  # another 2026 use, recorded since (e.g. by phone)
            s.add(Booking(number="YY2611250099", request_key="phone-1", customer_id=desk.id,
                          tier="gold", service="dental", preferred_date=date(2026, 11, 28),
                          quota_year=2026, status=BookingStatus.COMPLETED, counted=True,
                          created_at=datetime.now(timezone.utc),
                          updated_at=datetime.now(timezone.utc)))
            s.commit()
        reply = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
    assert "2026 年这项服务的次数已用完" in reply


async def test_confirm_of_a_cancelled_booking_is_refused(wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        reply = await wx_plain.say(SPEC, f"#取消 {b.number} 机构临时停诊")
        assert b.number in reply and "机构临时停诊" in reply
        refused = await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
    assert "已取消" in refused
    (b1,) = bookings(services)
    assert b1.status == BookingStatus.CANCELLED and not b1.counted  # staff: never counted
    (note,) = notes(services, "booking_cancelled")
    told = json.dumps(json.loads(note.payload), ensure_ascii=False)
    assert "机构临时停诊" in told and "不计次数" in told  # the reason; the use is not counted
    assert note.customer_id == desk.id and note.booking_id == b1.id
    assert [a.action for a in audits(services)] == ["cancel"]
    assert "已取消" in await wx_plain.say(SPEC, f"#取消 {b.number} 再取消一次")


async def test_a_no_show_counts_the_use(wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        assert "需先确认" in await wx_plain.say(SPEC, f"#爽约 {b.number}")
        await wx_plain.say(SPEC, f"#确认 {b.number} 2026-11-30 09:30")
    with time_machine.travel("2026-11-30 18:00:00+08:00", tick=True):
        reply = await wx_plain.say(SPEC, f"#爽约 {b.number}")
    assert "计入" in reply
    (b1,) = bookings(services)
    assert b1.status == BookingStatus.NO_SHOW and b1.counted
    assert [a.action for a in audits(services)] == ["confirm", "no_show"]


# --- Customers, messages and visits ---------------------------------------------------------------


async def test_lookup_by_phone_policy_and_booking_number_is_masked(wx_plain, desk, services):
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        for key in ("13900001111", "P2024000777", b.number, b.number.lower()):
            reply = await wx_plain.say(SPEC, f"#查询 {key}")
            assert "李*" in reply and "139****1111" in reply, key
            assert "李四" not in reply and "13900001111" not in reply
            assert "黄金" in reply and "2026年预约：1次" in reply and "洁牙0次" in reply
            assert "最近联系：2026年11月25日" in reply
        assert await wx_plain.say(SPEC, "#查询 13999999999") == render("staff/lookup_none")


async def test_messages_are_answered_through_the_outbox_and_closed(wx_plain, desk, services):
    with Session(services.engine) as s:
        s.add(LeftMessage(openid=U, customer_id=desk.id, text="请回电话",
                          created_at=datetime.now(timezone.utc)))
        s.commit()
        msg_id = s.exec(sm_select(LeftMessage.id)).one()
    listed = await wx_plain.say(SPEC, "#留言 未处理")
    assert f"[{msg_id}]" in listed and "请回电话" in listed
    reply = await wx_plain.say(SPEC, f"#回复 {msg_id} 您好，专员稍后来电")
    assert str(msg_id) in reply
    (note,) = notes(services, "custom")
    assert note.recipient == U
    assert json.loads(note.payload)["text"] == "您留言问到：「请回电话」\n您好，专员稍后来电"
    with Session(services.engine) as s:
        m = s.get(LeftMessage, msg_id)
        assert m.closed_at is not None and m.closed_by == SPEC and m.reply == "您好，专员稍后来电"
    assert f"[{msg_id}]" not in await wx_plain.say(SPEC, "#留言 未处理")
    assert "已回复" in await wx_plain.say(SPEC, "#留言")
    assert "已经回复" in await wx_plain.say(SPEC, f"#回复 {msg_id} 再说一次")
    assert "没有编号" in await wx_plain.say(SPEC, "#回复 999 你好")
    assert len(notes(services, "custom")) == 1
    # The open message's phone was shown once (audited); the closed one's is masked.
    assert [a.action for a in audits(services)] == ["phone_shown", "reply"]


async def test_hospital_visits_are_listed_and_closed(wx_plain, desk, services):
    with Session(services.engine) as s:
        s.add(HospitalVisit(customer_id=desk.id, hospital="北京三甲医院", ward="5病区",
                            admission_date=date(2026, 11, 20), created_at=datetime.now(timezone.utc)))
        s.commit()
        visit_id = s.exec(sm_select(HospitalVisit.id)).one()
    listed = await wx_plain.say(SPEC, "#探视 未处理")
    assert f"[{visit_id}]" in listed and "北京三甲医院" in listed and "李*" in listed
    assert "记为完成" in await wx_plain.say(SPEC, f"#探视完成 {visit_id}")
    assert f"[{visit_id}]" not in await wx_plain.say(SPEC, "#探视 未处理")
    assert "已经完成" in await wx_plain.say(SPEC, f"#探视完成 {visit_id}")
    assert "没有编号" in await wx_plain.say(SPEC, "#探视完成 999")
    assert [a.action for a in audits(services)] == ["phone_shown", "visit_done"]


# --- Registration with a one-time code ----------------------------------------------------------------


async def test_registration_links_the_openid_once(wx_plain, desk, services):
    code = invite(services)
    with Session(services.engine) as s:  # only the code's hash is kept
        assert code not in json.dumps([r.code_hash for r in s.exec(sm_select(StaffInvite)).all()])
    reply = await wx_plain.say(STRANGER, f"#注册 {code}")
    assert "登记成功" in reply and "健康专员" in reply
    with Session(services.engine) as s:
        assert s.get(Staff, STRANGER).role == "specialist"
    assert "#确认" in await wx_plain.say(STRANGER, "#帮助")  # now a staff member
    assert "已经是员工" in await wx_plain.say(STRANGER, f"#注册 {code}")
    other = "oStaffNobody0000000000002"
    assert "已经用过" in await wx_plain.say(other, f"#注册 {code}")
    assert "已经用过" in await wx_plain.say(other, "#注册 WRONGCODE1")
    assert await wx_plain.say(other, "#注册") == render("staff/usage", usage="#注册 <邀请码>",
                                                       wrong="邀请码")
    with Session(services.engine) as s:
        assert s.get(Staff, other) is None
    # The two refused codes from `other` are audited too (issue 15: guesses are noticed).
    assert [a.action for a in audits(services)] == ["invite", "register", "register_failed",
                                                    "register_failed"]


async def test_an_expired_invitation_is_refused(wx_plain, desk, services):
    code = invite(services, role="admin")
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(hours=24, minutes=1), tick=True):
        assert "已过期" in await wx_plain.say(STRANGER, f"#注册 {code}")
    with Session(services.engine) as s:
        assert s.get(Staff, STRANGER) is None


# --- Broadcasts --------------------------------------------------------------------------------------


async def test_a_broadcast_to_diamond_reaches_only_the_diamond_tag(wx_plain, tiers, services,
                                                                  sent, wechat_api):
    preview = await wx_plain.say(ADMIN, "#群发 钻石 本周六客服节活动")
    assert "钻石：1人" in preview and "还可群发约4次" in preview and "#确认群发" in preview
    assert notes(services, "mass_send") == []  # nothing before the distinct phrase
    sent = await wx_plain.say(ADMIN, "#确认群发")
    assert "钻石" in sent
    (note,) = notes(services, "mass_send")
    assert json.loads(note.payload)["mass"] == {"tag_id": tiers["diamond"],
                                                "content": "本周六客服节活动"}
    # The outbox sent it as a mass send by tag, as WeChat takes it.
    call = await delivered(wechat_api, "mass")
    assert call["body"]["filter"] == {"is_to_all": False, "tag_id": tiers["diamond"]}
    assert call["reached"] == [DIAMOND]
    assert "group_id" not in call["body"]["filter"]
    assert "没有待发送" in await wx_plain.say(ADMIN, "#确认群发")  # sent once
    (a,) = audits(services, "broadcast")
    assert a.staff_openid == ADMIN and json.loads(a.after)["tiers"] == ["diamond"]


async def test_the_fifth_broadcast_to_a_tier_in_a_month_is_refused(wx_plain, tiers, services):
    with time_machine.travel("2026-11-03 10:00:00+08:00", tick=True):
        for text in ("一月活动", "二"):
            await wx_plain.say(ADMIN, f"#群发 全部 {text}")
            await wx_plain.say(ADMIN, "#确认群发")
        for text in ("三", "四"):
            await wx_plain.say(ADMIN, f"#群发 钻石 {text}")
            await wx_plain.say(ADMIN, "#确认群发")
        assert "还可群发约2次" in await wx_plain.say(ADMIN, "#群发 黄金 五")
        await wx_plain.say(ADMIN, "#取消群发")
        refused = await wx_plain.say(ADMIN, "#群发 钻石 黄金 五")
        assert "钻石" in refused and "上限" in refused
        assert "#确认群发" not in refused
        assert "没有待发送" in await wx_plain.say(ADMIN, "#确认群发")
    with Session(services.engine) as s:
        by_tier = dict(s.execute(select(Broadcast.tier, func.count()).group_by(Broadcast.tier)).all())
    assert by_tier["diamond"] == 4 and by_tier["gold"] == 2 and by_tier["mass"] == 2
    with time_machine.travel("2026-12-01 10:00:00+08:00", tick=True):  # a new month
        assert "还可群发约4次" in await wx_plain.say(ADMIN, "#群发 钻石 十二月")


async def test_a_pending_broadcast_is_dropped_by_cancel_or_bare_exit(wx_plain, tiers, services):
    await wx_plain.say(ADMIN, "#群发 钻石 内容一")
    assert "已放弃" in await wx_plain.say(ADMIN, "#取消群发")
    assert "没有待发送" in await wx_plain.say(ADMIN, "#确认群发")
    await wx_plain.say(ADMIN, "#群发 钻石 内容二")
    assert render("modes/broadcast_left") in await wx_plain.say(ADMIN, "取消")  # universal exit
    assert "没有待发送" in await wx_plain.say(ADMIN, "#确认群发")
    assert "没有待发送" in await wx_plain.say(ADMIN, "#取消群发")
    assert notes(services, "mass_send") == []


async def test_mass_send_results_come_from_masssendjobfinish(wx_plain, tiers, services):
    await wx_plain.say(ADMIN, "#群发 钻石 结果测试")
    await wx_plain.say(ADMIN, "#确认群发")
    (note,) = notes(services, "mass_send")
    with Session(services.engine) as s:
        broadcasts.mass_sent(s, note.dedupe_key, 7001)
        s.commit()
    assert "等待微信回报" in await wx_plain.say(ADMIN, "#群发记录")
    res = await wx_plain.event("gh_vipservice01", "MASSSENDJOBFINISH", MsgID="7001",
                               Status="send success", TotalCount="3", FilterCount="2",
                               SentCount="2", ErrorCount="0")
    assert res == {}
    history = await wx_plain.say(ADMIN, "#群发记录")
    assert "send success" in history and "总数3" in history and "过滤2" in history
    assert "成功2" in history and "失败0" in history
    with Session(services.engine) as s:
        (row,) = s.exec(sm_select(Broadcast)).all()
        assert (row.total_count, row.filter_count, row.sent_count, row.error_count) == (3, 2, 2, 0)


async def test_tags_follow_tier_changes_and_unbinding(tiers, desk, services, wechat_api):
    members = wechat_api.state.tag_members
    assert DIAMOND in members[tiers["diamond"]] and U in members[tiers["gold"]]
    with Session(services.engine) as s:  # the tier job upgrades the gold customer
        s.execute(update(Customer).where(Customer.id == desk.id).values(tier="platinum"))
        s.commit()
    report = broadcasts.sync_tags(services.engine, services.wechat, services.rules)
    assert (report.tagged, report.untagged) == (1, 1)
    with Session(services.engine) as s:
        assert s.get(TagMember, U).tier == "platinum"
    assert U not in members[tiers["gold"]] and U in members[tiers["platinum"]]
    with Session(services.engine) as s:
        unbind(s, DIAMOND)
        s.commit()
    broadcasts.sync_user(services.engine, services.wechat, services.rules, DIAMOND)
    assert DIAMOND not in members[tiers["diamond"]]
    with Session(services.engine) as s:
        assert s.get(TagMember, DIAMOND) is None
    again = broadcasts.sync_tags(services.engine, services.wechat, services.rules)
    assert (again.tagged, again.untagged) == (0, 0)  # in step: no call to WeChat


# --- The menu -------------------------------------------------------------------------------------


def test_every_menu_key_has_a_handler_in_the_production_router():
    from handlers import build_router
    from menus import MENU

    router = build_router()
    missing = [k for _, entries in MENU for _, k in entries if k not in router.keys]
    assert missing == []


@pytest.mark.parametrize("change,limit", [
    (lambda m: m["button"].append({"name": "四", "sub_button": m["button"][0]["sub_button"]}),
     "top-level buttons"),
    (lambda m: m["button"][1]["sub_button"].append(dict(m["button"][1]["sub_button"][0],
                                                        key="X6")), "entries"),
    (lambda m: m["button"][0].update(name="我的权益和等级查询"), "top-level name"),  # 27 bytes
    (lambda m: m["button"][0]["sub_button"][0].update(name="等" * 21), "entry name"),  # 63 bytes
    (lambda m: m["button"][0]["sub_button"][0].update(key="K" * 129), "key of"),
    (lambda m: m["button"][0]["sub_button"][1].update(key="MY_TIER"), "used twice"),
])
def test_the_menu_is_refused_at_each_of_wechats_limits(change, limit):
    from menus import MenuError, menu_json, validate_menu

    validate_menu(menu_json())
    broken = menu_json()
    change(broken)
    with pytest.raises(MenuError, match=limit):
        validate_menu(broken)


def test_the_menu_at_exactly_wechats_limits_is_accepted():
    from menus import validate_menu

    sub = [{"type": "click", "name": "等" * 20, "key": "K" * 126 + f"{i}"} for i in range(5)]
    assert all(len(s["name"].encode()) == 60 for s in sub)
    menu = {"button": [{"name": "我的权益等A",  # 16 bytes
                        "sub_button": [dict(s, key=s["key"] + str(j)) for s in sub]}
                       for j in range(3)]}
    assert len(menu["button"][0]["sub_button"][0]["key"].encode()) == 128
    validate_menu(menu)


# --- The CLI ----------------------------------------------------------------------------------------


def cli(db_url, wechat_api, *args) -> subprocess.CompletedProcess:
    env = cli_env(db_url)
    from tests.conftest import APP_ID, APP_SECRET

    env.update(WECHAT_API_BASE_URL=wechat_api.state.base_url, WECHAT_APP_ID=APP_ID,
               WECHAT_APP_SECRET=APP_SECRET)
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_menu_push_and_show(db_url, wechat_api):
    wechat_api.state.menu = None
    pushed = cli(db_url, wechat_api, "menu", "push")
    assert pushed.returncode == 0, pushed.stderr
    from menus import menu_json

    assert wechat_api.state.menu == menu_json()
    shown = cli(db_url, wechat_api, "menu", "show")
    assert shown.returncode == 0, shown.stderr
    for word in ("我的权益", "客服节活动", "理赔探视", "HOSPITAL_VISIT", "人工服务"):
        assert word in shown.stdout


def test_staff_invite_audit_list_and_the_bound_warning(db_url, wechat_api, engine):
    res = cli(db_url, wechat_api, "staff", "invite", "--name", "孙专员", "--role", "specialist")
    assert res.returncode == 0, res.stderr
    code = re.search(r"#注册 ([A-Z0-9]{10})", res.stdout)[1]
    bad = cli(db_url, wechat_api, "staff", "invite", "--name", "孙专员", "--role", "boss")
    assert bad.returncode != 0
    with Session(engine) as s:
        c = factories.customer(s, name="周六")
        bind(s, "oBoundAndStaff0000000001", c, datetime.now(timezone.utc))
        s.commit()
    added = cli(db_url, wechat_api, "staff", "add", "oBoundAndStaff0000000001", "--name", "周六",
                "--role", "admin")
    assert added.returncode == 0 and "also bound to a customer" in added.stderr
    listed = cli(db_url, wechat_api, "audit", "list")
    assert listed.returncode == 0, listed.stderr
    assert "invite" in listed.stdout and "staff_add" in listed.stdout and code not in listed.stdout
    only = cli(db_url, wechat_api, "audit", "list", "--staff", "nobody")
    assert "no staff actions" in only.stdout
    later = cli(db_url, wechat_api, "audit", "list", "--since", "2099-01-01")
    assert "no staff actions" in later.stdout
    assert cli(db_url, wechat_api, "audit", "list", "--since", "soon").returncode == 2

"""Asking is not commanding (docs/programme.md "What a message means", issue 14 §2), through /wechat:
a question gets the FAQ's answer even when it names a service, with an offer to book what the
customer's tier has; a command form starts the flow; at a step a question that is not the
step's answer is answered and the step asked again; questions the FAQ cannot answer are kept
for staff without the identity of who asked. Expected facts come from docs/programme.md."""
from __future__ import annotations

import pytest
import time_machine
from sqlalchemy import inspect
from sqlmodel import Session, select

from models import Booking, UnansweredQuestion
from tests.support.booking import INSTITUTIONS, U, WED, bookings, world  # noqa: F401  (fixture)

EXIT_NOTHING = "当前没有正在办理的事项"  # outside any flow, 退出 has nothing to leave
FOR_WHOM = "这次为谁预约"  # the booking flow's first question
PICK_CITY = "请选择就近的城市"
OFFER_DENTAL = "回复「预约洁牙」"


async def no_flow_started(wx) -> bool:
    return EXIT_NOTHING in await wx.say(U, "退出")


# --- Outside a flow -------------------------------------------------------------------------------


async def test_who_pays_the_expert_registration_fee_is_answered_not_booked(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "专家门诊挂号费谁出")
    assert "挂号费" in reply and "自行承担" in reply  # DOMAIN: medical fees are the customer's
    assert FOR_WHOM not in reply
    assert await no_flow_started(wx_plain)


async def test_does_cleaning_hurt_is_answered_with_an_offer_for_a_tier_that_has_it(wx_plain, world):
    world("gold")  # 黄金 has 洁牙
    reply = await wx_plain.say(U, "洁牙疼不疼")
    assert FOR_WHOM not in reply and OFFER_DENTAL in reply
    assert await no_flow_started(wx_plain)
    assert FOR_WHOM in await wx_plain.say(U, "预约洁牙")  # the offer, taken


async def test_no_offer_to_a_tier_without_the_service(wx_plain, world):
    world("pearl")  # 明珠 has no 洁牙
    reply = await wx_plain.say(U, "洁牙疼不疼")
    assert "预约洁牙" not in reply
    assert await no_flow_started(wx_plain)


async def test_how_many_uses_left_of_a_service_the_tier_lacks_says_it_has_none(wx_plain, world):
    world("pearl")  # DOMAIN: 洁牙 is 黄金 and above; 明珠 has none
    reply = await wx_plain.say(U, "我还能约几次洁牙")
    assert "明珠客户的权益里没有洁牙" in reply, reply
    assert "我的权益" in reply and FOR_WHOM not in reply  # where the own count is shown


async def test_how_many_uses_left_points_a_bound_customer_to_the_own_count(wx_plain, world):
    world("diamond")  # 钻石 has 洁牙, once a year
    reply = await wx_plain.say(U, "我还能约几次洁牙")
    assert "没有洁牙" not in reply and "每个自然年可用1次" in reply, reply
    assert "回复「我的权益」" in reply, reply


async def test_how_to_find_dental_institutions_lists_them_by_city(wx_plain, world):
    world("gold")
    reply = await wx_plain.say(U, "怎么查洁牙机构")
    assert "北京洁牙门诊" in reply and "上海洁牙门诊" in reply  # the dental institutions
    assert "北京商业体检中心" not in reply  # not a dental one
    assert await no_flow_started(wx_plain)


async def test_a_question_mark_on_a_service_word_is_a_question(wx_plain, world):
    world("gold")
    reply = await wx_plain.say(U, "洗牙？")
    assert FOR_WHOM not in reply
    assert await no_flow_started(wx_plain)


@pytest.mark.parametrize("tier,command", [("gold", "预约洁牙"), ("gold", "我要洗牙"),
                                          ("platinum", "帮我约体检")])
async def test_a_command_form_starts_the_flow(wx_plain, world, tier, command):
    world(tier)
    assert FOR_WHOM in await wx_plain.say(U, command)


@pytest.mark.parametrize("question,first,tiers", [
    ("黄金客户有体检吗", "没有", ("钻石", "铂金")),  # DOMAIN: 体检 is 钻石 and 铂金
    ("铂金客户可以约专家门诊吗", "可以", ("钻石", "铂金")),
    ("明珠会员能洗牙吗", "不可以", ("钻石", "铂金", "黄金")),
])
async def test_does_a_tier_have_a_service_starts_with_yes_or_no(wx_plain, question, first, tiers):
    reply = await wx_plain.say(U, question)
    assert reply.startswith(first), reply
    assert all(t in reply for t in tiers)
    assert await no_flow_started(wx_plain)


async def test_two_tiers_compared_name_what_only_the_higher_has(wx_plain):
    reply = await wx_plain.say(U, "钻石和铂金有什么区别")
    assert "特种检查" in reply  # DOMAIN: 钻石 only
    assert "尊享洁牙套餐" in reply and "高端洁牙套餐" in reply


# --- At a step ------------------------------------------------------------------------------------


async def test_a_question_at_a_step_is_answered_and_the_step_asked_again(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await wx_plain.say(U, "预约洁牙")
        at_city = await wx_plain.say(U, "本人")
        assert PICK_CITY in at_city
        reply = await wx_plain.say(U, "洁牙要钱吗")
        assert "免费" in reply  # the FAQ's answer …
        assert PICK_CITY in reply and "北京" in reply  # … then the city step again
        assert "没能对上" not in reply
        assert "北京洁牙门诊" in await wx_plain.say(U, "北京")  # the flow goes on
        await wx_plain.say(U, "北京洁牙门诊")
        summary = await wx_plain.say(U, "1")
        assert "请核对预约信息" in summary
        await wx_plain.say(U, "确认")
        assert len(bookings(services)) == 1


async def test_at_a_yes_no_step_the_answer_wins_over_the_question_shape(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        for m in ("预约洁牙", "本人", "北京", "北京洁牙门诊", "1"):
            await wx_plain.say(U, m)
        assert "预约已受理" in await wx_plain.say(U, "可以")
        assert len(bookings(services)) == 1


async def test_at_the_date_step_a_date_asked_as_a_question_is_the_date(wx_plain, world, services):
    # Decision: 「下周三可以吗」 proposes a date; the step's parser reads it (Wed 25 Nov ->
    # Wed 2 Dec 2026, inside the lead time and open: 北京洁牙门诊 is closed on 2 Dec, so use 上海).
    with time_machine.travel(WED, tick=True):
        world("gold")
        for m in ("预约洁牙", "本人", "上海", "上海洁牙门诊"):
            await wx_plain.say(U, m)
        summary = await wx_plain.say(U, "下周三可以吗")
        assert "请核对预约信息" in summary and "12月2日" in summary


async def test_a_question_the_faq_cannot_answer_at_a_step_gets_the_steps_reason(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await wx_plain.say(U, "预约洁牙")
        await wx_plain.say(U, "本人")
        reply = await wx_plain.say(U, "股票明天会涨吗")
        assert PICK_CITY in reply  # asked again; the flow waits
        assert "北京洁牙门诊" in await wx_plain.say(U, "北京")


# --- Questions the FAQ could not answer -------------------------------------------------------------


async def test_unanswered_questions_are_kept_without_identity(wx_plain, world, services):
    customer, _ = world("gold")
    await wx_plain.say(U, "你们公司年会在哪里开")
    await wx_plain.say(U, "洗牙要钱吗")  # answered: not kept
    with Session(services.engine) as s:
        rows = s.exec(select(UnansweredQuestion)).all()
    assert [(r.text, r.tier) for r in rows] == [("你们公司年会在哪里开", "gold")]
    assert rows[0].asked_at is not None
    columns = {c["name"] for c in inspect(services.engine).get_columns("unanswered_question")}
    assert columns == {"id", "text", "tier", "asked_at"}  # no openid, no customer id
    stored = " ".join(str(v) for r in rows for v in r.model_dump().values())
    assert U not in stored and customer.id_number not in stored


async def test_an_id_number_or_phone_typed_in_an_unanswered_question_is_not_kept(wx_plain,
                                                                                   services):
    # The numbers typed in, around a question no entry answers (年会: the company party).
    await wx_plain.say(U, "我是110101199003071234，13812345678，年会在哪办")
    with Session(services.engine) as s:
        (row,) = s.exec(select(UnansweredQuestion)).all()
    assert "110101199003071234" not in row.text and "13812345678" not in row.text
    assert "1381234" not in row.text and "年会在哪" in row.text


async def test_at_a_free_text_step_a_question_the_faq_answers_is_answered(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("platinum")
        for m in ("专家门诊", "本人", "心内科"):
            at_hospital = await wx_plain.say(U, m)
        assert "对医院有偏好吗" in at_hospital
        reply = await wx_plain.say(U, "专家门诊挂号费谁出？")
        assert "自行承担" in reply and "对医院有偏好吗" in reply  # answered, then asked again
        assert PICK_CITY in await wx_plain.say(U, "不限")  # the question was not the hospital


async def test_at_the_symptoms_step_a_question_is_the_symptoms(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("platinum")
        await wx_plain.say(U, "专家门诊")
        await wx_plain.say(U, "本人")
        reply = await wx_plain.say(U, "反复胃疼，要不要做胃镜？")  # the FAQ would answer it
        assert "对医院有偏好吗" in reply  # taken as what to see the expert about
        for m in ("不限", "北京", "北京三甲医院", "1", "确认"):
            await wx_plain.say(U, m)
        (b,) = bookings(services)
        assert b.department == "反复胃疼，要不要做胃镜？"


async def test_a_new_question_at_the_suggestions_gets_its_own_answer(wx_plain):
    suggestions = await wx_plain.say(U, "那个服务的事情怎么弄")
    assert "您是不是想问" in suggestions
    reply = await wx_plain.say(U, "洗牙要钱吗")
    assert "免费" in reply and "您是不是想问" not in reply and "我们接着" not in reply


async def test_a_service_word_asked_at_a_step_does_not_switch_flows(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("platinum")
        await wx_plain.say(U, "预约体检")
        reply = await wx_plain.say(U, "洗牙？")
        assert "您正在" not in reply and FOR_WHOM in reply  # still the checkup, asked again
        assert "体检" in reply and "洁牙可由" not in reply


# --- The gaps of issue 14, answered from docs/programme.md's facts ------------------------------------


async def test_will_i_be_notified_says_template_message_and_sms(wx_plain):
    reply = await wx_plain.say(U, "预约成功会通知我吗")
    assert "模板消息" in reply and "短信" in reply  # DOMAIN: confirmed -> template message + SMS


async def test_someone_else_using_my_checkup_is_immediate_family_only(wx_plain):
    reply = await wx_plain.say(U, "我的体检能给朋友用吗")
    assert all(w in reply for w in ("配偶", "父母", "子女", "同意"))
    assert "次数属于投保人" in reply or "计入您" in reply  # the quota is the policyholder's


async def test_how_long_until_the_report_invents_no_number(wx_plain):
    import re

    reply = await wx_plain.say(U, "体检报告多久能出来")
    assert "机构" in reply and "人工" in reply  # the institution gives it; ask staff
    assert not re.search(r"\d+\s*(?:个)?(?:天|工作日|周|小时)", reply)  # the handbook is silent


async def test_a_complaint_is_handed_to_a_person(wx_plain):
    reply = await wx_plain.say(U, "我要投诉你们的专员")
    assert "人工" in reply and "留言" in reply


async def test_asked_whether_it_is_a_person_the_bot_says_it_is_not(wx_plain):
    reply = await wx_plain.say(U, "这个是人工在回复吗")
    assert "助手" in reply and "人工" in reply


async def test_which_hospital_lists_the_city_with_the_kind(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "北京有哪些体检机构")
    assert "北京商业体检中心（商业机构）" in reply and "北京三甲医院（三甲医院）" in reply
    assert "上海洁牙门诊" not in reply and "北京洁牙门诊" not in reply


@pytest.mark.parametrize("asked", ["我的预约呢", "请问我的预约呢？", "我的预约呢?"])
async def test_my_bookings_asked_after_shows_them(wx_plain, world, asked):
    """A menu word asked after (我的预约呢) is shown, not answered by the FAQ's closest entry."""
    world("gold")
    reply = await wx_plain.say(U, asked)
    assert "您还没有预约记录" in reply  # 我的预约 of a customer with none
    assert await no_flow_started(wx_plain)


async def test_a_service_word_asked_after_is_still_a_question(wx_plain, world):
    world("gold")
    reply = await wx_plain.say(U, "洁牙呢")
    assert FOR_WHOM not in reply  # asking is not commanding
    assert await no_flow_started(wx_plain)


@pytest.mark.parametrize("vague", ["什么意思？", "为什么", "啥意思啊"])
async def test_a_question_that_names_nothing_is_asked_back_not_answered(wx_plain, world, vague):
    """什么意思？ names no topic: no FAQ entry's answer (it read as 快升缓降 before), but what
    it is about, outside a flow; at a step, the step again."""
    world("gold")
    reply = await wx_plain.say(U, vague)
    assert "快升缓降" not in reply and "哪一项" in reply
    assert FOR_WHOM in await wx_plain.say(U, "预约洁牙")
    reply = await wx_plain.say(U, vague)
    assert "快升缓降" not in reply and FOR_WHOM in reply  # the step, asked again


async def test_what_a_checkup_costs_is_the_fees_answer_not_the_tier_thresholds(wx_plain, world):
    """体检多少钱 asks what the service costs (DOMAIN: checkups are free within the package),
    not how much premium a tier takes (it read as 升级 before)."""
    world("gold")
    reply = await wx_plain.say(U, "体检多少钱")
    assert "免费" in reply and "1,000,000" not in reply
    assert await no_flow_started(wx_plain)


async def test_whether_the_id_number_is_kept_is_answered_by_the_privacy_notice(wx_plain, world):
    """你们会把我身份证号存起来吗 gets what binding's privacy notice says (what was typed is not
    kept after the check), not 「需要的」 of the identity check (it read as yes before)."""
    world("gold")
    reply = await wx_plain.say(U, "你们会把我身份证号存起来吗")
    assert "不再另行保存" in reply and not reply.startswith("需要的")
    assert (await wx_plain.say(U, "为什么要身份证？")).startswith("需要的")  # the identity check


async def test_how_far_ahead_one_can_book_is_in_the_lead_time_answer(wx_plain, world):
    """最晚能约到哪天？ gets the window as well as the lead time (DOMAIN: a service date at
    most 90 days after the request, at least the 2nd working day after it)."""
    world("gold")
    reply = await wx_plain.say(U, "最晚能约到哪天？")
    assert "90天内" in reply and "2个工作日" in reply

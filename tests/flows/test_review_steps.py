"""An outside reviewer's chat with the booking flow (issue 14, second round): what is typed at
a step is read for what it says, or refused saying why, never dropped or kept at the wrong
step. Through /wechat with a fixed clock: Wednesday 2 December 2026, 10:00 Asia/Shanghai
(docs/programme.md: the earliest bookable date is the 2nd working day after, 12月4日; the
window is 90 days)."""
from __future__ import annotations

import re
from datetime import date

import pytest
import time_machine

from bot.domain.identity import make_id_number
from tests.support.booking import U, bookings, walk, world  # noqa: F401 (fixture)

NOW = "2026-12-02 10:00:00+08:00"
TO_DATES = ("预约洁牙", "本人", "上海", "上海洁牙门诊")  # S1 is open every day
TO_SUMMARY = (*TO_DATES, "12月22日")


# --- 1. A new date at the summary ---------------------------------------------------------------

@pytest.mark.parametrize("typed", ["12月23号", "不对，是23号", "改到12月23日"])
async def test_a_date_typed_at_the_summary_replaces_the_date_and_asks_again(wx_plain, world,
                                                                          services, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, summary = await walk(wx_plain, U, *TO_SUMMARY)
        assert "2026年12月22日" in summary
        reply = await wx_plain.say(U, typed)
        assert "改为12月23日" in reply and "2026年12月23日" in reply, reply
        assert "请核对预约信息" in reply and "确认" in reply
        assert bookings(services) == []  # never confirmed silently
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, 23)


async def test_a_date_the_rules_refuse_at_the_summary_says_why(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_SUMMARY)
        reply = await wx_plain.say(U, "12月3号")  # inside the lead time
        assert "2026年12月4日" in reply and "请核对预约信息" not in reply, reply
        assert "请选择服务日期" in reply
    assert bookings(services) == []


@pytest.mark.parametrize("typed", ["换一天", "改日期", "不是这个日子"])
async def test_another_day_asked_for_at_the_summary_goes_back_to_the_date(wx_plain, world,
                                                                         services, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_SUMMARY)
        reply = await wx_plain.say(U, typed)
        assert "请选择服务日期" in reply and "请核对预约信息" not in reply, reply
        summary = await wx_plain.say(U, "12月24日")
        assert "2026年12月24日" in summary, summary
    assert bookings(services) == []


@pytest.mark.parametrize("typed", ["时间能改吗", "不是这个", "日期可以改吗？"])
async def test_how_to_change_is_said_at_the_summary(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_SUMMARY)
        reply = await wx_plain.say(U, typed)
        assert "答不上来" not in reply and "输入新的日期" in reply and "返回" in reply, reply
        assert "改为" in await wx_plain.say(U, "12月23日")  # the summary still reads a date
    assert bookings(services) == []


# --- 2. Everyday words for the special exams ----------------------------------------------------

@pytest.mark.parametrize("typed,exam", [
    ("做个核磁", "核磁共振检查"), ("核磁", "核磁共振检查"), ("MRI", "核磁共振检查"),
    ("胃镜", "胃肠镜检查"), ("做个肠镜", "胃肠镜检查"), ("做CT", "CT检查"), ("彩超", "B超检查"),
])
async def test_an_everyday_word_for_an_exam_picks_it(wx_plain, world, services, typed, exam):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        await walk(wx_plain, U, "特种检查", "本人")
        reply = await wx_plain.say(U, typed)
        assert "症状" in reply and "没能对上" not in reply, reply
        await walk(wx_plain, U, "胃痛两个月", "北京", "北京三甲医院", "1", "确认")
    (b,) = bookings(services)
    assert b.exam == exam


async def test_a_near_exam_word_is_asked_back(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        await walk(wx_plain, U, "特种检查", "本人")
        reply = await wx_plain.say(U, "核磁检查")
        assert "您是指" in reply and "核磁共振检查" in reply and "症状" not in reply, reply
        assert "症状" in await wx_plain.say(U, "是")


# --- 3. Free-text steps refuse what belongs to another step ------------------------------------

@pytest.mark.parametrize("typed", ["12月22号", "1", "上海"])
async def test_the_symptoms_step_refuses_a_date_a_number_or_a_city(wx_plain, world, typed):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        await walk(wx_plain, U, "特种检查", "本人", "CT检查")
        reply = await wx_plain.say(U, typed)
        assert "请选择就近的城市" not in reply and "症状" in reply, reply
        assert f"「{typed}」" in reply or "序号" in reply, reply  # why it is not taken
        assert "请选择就近的城市" in await wx_plain.say(U, "体检发现肺结节")


@pytest.mark.parametrize("at,typed", [((), "上海"), ((), "12月22号"), (("心内科",), "1"),
                                      (("心内科",), "上海")])
async def test_the_expert_steps_refuse_a_date_a_number_or_a_city(wx_plain, world, at, typed):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        *_, ask = await walk(wx_plain, U, "专家门诊", "本人", *at)
        reply = await wx_plain.say(U, typed)
    question = ask.splitlines()[0]
    assert question in reply and "这一步" in reply, reply  # the reason, and the same question


async def test_a_hospital_preference_that_is_not_a_partner_is_said_back(wx_plain, world,
                                                                         services):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        *_, ask = await walk(wx_plain, U, "专家门诊", "本人", "心内科，最近老是胸口发紧", "瑞金医院",
                             "不指定", "北京")
        assert "瑞金医院" in ask and "不在本服务的合作机构中" in ask, ask
        summary = (await walk(wx_plain, U, "北京三甲医院", "12月22日"))[-1]
    assert "瑞金医院（不在本服务的合作机构中，本次预约的机构是北京三甲医院" in summary, summary


async def test_a_partner_hospital_preference_has_no_remark(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        *_, ask = await walk(wx_plain, U, "专家门诊", "本人", "心内科", "北京三甲医院", "不指定",
                             "北京")
        assert "合作机构" not in ask, ask
        summary = (await walk(wx_plain, U, "北京三甲医院", "12月22日"))[-1]
    assert "医院偏好：北京三甲医院\n" in summary, summary


# --- 4. The relation word's sex against the ID number ------------------------------------------

DAD_FEMALE_ID = "110105195803020028"  # the reviewer's: 17th digit 2, even: female


async def test_dad_with_a_female_id_number_is_asked_back(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        ask = await wx_plain.say(U, "帮我爸约个体检")
        assert "新增一位家人" in ask and "父亲" in ask, ask
        await wx_plain.say(U, "钱大山")
        reply = await wx_plain.say(U, DAD_FEMALE_ID)
        assert "父亲" in reply and "女性" in reply and "请选择套餐" not in reply, reply
        back = await wx_plain.say(U, "返回")  # the question offers 返回 to the relation
        assert "请选择这位家人和您的关系" in back, back
    assert bookings(services) == []


async def test_dad_with_a_male_id_number_goes_on(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        await walk(wx_plain, U, "帮我爸约个体检", "钱大山")
        reply = await wx_plain.say(U, make_id_number("110105", date(1958, 3, 2), 1, "M"))
    assert "请选择套餐" in reply and "男性" in reply and "女性)" not in reply, reply


async def test_adding_a_family_member_says_so(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, ask = await walk(wx_plain, U, "预约洁牙", "添加家人", "子女")
    assert "新增一位家人" in ask and "家庭成员" in ask, ask


# --- 5. A time of day said with the date ------------------------------------------------------

@pytest.mark.parametrize("typed,day,said", [("12月15号下午3点", 15, "下午3点"),
                                            ("12月16日上午", 16, "上午"),
                                            ("12月16号晚一点", 16, "晚一点"),
                                            ("12月15号一点半", 15, "一点半")])
async def test_a_time_of_day_is_kept_for_the_specialist_and_said(wx_plain, world, services,
                                                                 typed, day, said):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES)
        summary = await wx_plain.say(U, typed)
        assert f"2026年12月{day}日" in summary, summary
        assert said in summary and "机构安排" in summary, summary
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, day) and said in (b.visit_note or "")


@pytest.mark.parametrize("typed", ["12月15号快一点", "12月15号有一点急"])
async def test_a_bit_is_not_one_oclock(wx_plain, world, typed):
    """一点 after a word of degree is "a bit": never kept as the wish 一点 (1 o'clock)."""
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES)
        summary = await wx_plain.say(U, typed)
    assert "2026年12月15日" in summary and "希望时间" not in summary, summary


async def test_no_time_of_day_no_wish(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, summary = await walk(wx_plain, U, *TO_SUMMARY)
        assert "希望时间" not in summary
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.visit_note is None


# --- 6. A refusal's example date is one the step takes -----------------------------------------

@pytest.mark.parametrize("typed", ["哈哈哈", "12月"])  # nonsense, ambiguous
async def test_a_refusals_example_date_is_bookable(wx_plain, world, typed):
    with time_machine.travel("2026-12-07 10:00:00+08:00", tick=False):  # Monday: earliest 12月9日
        world("gold")
        *_, ask = await walk(wx_plain, U, *TO_DATES)
        assert "最早可约12月9日" in ask, ask
        reply = await wx_plain.say(U, typed)
        example = re.search(r"「(\d+月\d+日)」", reply.splitlines()[0])[1]
        month, day = map(int, re.findall(r"\d+", example))
        assert (month, day) >= (12, 9), reply
        assert "请核对预约信息" in await wx_plain.say(U, example)


# --- 7. A name at the binding's ID-number step --------------------------------------------------

async def test_a_name_at_the_id_number_step_is_said_to_be_a_name(wx_plain):
    await walk(wx_plain, U, "绑定", "同意", "赵敏")
    reply = await wx_plain.say(U, "赵敏")
    assert "看起来是姓名" in reply and "18位身份证号码" in reply, reply
    assert "无法通过校验" not in reply

"""An outside reviewer's chat with the bot (issue 14): what the customer typed is heard, and
refused choices are explained. Through /wechat with a fixed clock: Wednesday 2 December
2026, 10:00 Asia/Shanghai (docs/programme.md: earliest bookable date the 2nd working day
after, 12月4日; window 90 days)."""
from __future__ import annotations

from datetime import date

import pytest
import time_machine
from sqlalchemy import update
from sqlmodel import Session

from models import Booking, Institution
from tests.support.booking import U, bookings, walk, world  # noqa: F401 (fixture)

NOW = "2026-12-02 10:00:00+08:00"
WIFE = ("spouse", "王芳", date(1982, 3, 4), "F")
HUSBAND = ("spouse", "王强", date(1979, 1, 2), "M")


# --- 1. A package typed in short form that the rules refuse is explained -----------------------

@pytest.mark.parametrize("sex,family,typed,only", [
    ("M", [WIFE], "男性", "男性"), ("M", [WIFE], "男性套餐", "男性"),
    ("F", [HUSBAND], "女性", "女性"), ("F", [HUSBAND], "女性套餐", "女性"),
    ("F", [HUSBAND], "要女性的", "女性"),
])
async def test_the_other_sexs_package_in_short_form_is_explained(wx_plain, world, services, sex,
                                                                 family, typed, only):
    with time_machine.travel(NOW, tick=False):
        world("diamond", sex=sex, family=family)
        await walk(wx_plain, U, "预约体检", "2")  # for the spouse
        reply = await wx_plain.say(U, typed)
    assert f"只适用于{only}" in reply and "没能对上" not in reply, reply
    assert "请选择就近的城市" not in reply
    assert bookings(services) == []


# --- 7. Command forms with 个 start the booking --------------------------------------------------

@pytest.mark.parametrize("typed", ["我要洗个牙", "我想洗个牙", "想去洗个牙", "想洗牙", "约个洗牙"])
async def test_a_command_form_with_ge_starts_the_dental_booking(wx_plain, world, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, typed)
    assert "这次为谁预约" in reply, reply


# --- 3, 4, 15. 取消预约: soonest first, a service word picks one, its own re-ask -------------------

async def _two_bookings(wx_plain, world, services):
    world("platinum")
    await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
    await walk(wx_plain, U, "预约体检", "本人", "北京", "北京商业体检中心", "12月10日", "确认")
    dental, checkup = bookings(services)
    return dental, checkup


async def test_the_cancel_list_is_soonest_first(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        dental, checkup = await _two_bookings(wx_plain, world, services)
        ask = await wx_plain.say(U, "取消预约")
    assert ask.index(checkup.number) < ask.index(dental.number), ask  # 10th before 20th


async def test_a_service_word_picks_the_one_booking_to_cancel(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        dental, checkup = await _two_bookings(wx_plain, world, services)
        await wx_plain.say(U, "取消预约")
        reply = await wx_plain.say(U, "洁牙那个")
        assert dental.number in reply and "没能对上" not in reply, reply
        await wx_plain.say(U, "确认")
    assert [b.status for b in bookings(services)] == ["cancelled", "submitted"]


async def test_a_service_word_naming_two_bookings_asks_which(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("platinum")  # one 洁牙 a year: this year's and next year's
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "2027年1月6日", "确认")
        assert len(bookings(services)) == 2
        await wx_plain.say(U, "取消预约")
        reply = await wx_plain.say(U, "洁牙那个")
    assert "洁牙" in reply and "哪" in reply and "没能对上" not in reply, reply
    assert [b.status for b in bookings(services)] == ["submitted", "submitted"]


async def test_the_cancel_confirmation_re_asks_in_its_own_words(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
        ask = await wx_plain.say(U, "取消预约")
        assert "确定取消" in ask
        reply = await wx_plain.say(U, "12月6日")
        assert "提交预约" not in reply and "取消" in reply, reply
        await wx_plain.say(U, "确认")
    assert [b.status for b in bookings(services)] == ["cancelled"]


# --- 3, 16. The attendance choice: a service word picks one; confirmed ones are left out ---------

async def _two_tomorrow(wx_plain, world, services):
    world("platinum")
    await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月10日", "确认")
    await walk(wx_plain, U, "专家门诊", "本人", "心内科", "不限", "北京", "北京三甲医院",
               "12月10日", "确认")
    with Session(services.engine) as s:
        s.execute(update(Booking).values(status="confirmed", confirmed_date=date(2026, 12, 10),
                                         confirmed_time="09:30"))
        s.commit()
    return bookings(services)


async def test_a_service_word_picks_the_attendance_to_confirm(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        dental, expert = await _two_tomorrow(wx_plain, world, services)
    with time_machine.travel("2026-12-09 18:00:00+08:00", tick=False):
        ask = await wx_plain.say(U, "确认")
        assert dental.number in ask and expert.number in ask, ask
        reply = await wx_plain.say(U, "专家门诊那个")
        assert "没能对上" not in reply and expert.number in reply, reply
        again = await wx_plain.say(U, "确认")
    assert expert.number not in again and dental.number in again, again  # only one left
    attended = {b.number: b.attendance_confirmed_at for b in bookings(services)}
    assert attended[expert.number] is not None and attended[dental.number] is not None


# --- 5. A name step refuses what is not a name -------------------------------------------------

@pytest.mark.parametrize("typed", ["同意", "确认", "是", "好的", "123456", "😀😀", "。。。"])
async def test_the_binding_name_step_refuses_what_is_not_a_name(wx_plain, services, typed):
    await walk(wx_plain, U, "绑定", "同意")
    reply = await wx_plain.say(U, typed)
    assert "姓名" in reply and "身份证号" not in reply, reply  # asked again, not taken
    # the step goes on: a real name is taken next
    assert "身份证号" in await wx_plain.say(U, "李四")


@pytest.mark.parametrize("typed", ["同意", "好的", "8888"])
async def test_the_family_name_step_refuses_what_is_not_a_name(wx_plain, world, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "添加家人", "子女")
        reply = await wx_plain.say(U, typed)
        assert "身份证号" not in reply and "姓名" in reply, reply
        assert "身份证号" in await wx_plain.say(U, "李小明")


# --- 6. Two dates: ask which; an ordinal picks the numbered option ------------------------------

TO_DATES = ("预约洁牙", "本人", "上海", "上海洁牙门诊")  # open every day: 12月4日…12月8日 offered


@pytest.mark.parametrize("typed", ["12月9日或10日", "周三还是周四", "9号或者10号"])
async def test_two_dates_typed_are_asked_about(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES)
        reply = await wx_plain.say(U, typed)
        assert "哪一天" in reply and "请核对预约信息" not in reply, reply
        summary = await wx_plain.say(U, "12月10日")
        assert "2026年12月10日" in summary, summary
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, 10)


@pytest.mark.parametrize("typed", ["第2个", "第二个"])
async def test_an_ordinal_picks_the_numbered_date(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, ask = await walk(wx_plain, U, *TO_DATES)
        assert "2. 12月5日" in ask
        summary = await wx_plain.say(U, typed)
        assert "2026年12月5日" in summary, summary


async def test_the_date_prompts_example_is_a_date_it_takes_once_the_year_is_spent(wx_plain, world,
                                                                                   services):
    import re as _re

    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES, "1", "确认")  # 2026's 洁牙 spent
        *_, ask = await walk(wx_plain, U, *TO_DATES)
        assert "1. 1月1日" in ask
        example = _re.search(r"如「([^」]+)」", ask)[1]
        assert not example.startswith("12月") and "下周" not in example, ask
        summary = await wx_plain.say(U, example)
        assert "请核对预约信息" in summary, summary


# --- 10, 12. Questions inside a flow are answered or admitted, then the step goes on --------------

@pytest.mark.parametrize("reach,typed,again", [
    (("预约洁牙", "本人", "北京"), "这家周末开门吗", "请选择北京的服务机构"),
    (("预约洁牙", "本人"), "哪天人少？", "请选择就近的城市"),
    (("预约洁牙", "本人"), "几点开门", "请选择就近的城市"),
    (TO_DATES, "哪天人少？", "请选择服务日期"),
])
async def test_a_question_at_a_choice_step_is_admitted_and_the_step_asked_again(
        wx_plain, world, reach, typed, again):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *reach)
        reply = await wx_plain.say(U, typed)
    assert "没能对上" not in reply and "没能看懂" not in reply, reply
    assert again in reply, reply
    assert "人工" in reply or "95" in reply, reply  # the hand-over or the hotline offered


async def test_a_question_at_the_consent_step_is_admitted(wx_plain):
    await wx_plain.say(U, "绑定")
    reply = await wx_plain.say(U, "收集这些干嘛用？")
    assert "没能对上" not in reply and "同意" in reply, reply
    assert "姓名" in await wx_plain.say(U, "同意")


async def said_at_the_city_step(wx, world, typed: str) -> str:
    """The reply to `typed` at a gold customer's dental booking's city step; the flow is
    then checked to go on (北京 is taken)."""
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx, U, "预约洁牙", "本人")
        reply = await wx.say(U, typed)
        assert "请选择北京的服务机构" in await wx.say(U, "北京")
    return reply


async def test_a_city_not_served_is_said_with_the_cities_there_are(wx_plain, world):
    reply = await said_at_the_city_step(wx_plain, world, "有深圳的吗")
    assert "暂时没有深圳" in reply and "北京" in reply and "上海" in reply, reply
    assert "没能对上" not in reply


@pytest.mark.parametrize("typed", ["😀😀😀", "asdf", "不知道", "没有", "。。。", "检查费多少钱？"])
async def test_the_symptoms_step_wants_a_description(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        await walk(wx_plain, U, "特种检查", "本人", "CT检查")
        reply = await wx_plain.say(U, typed)
        assert "请选择就近的城市" not in reply and "症状" in reply, reply
        assert "请选择就近的城市" in await wx_plain.say(U, "体检发现肺结节，医生建议复查CT")


# --- 11. A question about 120 is not a call for help; the advice at a choice step re-asks --------

@pytest.mark.parametrize("typed", ["急救电话是120吗", "客服电话是不是120", "急救电话是多少"])
async def test_a_question_about_120_is_not_an_emergency(wx_plain, typed):
    reply = await wx_plain.say(U, typed)
    assert "很紧急" not in reply, reply


async def test_a_call_for_help_still_gets_the_advice(wx_plain):
    assert "120" in await wx_plain.say(U, "快打急救电话")


async def test_the_emergency_advice_at_the_city_step_asks_the_step_again(wx_plain, world):
    reply = await said_at_the_city_step(wx_plain, world, "救命，胸口疼得厉害")
    assert "120" in reply and "请选择就近的城市" in reply, reply


# --- 13. 返回 after a questioned ID number goes where the question says --------------------------

async def test_back_after_a_questioned_sex_goes_to_the_relation(wx_plain, world):
    from bot.domain.identity import make_id_number

    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, asked = await walk(wx_plain, U, "预约洁牙", "添加家人", "妈", "李家人",
                               make_id_number("310101", date(1950, 1, 1), 7, "M"))
        assert "男性" in asked and "返回" in asked, asked
        back = await wx_plain.say(U, "返回")
    assert "请选择这位家人和您的关系" in back and "姓名" not in back, back


# --- 14. One spouse --------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [("添加家人", "配偶"), ("老婆",), ("添加家人", "老婆")])
async def test_a_second_spouse_is_refused_with_the_reason(wx_plain, world, services, steps):
    with time_machine.travel(NOW, tick=False):
        world("gold", sex="F", family=[HUSBAND])
        await wx_plain.say(U, "预约洁牙")
        *_, reply = await walk(wx_plain, U, *steps)
        assert "一位配偶" in reply and "请输入家人的姓名" not in reply, reply
        assert "配偶 王*" in reply  # the list again, the husband on file in it
        assert "请选择就近的城市" in await wx_plain.say(U, "配偶 王*")


# --- 2. An institution the rules refuse, typed by its short name, is explained ---------------------

async def test_a_refused_venue_by_its_short_name_is_explained(wx_plain, world, services):
    """DOMAIN: 铂金 checkups at commercial centres only."""
    with Session(services.engine) as s:
        for code, name, kind in (("H2", "复旦大学附属华山医院", "tertiary_hospital"),
                                 ("C2", "上海商业体检中心", "commercial")):
            s.add(Institution(code=code, name=name, city="上海", address="上海某路2号", kind=kind,
                              services="checkup", phone="021-12345678", closed_weekdays="",
                              closed_dates=""))
        s.commit()
    with time_machine.travel(NOW, tick=False):
        world("platinum")
        *_, ask = await walk(wx_plain, U, "预约体检", "本人", "上海")
        assert "上海商业体检中心" in ask and "华山" not in ask, ask
        for typed in ("华山医院", "复旦大学附属华山医院"):
            reply = await wx_plain.say(U, typed)
            assert "商业体检机构" in reply and "没能对上" not in reply, reply
            assert "请选择服务日期" not in reply


# --- Smaller: the beneficiary step's number; 周六 on a Saturday ------------------------------------

async def test_the_beneficiary_step_says_how_many_uses_a_year_are_shared(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        ask = await wx_plain.say(U, "预约洁牙")
    assert "每年共用1次" in ask, ask  # DOMAIN / rules.toml: 洁牙 once a year


async def test_a_bare_weekday_that_is_today_says_why_and_offers_the_next_one(wx_plain, world,
                                                                             services):
    with time_machine.travel("2026-12-05 10:00:00+08:00", tick=False):  # a Saturday
        world("gold")
        await walk(wx_plain, U, *TO_DATES)
        reply = await wx_plain.say(U, "周六")
        assert "今天就是周六" in reply and "12月12日" in reply, reply
        assert "请核对预约信息" not in reply
        summary = await wx_plain.say(U, "下周六")
        assert "2026年12月12日" in summary, summary

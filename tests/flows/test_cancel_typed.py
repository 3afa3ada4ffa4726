"""An outside reviewer's chat with the bot (issue 14, "hear what the customer typed"): what a
customer says about cancelling, changing a date or a date alone. Through /wechat with a fixed
clock: Wednesday 2 December 2026, 10:00 Asia/Shanghai (docs/programme.md: the earliest
bookable date is the 2nd working day after, 12月4日; the window is 90 days; a submitted
booking staff have not confirmed cancels free at any time).

DOMAIN, "What a message means": a cancel word (取消, 不想…了, 不去了, 不要了, 退掉, 撤销) with
a service name is a cancellation, never a booking of that service; a command form starts
the flow, a question gets the FAQ's answer; a typed answer at a choice step is read by the
step's parser before it is refused. There is no change of date: a booking is cancelled and
booked again (DOMAIN, "Booking rules")."""
from __future__ import annotations

from datetime import date

import pytest
import time_machine

from tests.support.booking import U, U2, bookings, walk, world  # noqa: F401 (fixture)

NOW = "2026-12-02 10:00:00+08:00"
DAD = ("parent", "李大山", date(1950, 1, 1), "M")
# A diamond customer's bookings (all submitted): the father's 健康体检 on 12月18日, the
# father's 洁牙 on 12月20日 (this year's use) and the customer's own 洁牙 on 2027年1月3日
# (next year's).
CHECKUP_DAD = ("预约体检", "父母", "1", "北京", "北京商业体检中心", "12月18日", "确认")
DENTAL_DAD = ("预约洁牙", "父母", "上海", "上海洁牙门诊", "12月20日", "确认")
DENTAL_ME = ("预约洁牙", "本人", "上海", "上海洁牙门诊", "2027年1月3日", "确认")


async def _booked(wx, world, services, *walks):
    world("diamond", family=[DAD])
    for steps in walks:
        *_, done = await walk(wx, U, *steps)
        assert "预约已受理" in done, done
    return {b.preferred_date: b for b in bookings(services)}


async def _dad_checkup_and_my_dental(wx, world, services):
    """Two bookings: the father's 体检 on 12月18日 and the customer's 洁牙 on 2027年1月3日."""
    got = await _booked(wx, world, services, CHECKUP_DAD, DENTAL_ME)
    return got[date(2026, 12, 18)], got[date(2027, 1, 3)]


def _statuses(services) -> dict:
    return {b.number: b.status for b in bookings(services)}


# --- 1. A cancel word with a service name cancels that booking, never books it ------------------

@pytest.mark.parametrize("typed", ["取消体检", "取消我的体检", "取消体检预约", "体检取消", "把体检取消了",
                                   "取消12月18号的体检", "撤销体检", "体检不去了", "我不想体检了"])
async def test_a_cancel_word_with_the_service_cancels_that_booking(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        checkup, dental = await _dad_checkup_and_my_dental(wx_plain, world, services)
        reply = await wx_plain.say(U, typed)
        assert "开始服务预约" not in reply and "这次为谁预约" not in reply, reply
        assert checkup.number in reply and dental.number not in reply, reply
        assert "确定取消" in reply, reply  # straight to the one booking's terms
        done = await wx_plain.say(U, "确认")
    assert "已为您取消预约" in done, done
    assert _statuses(services) == {checkup.number: "cancelled", dental.number: "submitted"}


@pytest.mark.parametrize("typed", ["我不想洗牙了", "洗牙不去了", "退掉洁牙", "洗牙不要了"])
async def test_a_gold_customer_not_wanting_the_dental_cancels_it(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
        (booked,) = bookings(services)
        reply = await wx_plain.say(U, typed)
    assert "这次为谁预约" not in reply and booked.number in reply and "确定取消" in reply, reply
    assert len(bookings(services)) == 1


async def test_with_nothing_booked_a_cancel_word_books_nothing(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, "我不想洗牙了")
        assert "没有可以取消的预约" in reply and "这次为谁预约" not in reply, reply
        assert "当前没有正在办理的事项" in await wx_plain.say(U, "退出")
    assert bookings(services) == []


async def test_with_the_years_uses_spent_a_cancel_word_lists_that_services_bookings(
        wx_plain, world, services):
    """Both years' 体检 are booked (so a new one would be refused): 取消体检 lists those two."""
    with time_machine.travel(NOW, tick=False):
        got = await _booked(wx_plain, world, services, CHECKUP_DAD, DENTAL_ME,
                            ("预约体检", "本人", "1", "北京", "北京商业体检中心", "2027年1月5日", "确认"))
        reply = await wx_plain.say(U, "取消体检")
    assert "用完" not in reply and "这次为谁预约" not in reply, reply
    assert got[date(2026, 12, 18)].number in reply and got[date(2027, 1, 5)].number in reply
    assert got[date(2027, 1, 3)].number not in reply, reply  # the 洁牙 is not listed
    assert "健康体检预约有2个" in reply, reply


@pytest.mark.parametrize("typed", ["不想约体检", "不用预约", "我不想预约洁牙", "先不约了", "不用预约了"])
async def test_a_booking_declined_starts_nothing(wx_plain, world, services, typed):
    with time_machine.travel(NOW, tick=False):
        world("diamond", family=[DAD])
        reply = await wx_plain.say(U, typed)
        assert "这次为谁预约" not in reply and "我们开始" not in reply, reply
        assert "先不预约" in reply, reply
        assert "当前没有正在办理的事项" in await wx_plain.say(U, "退出")


async def test_a_booking_declined_inside_a_sentence_books_nothing(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, "不用预约直接去洗牙")
        assert "这次为谁预约" not in reply and "服务预约" not in reply, reply
        assert "服务预约" not in await wx_plain.say(U, "退出")  # no booking was left open


@pytest.mark.parametrize("typed", ["取消绑定", "帮我取消绑定"])
async def test_cancelling_the_binding_is_still_unbinding(wx_plain, world, typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, typed)
    assert "确定要解除" in reply and "取消的预约" not in reply, reply


async def test_a_question_about_cancelling_a_service_is_answered_without_a_booking_offer(
        wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        reply = await wx_plain.say(U, "取消体检会扣次数吗")
        assert "免费" in reply and "需要现在预约吗" not in reply, reply
        assert "当前没有正在办理的事项" in await wx_plain.say(U, "退出")


# --- 2. The step listing the bookings reads a date, a person, a service or a year -------------

@pytest.mark.parametrize("typed,which", [
    ("我爸那个", "checkup"), ("父母", "checkup"), ("爸", "checkup"), ("12月18号的", "checkup"),
    ("12月18日那个", "checkup"), ("今年的", "checkup"), ("体检那个", "checkup"),
    ("1月3号的", "dental"), ("1月3日那个", "dental"), ("明年的", "dental"), ("本人", "dental"),
    ("我自己的", "dental"), ("2027年的", "dental"), ("洁牙", "dental"), ("第二个", "dental"),
])
async def test_what_is_said_at_the_cancel_list_picks_the_booking(wx_plain, world, services, typed,
                                                                 which):
    with time_machine.travel(NOW, tick=False):
        checkup, dental = await _dad_checkup_and_my_dental(wx_plain, world, services)
        ask = await wx_plain.say(U, "取消预约")
        assert "请选择要取消的预约" in ask
        reply = await wx_plain.say(U, typed)
        chosen, other = (checkup, dental) if which == "checkup" else (dental, checkup)
        assert "没能对上" not in reply, reply
        assert chosen.number in reply and other.number not in reply and "确定取消" in reply, reply
        await wx_plain.say(U, "确认")
    assert _statuses(services) == {chosen.number: "cancelled", other.number: "submitted"}


async def test_what_fits_several_lists_only_those_and_a_number_picks_among_them(
        wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        got = await _booked(wx_plain, world, services, CHECKUP_DAD, DENTAL_DAD, DENTAL_ME)
        checkup, dad_dental, my_dental = (got[date(2026, 12, 18)], got[date(2026, 12, 20)],
                                          got[date(2027, 1, 3)])
        await wx_plain.say(U, "取消预约")
        reply = await wx_plain.say(U, "我爸的")
        assert "父亲的预约有2个" in reply and "没能对上" not in reply, reply
        assert checkup.number in reply and dad_dental.number in reply, reply
        assert my_dental.number not in reply, reply  # only the father's are listed
        confirm = await wx_plain.say(U, "2")  # the second of the two listed: the 洁牙 on 12月20日
        assert dad_dental.number in confirm and "确定取消" in confirm, confirm
        await wx_plain.say(U, "确认")
    assert _statuses(services) == {checkup.number: "submitted", dad_dental.number: "cancelled",
                                   my_dental.number: "submitted"}


@pytest.mark.parametrize("typed,said", [("12月25号的", "12月25日的预约"), ("妈妈的", "母亲的预约"),
                                        ("明年的体检", "2027年的健康体检预约")])
async def test_what_fits_no_booking_is_said_and_the_list_shown_again(wx_plain, world, services,
                                                                     typed, said):
    with time_machine.travel(NOW, tick=False):
        checkup, dental = await _dad_checkup_and_my_dental(wx_plain, world, services)
        await wx_plain.say(U, "取消预约")
        reply = await wx_plain.say(U, typed)
        assert f"没有找到{said}" in reply or f"没有找到您{said}" in reply, reply
        assert checkup.number in reply and dental.number in reply, reply  # the list again
        assert "确定取消" in await wx_plain.say(U, "1")
    assert set(_statuses(services).values()) == {"submitted"}


# --- 2. Outside a flow: a command form starts the cancellation, filtered by what was said -----

@pytest.mark.parametrize("typed,which", [("取消1月3号的预约", "dental"), ("我爸的体检不去了", "checkup"),
                                         ("我爸的预约不去了", "checkup"), ("取消明年的预约", "dental")])
async def test_a_cancel_command_naming_one_booking_goes_to_its_terms(wx_plain, world, services,
                                                                     typed, which):
    with time_machine.travel(NOW, tick=False):
        checkup, dental = await _dad_checkup_and_my_dental(wx_plain, world, services)
        reply = await wx_plain.say(U, typed)
    chosen, other = (checkup, dental) if which == "checkup" else (dental, checkup)
    assert "可以在服务号回复" not in reply, reply  # not the FAQ's answer
    assert chosen.number in reply and other.number not in reply and "确定取消" in reply, reply


async def test_help_me_cancel_starts_the_cancellation(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        checkup, dental = await _dad_checkup_and_my_dental(wx_plain, world, services)
        reply = await wx_plain.say(U, "帮我取消")
    assert "请选择要取消的预约" in reply and "可以在服务号回复" not in reply, reply
    assert checkup.number in reply and dental.number in reply


async def test_a_cancel_command_fitting_several_lists_only_those(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        got = await _booked(wx_plain, world, services, CHECKUP_DAD, DENTAL_DAD, DENTAL_ME)
        reply = await wx_plain.say(U, "我爸的预约不去了")
    assert "您父亲的预约有2个" in reply, reply
    assert got[date(2026, 12, 18)].number in reply and got[date(2026, 12, 20)].number in reply
    assert got[date(2027, 1, 3)].number not in reply, reply


async def test_a_cancel_command_fitting_none_says_so_and_lists_them_all(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        checkup, dental = await _dad_checkup_and_my_dental(wx_plain, world, services)
        reply = await wx_plain.say(U, "取消12月25号的预约")
    assert "没有找到12月25日的预约" in reply, reply
    assert checkup.number in reply and dental.number in reply and "确定取消" not in reply, reply


# --- 3. A change of date is a cancellation and a new booking, said so -----------------------------

@pytest.mark.parametrize("typed", ["改期", "我想改个日子", "帮我改期", "洗牙往后推一周"])
async def test_a_reschedule_command_says_how_and_starts_the_cancellation(wx_plain, world, services,
                                                                         typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
        (booked,) = bookings(services)
        reply = await wx_plain.say(U, typed)
        assert "改期需要先取消原预约，再重新预约" in reply, reply
        assert "没理解" not in reply and booked.number in reply and "确定取消" in reply, reply
        done = await wx_plain.say(U, "确认")
    assert "已为您取消预约" in done and "回复「预约洁牙」" in done, done  # how to book again
    assert _statuses(services) == {booked.number: "cancelled"}


async def test_a_reschedule_command_with_nothing_booked_says_so(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, "我想改个日子")
    assert "改期需要先取消原预约" in reply and "没有可以取消的预约" in reply, reply


@pytest.mark.parametrize("typed", ["能改到下周吗", "改期怎么办", "怎么改预约日期"])
async def test_a_reschedule_question_is_answered_with_how_and_the_offer(wx_plain, world, services,
                                                                       typed):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
        reply = await wx_plain.say(U, typed)
        assert "改期需要先取消原预约，再重新预约" in reply and "「取消预约」" in reply, reply
        assert "当前没有正在办理的事项" in await wx_plain.say(U, "退出")  # nothing started
    assert set(_statuses(services).values()) == {"submitted"}


# --- 4. A date alone outside any flow is asked about ---------------------------------------------

async def test_a_date_alone_after_a_kept_booking_is_asked_about(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")  # next year's 洁牙 booked: this year's use is still there for 12月18日
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "2027年1月6日", "确认")
        await wx_plain.say(U, "取消预约")
        assert "预约保留不变" in await wx_plain.say(U, "否")
        reply = await wx_plain.say(U, "12月18日")
        assert "您是想预约12月18日" in reply and "查看这天的预约" in reply, reply
        assert "快升缓降" not in reply and "降级" not in reply, reply  # not the tiers' FAQ
        assert "预约洁牙 12月18日" in reply and "我的预约" in reply, reply
        assert "预约体检" not in reply, reply  # a gold tier books 洁牙 only
        # The line taken: the booking starts with that date kept.
        *_, summary = await walk(wx_plain, U, "预约洁牙 12月18日", "本人", "上海", "上海洁牙门诊")
        assert "2026年12月18日" in summary and "请核对预约信息" in summary, summary
        mine = await wx_plain.say(U, "我的预约")  # the other line (the booking abandoned)
    assert bookings(services)[0].number in mine, mine


@pytest.mark.parametrize("typed", ["12月18号", "12月18日呢", "下周三", "1月3号"])
async def test_a_date_alone_in_other_words_is_asked_about(wx_plain, world, typed):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        reply = await wx_plain.say(U, typed)
    assert "您是想预约" in reply and "查看这天的预约" in reply and "我的预约" in reply, reply
    assert "预约体检" in reply and "特种检查" in reply, reply  # what a diamond tier books


async def test_a_day_gone_by_offers_only_the_bookings(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, "11月30日")
    assert "已经过去了" in reply and "我的预约" in reply and "预约洁牙" not in reply, reply


async def test_a_date_alone_from_someone_unbound_says_to_bind_first(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        reply = await wx_plain.say(U2, "12月18日")
    assert "您是想预约12月18日" in reply and "绑定" in reply, reply


async def test_a_date_inside_small_talk_is_not_asked_about(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        reply = await wx_plain.say(U, "明天见")
    assert "您是想预约" not in reply, reply


# --- The universal commands: 不办了 leaves a flow (DOMAIN, "Universal commands") ------------------

async def test_bu_ban_le_leaves_the_flow(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人")
        reply = await wx_plain.say(U, "不办了")
    assert "已为您结束服务预约" in reply, reply

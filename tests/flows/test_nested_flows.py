"""A nested flow returns to its parent (python-telegram-bot's map_to_parent), through
/wechat: a customer who is not bound asks for a personal service (预约洁牙, 我的等级); the
bot leads them into binding first (the keys of `menus.PERSONAL` are served only to a bound
customer) and, once binding succeeds, serves what they asked for instead of leaving them at
the menu. 退出 inside binding ends it and says the service was not served either."""
from __future__ import annotations

import time

import pytest
import time_machine
from sqlmodel import Session

from bot.infra.texts import render
from models import Institution
from tests.support import factories

U = "oNestUser00000000000000001"
WED = "2026-11-25 10:00:00+08:00"  # a Wednesday: dental bookable from Friday


@pytest.fixture
def holder(services):
    """A gold customer on file (gold tiers book dental), not yet bound to any WeChat user."""
    with Session(services.engine, expire_on_commit=False) as s:
        s.add(Institution(code="D1", name="北京洁牙门诊", city="北京", address="北京某路1号",
                          kind="commercial", services="dental", phone="010-12345678",
                          closed_weekdays="", closed_dates=""))
        c = factories.customer(s, name="王小明", phone="13912345678", tier="gold")
        s.commit()
        return c


def last_code(services, seen: int) -> str:
    """The SMS code sent after `seen` codes (sent once the message has committed)."""
    for _ in range(300):
        if len(services.sms.sent) > seen:
            break
        time.sleep(0.01)
    text = services.sms.sent[-1][1]
    return "".join(ch for ch in text if ch.isdigit())[:6]


async def bind_through(wx, services, holder) -> str:
    """Answer binding's questions (the privacy notice, name, ID number, phone, the code);
    returns the reply to the code."""
    assert render("binding/ask_name") in await wx.say(U, "同意")
    assert await wx.say(U, "王小明") == render("binding/ask_id_number")
    assert await wx.say(U, holder.id_number) == render("binding/ask_phone")
    seen = len(services.sms.sent)
    assert "139****5678" in await wx.say(U, "13912345678")
    return await wx.say(U, last_code(services, seen))


async def test_binding_asked_for_by_a_booking_goes_on_to_the_booking(wx, services, holder):
    with time_machine.travel(WED, tick=True):
        first = await wx.say(U, "预约洁牙")
        assert first.startswith(render("binding/needed"))
        done = await bind_through(wx, services, holder)
        assert "绑定成功" in done
        # What a bound customer is asked on 预约洁牙, asked at once after the binding.
        assert await wx.say(U, "取消") == render("flow/exit", title="服务预约")
        asked = await wx.say(U, "预约洁牙")
        assert asked.startswith(render("flow/intro", title="服务预约"))
        assert done.endswith("\n\n" + asked)


async def test_the_resumed_booking_takes_the_next_answer(wx_plain, services, holder):
    with time_machine.travel(WED, tick=True):
        await wx_plain.say(U, "预约洁牙")
        done = await bind_through(wx_plain, services, holder)
        after_self = await wx_plain.say(U, "本人")  # the beneficiary step of the booking
    assert render("flow/intro", title="服务预约") in done
    assert "北京" in after_self  # the city step: the one city giving dental


async def test_binding_asked_for_by_my_tier_shows_the_tier(wx_plain, services, holder):
    await wx_plain.say(U, "我的等级")
    done = await bind_through(wx_plain, services, holder)
    assert "绑定成功" in done
    assert done.endswith("\n\n" + await wx_plain.say(U, "我的等级"))


async def test_binding_asked_for_directly_ends_at_the_menu(wx_plain, services, holder):
    await wx_plain.say(U, "绑定")
    done = await bind_through(wx_plain, services, holder)
    assert "绑定成功" in done and "服务预约" not in done


async def test_exit_inside_the_nested_binding_says_the_booking_was_not_made(wx_plain, holder):
    await wx_plain.say(U, "预约洁牙")
    await wx_plain.say(U, "同意")
    reply = await wx_plain.say(U, "取消")
    assert reply == render("flow/exit_nested", title="身份绑定", label="预约洁牙")
    assert "身份绑定" in reply and "预约洁牙" in reply
    assert await wx_plain.say(U, "取消") == render("nothing_to_exit")  # back at the menu
    # The next binding, asked for directly, goes to no booking.
    await wx_plain.say(U, "绑定")
    assert await wx_plain.say(U, "退出") == render("flow/exit", title="身份绑定")


async def test_back_inside_the_nested_binding_walks_its_steps(wx_plain, holder):
    await wx_plain.say(U, "预约洁牙")
    await wx_plain.say(U, "同意")
    await wx_plain.say(U, "王小明")
    assert await wx_plain.say(U, "返回") == render("flow/back", prompt=render("binding/ask_name"))
    assert await wx_plain.say(U, "王小明") == render("binding/ask_id_number")

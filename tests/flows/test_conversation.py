"""The conversation engine through /wechat: steps, 返回, 退出, timeouts, invalid input,
paging and concurrent messages of one user."""
from __future__ import annotations

import asyncio

import pytest

import time_machine

from bot.wechat.simulator import text_xml
from bot.infra.texts import render
from tests.conftest import WeChat
from tests.support.survey import LONG_TEXT

pytestmark = pytest.mark.survey

U = "oFlowUser000000000000000001"
INTRO = render("flow/intro", title="测试问卷")
ASK_NAME, ASK_N, ASK_EXTRA = render("no_more"), render("scan"), render("menu_outdated")


async def test_flow_runs_step_by_step(wx):
    assert await wx.say(U, "预约洁牙") == f"{INTRO}\n{ASK_NAME}"
    assert await wx.say(U, "小王") == ASK_N
    assert await wx.say(U, "7") == ASK_EXTRA  # n > 5 asks the conditional step
    assert await wx.say(U, "多说两句") == "DONE name=小王 n=7 extra=多说两句"
    # the flow is over: the same words are now ordinary text
    assert "没有完全理解" in await wx.say(U, "7")


async def test_conditional_step_is_skipped(wx_plain):
    await wx_plain.say(U, "预约洁牙")
    await wx_plain.say(U, "小王")
    assert await wx_plain.say(U, "3") == "DONE name=小王 n=3 extra=None"


async def test_invalid_input_reprompts_with_the_reason(wx_plain):
    await wx_plain.say(U, "预约洁牙")
    await wx_plain.say(U, "小王")
    reply = await wx_plain.say(U, "十二")
    assert reply == render("flow/invalid", reason=render("nothing_to_exit"), prompt=ASK_N)
    assert await wx_plain.say(U, "2") == "DONE name=小王 n=2 extra=None"


async def test_back_goes_one_step_and_forgets_it(wx_plain):
    await wx_plain.say(U, "预约洁牙")
    await wx_plain.say(U, "小王")
    await wx_plain.say(U, "8")
    assert await wx_plain.say(U, "返回") == render("flow/back", prompt=ASK_N)
    assert await wx_plain.say(U, "1") == "DONE name=小王 n=1 extra=None"


async def test_back_on_the_first_step_stays(wx_plain):
    await wx_plain.say(U, "预约洁牙")
    assert await wx_plain.say(U, " 返 回 ") == render("flow/first_step", prompt=ASK_NAME)
    assert await wx_plain.say(U, "阿明") == ASK_N


async def test_exit_and_cancel_leave_the_flow(wx_plain):
    for word in ("退出", "取消", "ＱＵＩＴ"):
        await wx_plain.say(U, "预约洁牙")
        assert await wx_plain.say(U, word) == render("flow/exit", title="测试问卷")
        assert await wx_plain.say(U, "退出") == render("nothing_to_exit")


async def test_help_inside_a_flow_keeps_it(wx_plain):
    await wx_plain.say(U, "预约洁牙")
    reply = await wx_plain.say(U, "帮助")
    assert reply.startswith("我可以帮您办理这些事") and "测试问卷" in reply
    assert await wx_plain.say(U, "小王") == ASK_N


async def test_menu_click_abandons_the_flow(wx_plain):
    await wx_plain.say(U, "预约洁牙")
    reply = await wx_plain.click(U, "FAQ")
    assert reply.startswith(render("flow/abandoned", title="测试问卷"))
    assert "增值服务的有效期是多久？" in reply  # the FAQ's first question (the handbook's Q&A)
    assert "没有完全理解" in await wx_plain.say(U, "小王")


async def test_half_finished_flow_times_out(http):
    wx = WeChat(http, "plain")
    with time_machine.travel("2026-11-25 10:00:00+08:00", tick=True) as clock:
        await wx.say(U, "预约洁牙")
        await wx.say(U, "小王")
        clock.shift(14 * 60)  # 14 minutes idle: still there
        assert await wx.say(U, "返回") == render("flow/back", prompt=ASK_NAME)
        clock.shift(16 * 60)
        reply = await wx.say(U, "阿明")
    expired = render("flow/expired", minutes=15)
    assert reply.startswith(expired)  # told once, then the message is read afresh
    assert "没有完全理解" in reply


async def test_concurrent_messages_of_one_user_do_not_corrupt_the_state(wx):
    await wx.say(U, "预约洁牙")
    # Two different answers arrive at the same moment: exactly one is taken as the name
    # and the other as the number step's input.
    replies = await asyncio.gather(wx.say(U, "甲"), wx.say(U, "乙"))
    assert ASK_N in replies
    other = [r for r in replies if r != ASK_N][0]
    assert other == render("flow/invalid", reason=render("nothing_to_exit"), prompt=ASK_N)
    assert (await wx.say(U, "4")).startswith("DONE name=")


async def test_long_reply_is_paged_with_more(wx):
    footer = render("more_footer")
    pages = [await wx.say(U, "特种检查")]
    while pages[-1].endswith(footer):
        pages.append(await wx.say(U, "更多"))
    assert len(pages) > 2
    assert all(len(p.encode()) <= 2048 for p in pages)
    body = [p.removesuffix(footer).rstrip("\n") for p in pages]
    assert "\n".join(body) == LONG_TEXT
    assert await wx.say(U, "更多") == render("no_more")


async def test_more_without_pages(wx_plain):
    assert await wx_plain.say(U, "更多") == render("no_more")


async def test_universal_words_are_tolerant(wx_plain):
    assert (await wx_plain.say(U, "帮 助！")).startswith("我可以帮您办理这些事")
    assert (await wx_plain.say(U, "ＨＥＬＰ")).startswith("我可以帮您办理这些事")
    assert await wx_plain.say(U, "我得等级") != await wx_plain.say(U, "随便聊聊")


async def test_human_transfer_in_and_out_of_hours(wx_plain):
    with time_machine.travel("2026-11-25 10:00:00+08:00", tick=True):
        reply = await wx_plain.deliver(text_xml(U, "转人工"), U)
        assert reply["MsgType"] == "transfer_customer_service"
    with time_machine.travel("2026-11-25 23:30:00+08:00", tick=True):
        reply = await wx_plain.deliver(text_xml(U, "人工"), U)
        assert reply["MsgType"] == "text" and "95359" in reply["Content"]


async def test_a_failing_handler_loses_only_its_own_message(wx):
    users = [f"oBatch{i:020d}" for i in range(8)]
    # Messages arriving together share one commit on SQLite: one failure must not undo
    # the others, and must leave its own user's state untouched.
    replies = await asyncio.gather(*(wx.say(u, "取消预约" if i == 3 else "预约洁牙")
                                     for i, u in enumerate(users)))
    assert replies[3] == render("error")
    assert all(r == f"{INTRO}\n{ASK_NAME}" for i, r in enumerate(replies) if i != 3)
    for u in users[:3] + users[4:]:
        assert await wx.say(u, "小王") == ASK_N  # their flows were saved
    assert "没有完全理解" in await wx.say(users[3], "5")  # no flow was left behind

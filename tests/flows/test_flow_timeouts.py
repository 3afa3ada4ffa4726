"""Per-flow timeouts and fallbacks (declared on the Flow, as python-telegram-bot's
ConversationHandler declares `conversation_timeout` and `fallbacks`), through /wechat with a
controlled clock.

A flow waits for an answer as long as the deployment says (FLOW_TIMEOUT_MINUTES, 15 by
default) unless it declares a shorter `conversation_timeout`; a message after that is told
the flow ended and is read afresh. 退出/取消 and 返回 do what the flow declares, by default
leave it and go back one step."""
from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from bot.app import create_app
from bot.conversation import Flow, Reply, Router, Step
from bot.infra.texts import render
from tests.conftest import WeChat
from tests.support.survey import survey_router

pytestmark = pytest.mark.survey

U = "oTimeUser000000000000000001"
ASK_NAME, ASK_N = render("no_more"), render("scan")  # the test flows' prompts (tests/flows.py)
START = "2026-11-25 10:00:00+08:00"
SLACK = 5  # seconds either side of the edge (the clock ticks while a message is handled)


@pytest.mark.parametrize("idle, kept", [(15 * 60 - SLACK, True), (15 * 60 + SLACK, False)])
async def test_the_default_timeout_is_the_deployments(http, services, idle, kept):
    assert services.settings.flow_timeout_minutes == 15
    wx = WeChat(http, "plain")
    with time_machine.travel(START, tick=True) as clock:
        await wx.say(U, "预约洁牙")  # the survey flow: no timeout of its own
        assert await wx.say(U, "小王") == ASK_N
        clock.shift(idle)
        reply = await wx.say(U, "3")
    if kept:
        assert reply == "DONE name=小王 n=3 extra=None"
    else:
        assert reply.startswith(render("flow/expired", minutes=15))
        assert "DONE" not in reply


@pytest.mark.parametrize("idle, kept", [(5 * 60 - SLACK, True), (5 * 60 + SLACK, False)])
async def test_a_flow_declares_its_own_timeout(http, idle, kept):
    wx = WeChat(http, "plain")
    with time_machine.travel(START, tick=True) as clock:
        await wx.say(U, "专家门诊")  # the quick flow: five minutes
        assert await wx.say(U, "小王") == ASK_N
        clock.shift(idle)
        reply = await wx.say(U, "3")
    if kept:
        assert reply == "QUICK 小王 3"
    else:
        assert reply.startswith(render("flow/expired", minutes=5))
        assert "QUICK" not in reply


async def test_a_flow_declares_its_own_exit_and_keeps_the_default_back(wx_plain):
    await wx_plain.say(U, "专家门诊")
    await wx_plain.say(U, "小王")
    assert await wx_plain.say(U, "取消") == "STAY n"  # its own 退出: the customer stays
    assert await wx_plain.say(U, "返回") == render("flow/back", prompt=ASK_NAME)  # the default
    assert await wx_plain.say(U, "阿明") == ASK_N
    assert await wx_plain.say(U, "4") == "QUICK 阿明 4"
    # Another flow, without fallbacks of its own, leaves on 取消.
    await wx_plain.say(U, "预约洁牙")
    assert await wx_plain.say(U, "取消") == render("flow/exit", title="测试问卷")


async def test_a_timeout_longer_than_the_state_stores_keep_is_refused_at_start(settings):
    router = survey_router()
    router.flow(Flow(name="slow", title="慢", steps=[Step("a", "no_more", lambda c, t, d: t)],
                     finish=lambda ctx, data: Reply("x"),
                     conversation_timeout=timedelta(minutes=settings.flow_timeout_minutes + 1)))
    with pytest.raises(ValueError, match="slow"):
        create_app(settings, router=router)


def test_a_flow_may_only_replace_the_universal_commands():
    with pytest.raises(ValueError, match="no fallback"):
        Flow(name="odd", title="怪", steps=[Step("a", "no_more", lambda c, t, d: t)],
             finish=lambda ctx, data: Reply("x"), fallbacks={"HELP": lambda ctx, flow: Reply()})

"""The flow engine's abilities, each through /wechat with signed requests: choice steps
(number, text, tapped text-menu link), typed flow data, 返回 along the steps actually
visited, re-checks at commit that send the customer back with their writes undone, flows
validated when built, staff commands with an argument spec, and state kept in Redis only
after the database commit."""
from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import select
from sqlmodel import Session

from bot.conversation import Flow, Step
from bot.conversation.flow import Choice
from bot.infra.texts import render
from models import LeftMessage, Staff
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.survey

U = "oEngineUser0000000000000001"
ASK_KIND, ASK_SIZE, ASK_DAY = render("no_more"), render("scan"), render("menu_outdated")
TAP = "weixin://bizmsgmenu?msgmenucontent="


def left_messages(engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(LeftMessage)).one()


async def test_choice_step_lists_numbered_tappable_options(wx):
    reply = await wx.say(U, "预约体检")  # the example order flow sits on this key in tests
    assert ASK_KIND in reply
    assert f'<a href="{TAP}%E7%BB%BF%E8%8C%B6&msgmenuid=tea">1. 绿茶</a>' in reply
    assert f'<a href="{TAP}%E5%92%96%E5%95%A1&msgmenuid=coffee">2. 咖啡</a>' in reply


@pytest.mark.parametrize("answer", ["2", "２", "咖啡", "要咖啡", "coffe e"])
async def test_choice_accepts_number_or_text(wx_plain, answer):
    await wx_plain.say(U, "预约体检")
    if answer == "coffe e":  # garbage: refused with the choice asked again
        reply = await wx_plain.say(U, answer)
        assert render("flow/pick_one", count=2) in reply and "1. 绿茶" in reply
        return
    assert ASK_SIZE in await wx_plain.say(U, answer)


async def test_a_tap_on_a_text_menu_line_picks_by_its_id(wx_plain):
    await wx_plain.say(U, "预约体检")
    # WeChat sends the tapped line's text with its msgmenuid as <bizmsgmenuid>.
    reply = await wx_plain.send(U, "text", Content="随便什么字", bizmsgmenuid="coffee")
    assert ASK_SIZE in reply["Content"]


async def test_typed_data_comes_back_as_a_date(wx_plain):
    await wx_plain.say(U, "预约体检")
    await wx_plain.say(U, "1")  # tea: the size step does not apply
    reply = await wx_plain.say(U, "2026-12-03")  # a Thursday
    assert reply == "ORDER tea None 2026-12-03 weekday=3"  # .weekday() of a real date


async def test_back_walks_the_steps_actually_visited(wx_plain):
    await wx_plain.say(U, "预约体检")
    await wx_plain.say(U, "咖啡")
    await wx_plain.say(U, "大杯")
    assert ASK_SIZE in await wx_plain.say(U, "返回")  # day -> size
    assert ASK_KIND in await wx_plain.say(U, "返回")  # size -> kind
    await wx_plain.say(U, "绿茶")  # now the size step does not apply
    assert await wx_plain.say(U, "返回") == render("flow/back", prompt=(
        await _prompt_of_kind(wx_plain)))  # day -> kind, skipping size
    assert "1. 绿茶" in await wx_plain.say(U, "返回")  # already the first step


async def _prompt_of_kind(wx) -> str:
    """The kind step's prompt as the customer sees it (with its options)."""
    other = U + "x"
    await wx.say(other, "预约体检")
    reply = await wx.say(other, "退出")
    assert reply == render("flow/exit", title="测试点单")
    intro = render("flow/intro", title="测试点单")
    return (await wx.say(other, "预约体检")).removeprefix(intro + "\n")


async def test_refused_finish_sends_back_and_undoes_its_writes(wx_plain, services):
    await wx_plain.say(U, "预约体检")
    await wx_plain.say(U, "1")
    reply = await wx_plain.say(U, "2026-12-06")  # a Sunday: the re-check at commit refuses
    assert reply == render("flow/invalid", reason=render("not_yet"), prompt=ASK_DAY)
    assert left_messages(services.engine) == 0  # finish's write was rolled back
    # The state survived the refusal: the customer is at the date step still.
    assert await wx_plain.say(U, "2026-12-07") == "ORDER tea None 2026-12-07 weekday=0"
    assert left_messages(services.engine) == 1  # the successful finish's write stays


def test_flows_are_validated_when_built():
    with pytest.raises(ValueError, match="declared twice"):
        Flow("f", "t", [Step("a", "x", lambda c, t, d: t), Step("a", "x", lambda c, t, d: t)],
             finish=lambda c, d: "")
    with pytest.raises(ValueError, match="no options"):
        Flow("f", "t", [Choice("a", "x")], finish=lambda c, d: "")
    with pytest.raises(ValueError, match="has no steps"):
        Flow("f", "t", [], finish=lambda c, d: "")
    flow = Flow("f", "t", [Step("a", "x", lambda c, t, d: t)], finish=lambda c, d: "")
    with pytest.raises(ValueError, match="has no step 'b'"):
        flow.step("b")


@pytest.fixture
def staff(services):
    from datetime import datetime, timezone

    with Session(services.engine) as s:
        s.add(Staff(openid="oStaffEngine000000000000001", name="王专员", role="specialist",
                    created_at=datetime.now(timezone.utc)))
        s.commit()
    return "oStaffEngine000000000000001"


async def test_staff_command_arguments_are_parsed_by_their_spec(wx_plain, staff):
    reply = await wx_plain.say(staff, "#测试 YY2612030007 2026-12-03 09:30 上海 瑞金医院")
    assert reply == "CMD YY2612030007 2026-12-03 09:30 上海 瑞金医院"
    assert await wx_plain.say(staff, "#测试 YY2612030007 2026-12-03 09:30") == \
        "CMD YY2612030007 2026-12-03 09:30 None"


@pytest.mark.parametrize("line,wrong", [
    ("#测试", "预约号"),
    ("#测试 YY2612030007", "YYYY-MM-DD"),
    ("#测试 12345 2026-12-03 09:30", "预约号"),
    ("#测试 YY2612030007 2026-13-03 09:30", "YYYY-MM-DD"),
    ("#测试 YY2612030007 2026-12-03 25:00", "HH:MM"),
])
async def test_a_bad_staff_command_gets_its_usage_never_a_guess(wx_plain, staff, line, wrong):
    usage = "#测试 <预约号> <YYYY-MM-DD> <HH:MM> [机构名称]"
    assert await wx_plain.say(staff, line) == render("staff/usage", usage=usage, wrong=wrong)


async def test_staff_command_comes_before_the_universal_cancel(wx_plain, staff):
    await wx_plain.say(staff, "预约体检")
    # "#取消 …" from staff is a staff command (here: unknown), never the universal 取消.
    assert await wx_plain.say(staff, "#取消") != render("flow/exit", title="测试点单")
    # The flow is still there: help inside a flow names it.
    assert "测试点单" in await wx_plain.say(staff, "帮助")


class _CommitFails:
    """A transaction whose commit fails (a disk full, a lost connection): rolled back."""

    def __init__(self, txn) -> None:
        self._txn = txn

    def __getattr__(self, name):
        return getattr(self._txn, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._txn.is_active:
            self._txn.rollback()

    def commit(self):
        self._txn.rollback()
        raise RuntimeError("commit failed")


@pytest.mark.skipif(not REDIS_URL, reason="state lives in Redis only when REDIS_URL is set")
async def test_redis_state_is_written_only_after_the_commit(wx_plain, pipeline, monkeypatch):
    await wx_plain.say(U, "预约体检")
    real = pipeline.engine.connect

    def connect():
        conn = real()
        begin = conn.begin
        conn.begin = lambda: _CommitFails(begin())
        return conn

    monkeypatch.setattr(pipeline.engine, "connect", connect)
    assert await wx_plain.say(U, "咖啡") == render("error")
    monkeypatch.setattr(pipeline.engine, "connect", real)
    # The failed message did not advance the conversation: still at the kind step, so
    # 咖啡 is taken as the kind (had it advanced, 咖啡 would be refused as a size).
    reply = await wx_plain.say(U, "咖啡")
    assert ASK_SIZE in reply and render("flow/pick_one", count=2) not in reply

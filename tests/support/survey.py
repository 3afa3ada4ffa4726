"""A small flow used to exercise the conversation engine through the real door."""
from __future__ import annotations

import time
from datetime import date, timedelta

from bot.conversation import Arg, Choice, Context, Flow, FlowData, Invalid, Option, Reply, Router, Step
from bot.conversation.intents import Universal
from handlers import build_router
from menus import Key
from models import LeftMessage


class SurveyData(FlowData):
    name: str | None = None
    n: int | None = None
    extra: str | None = None


def _name(ctx: Context, text: str, data: dict) -> str:
    if not 1 <= len(text) <= 10:
        raise Invalid("nothing_to_exit")  # any template will do (this one exists); tests look for the re-prompt
    return text


def _number(ctx: Context, text: str, data: dict) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 9:
        raise Invalid("nothing_to_exit")
    return int(text)


def _finish(ctx: Context, data: dict) -> Reply:
    return Reply(f"DONE name={data.name} n={data.n} extra={data.extra}")


survey = Flow(
    name="survey", title="测试问卷",
    steps=[Step("name", "no_more", _name),
           Step("n", "scan", _number),
           Step("extra", "menu_outdated", lambda c, t, d: t, when=lambda c, d: d.n > 5)],
    finish=_finish, model=SurveyData,
)


class OrderData(FlowData):
    kind: str | None = None
    size: str | None = None
    day: date | None = None


def _day(ctx: Context, text: str, data: OrderData) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Invalid("nothing_to_exit") from None


def _order_finish(ctx: Context, data: OrderData) -> Reply:
    # A write made before the re-check: it must not survive a refused finish.
    ctx.session.add(LeftMessage(openid=ctx.openid, text=f"order {data.kind}", created_at=ctx.now))
    ctx.session.flush()
    if data.day.weekday() == 6:  # the re-check at commit: Sundays are full
        raise Invalid("not_yet", goto="day")
    return Reply(f"ORDER {data.kind} {data.size} {data.day.isoformat()} weekday={data.day.weekday()}")


order = Flow(
    name="order", title="测试点单",
    steps=[Choice("kind", "no_more", options=lambda c, d: [Option("tea", "绿茶"), Option("coffee", "咖啡")]),
           Choice("size", "scan", options=lambda c, d: [Option("l", "大杯"), Option("m", "中杯")],
                  when=lambda c, d: d.kind == "coffee"),
           Step("day", "menu_outdated", _day)],
    finish=_order_finish, model=OrderData,
)


class QuickData(FlowData):
    word: str | None = None
    n: int | None = None


# A flow with its own timeout (5 minutes, under the deployment's 15) and its own 退出: it
# keeps the customer where they were (返回 stays the default).
quick = Flow(
    name="quick", title="测试快答",
    steps=[Step("word", "no_more", _name), Step("n", "scan", _number)],
    finish=lambda ctx, data: Reply(f"QUICK {data.word} {data.n}"), model=QuickData,
    conversation_timeout=timedelta(minutes=5),
    fallbacks={Universal.EXIT: lambda ctx, flow: Reply(f"STAY {flow.current(ctx).name}")},
)


def _booking_no(v: str) -> str:
    if not (v.startswith("YY") and v[2:].isdigit() and len(v) == 12):
        raise ValueError(v)
    return v


def _hhmm(v: str) -> str:
    hh, mm = v.split(":")
    if not (0 <= int(hh) < 24 and 0 <= int(mm) < 60):
        raise ValueError(v)
    return v


def survey_router() -> Router:
    root = build_router()
    extra = Router()
    extra.flow(survey)
    extra.flow(order)
    extra.flow(quick)
    extra.key(Key.BOOK_EXPERT)(lambda ctx: ctx.start(quick))
    extra.key(Key.BOOK_CHECKUP)(lambda ctx: ctx.start(order))

    @extra.command("#测试", Arg("预约号", _booking_no, key="no"), Arg("YYYY-MM-DD", date.fromisoformat, key="day"),
                   Arg("HH:MM", _hhmm, key="at"), Arg("机构名称", optional=True, rest=True, key="where"))
    def staff_test(ctx: Context, no: str, day: date, at: str, where: str | None) -> Reply:
        return Reply(f"CMD {no} {day.isoformat()} {at} {where}")
    extra.key(Key.BOOK_DENTAL)(lambda ctx: ctx.start(survey))

    @extra.key(Key.MY_BOOKINGS)
    def slow(ctx: Context) -> Reply:
        time.sleep(float(ctx.services.settings.reply_deadline_seconds) + 0.4)
        return Reply("SLOW REPLY")

    @extra.key(Key.CANCEL_BOOKING)
    def broken(ctx: Context) -> Reply:
        from models import WechatUser

        ctx.record.state = "survey:n"  # a write that must not survive the failure
        ctx.session.add(WechatUser(openid=ctx.openid))  # a duplicate key: the flush fails
        ctx.session.flush()
        return Reply("unreachable")

    @extra.key(Key.BOOK_SPECIAL)
    def long_text(ctx: Context) -> Reply:
        return Reply(LONG_TEXT)

    return root.include(extra, replace=True)


LONG_TEXT = "\n".join(f"第{i}行：" + "保险" * 60 for i in range(40))

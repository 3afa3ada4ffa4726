"""A small flow used to exercise the conversation engine through the real door."""
from __future__ import annotations

import time

from bot.conversation import Context, Flow, FlowData, Invalid, Reply, Router, Step
from handlers import build_router
from menus import Key


class SurveyData(FlowData):
    name: str | None = None
    n: int | None = None
    extra: str | None = None


def _name(ctx: Context, text: str, data: dict) -> str:
    if not 1 <= len(text) <= 10:
        raise Invalid("flow/ended")  # any template will do; tests look for the re-prompt
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


def survey_router() -> Router:
    root = build_router()
    extra = Router()
    extra.flow(survey)
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

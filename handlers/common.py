"""Greeting, help, small services (health advisor, the festival), the FAQ, the human
hand-over and the WeChat events every account must handle."""
from __future__ import annotations

import logging
import time

from sqlalchemy import update

from bot.conversation import Choice, Context, Flow, FlowData, Option, Reply, Router
from bot.conversation.engine import answer_faq
from bot.conversation.faq import default as faq_book
from bot.domain import notify
from bot.domain import messages as left
from models import WechatUser
from handlers.tiers import capabilities, with_service
from menus import VOCABULARY, Key

log = logging.getLogger(__name__)
router = Router(VOCABULARY)

HUMAN, LEAVE_MESSAGE = "human", "leave_message"


@router.key(Key.HELP)
def help_(ctx: Context) -> Reply:
    if ctx.staff is not None and ctx.text.lstrip().startswith(("#", "＃")):
        return ctx.say("staff/help_hint")
    return ctx.say("help", **capabilities(ctx))


# --- The FAQ -----------------------------------------------------------------------------


class SuggestData(FlowData):
    suggested: list[str] = []
    entry: str | None = None
    asked: str = ""  # the question the suggestions answer (its tiers and service shape the answer)


def _suggested(ctx: Context, data: SuggestData) -> list[Option]:
    book = faq_book()
    return [Option(entry, title) for entry, title in zip(data.suggested, book.titles(data.suggested))]


faq_suggest = router.flow(Flow(
    name="faq_suggest", title="常见问题",
    steps=[Choice("entry", "faq/suggest", options=_suggested)],
    finish=lambda ctx, data: Reply(answer_faq(ctx, data.entry, data.asked)),
    model=SuggestData, intro=False, sticky=False,
))


@router.key(Key.FAQ)
def faq(ctx: Context) -> Reply:
    book = faq_book()
    top = book.ids[:8]  # the handbook's own questions come first in faq.toml
    return ctx.start(faq_suggest, suggested=top)


# --- Small services ----------------------------------------------------------------------


@router.key(Key.HEALTH_ADVISOR)
@with_service("health_advisor")
def health_advisor(ctx: Context, customer, tier) -> Reply:
    return ctx.say("health_advisor")


@router.key(Key.FESTIVAL)
def festival(ctx: Context) -> Reply:
    today = ctx.today
    months = ctx.services.rules.festival.months
    during = today.month in months
    year = today.year if today.month <= max(months) else today.year + 1
    return ctx.say("festival", during=during, year=year, months=months,
                   events=festival_events(ctx) if during else [])


def festival_events(ctx: Context) -> list[dict]:
    """This year's events, from the festival data file (operations staff keep it)."""
    import tomllib

    path = ctx.services.settings.festival_file
    try:
        with open(path, "rb") as fh:
            events = tomllib.load(fh).get("event", [])
    except FileNotFoundError:
        return []
    return [e for e in events if int(e.get("year", 0)) == ctx.today.year]


# --- Human hand-over -----------------------------------------------------------------------


@router.key(Key.HUMAN)
def human(ctx: Context) -> Reply:
    start, end = ctx.services.rules.human_service.hours
    if start <= ctx.now.time().replace(tzinfo=None) < end:
        ctx.enter(HUMAN, since=time.time(), agent=False)
        notice = ctx.say("human_transferring").text
        notify.text_message(ctx.session, ctx.openid, notice, ctx.now, kind="handover",
                            key=f"handover:{ctx.openid}:{ctx.now.timestamp():.6f}")
        return Reply(transfer=True)
    ctx.enter(LEAVE_MESSAGE)
    return ctx.say("human_closed", start=start.strftime("%H:%M"), end=end.strftime("%H:%M"))


@router.mode(HUMAN)
def human_talk(ctx: Context) -> Reply | None:
    """Every message goes to the agents until the session closes, 退出, or no agent has
    taken it within the waiting limit."""
    data = ctx.record.data
    waited = time.time() - float(data.get("since", 0))
    if not data.get("agent") and waited > ctx.services.settings.human_wait_minutes * 60:
        ctx.record.clear()
        ctx.notices.append(ctx.say("modes/human_timeout",
                                   minutes=ctx.services.settings.human_wait_minutes).text)
        return None
    return Reply(transfer=True)


@router.mode(LEAVE_MESSAGE)
def leave_message(ctx: Context) -> Reply:
    account = ctx.account
    left.leave_message(ctx.session, ctx.openid, ctx.text, ctx.now,
                       account.customer_id if account else None)
    ctx.record.clear()
    return ctx.say("modes/message_received")


@router.event("kf_create_session")
def agent_took_it(ctx: Context) -> Reply:
    if ctx.mode == HUMAN:
        ctx.record.data["agent"] = True
    return Reply()


@router.event("kf_close_session")
def agent_closed(ctx: Context) -> Reply:
    if ctx.mode == HUMAN:
        ctx.record.clear()
        return ctx.say("modes/human_closed_by_agent")
    return Reply()


# --- Events ----------------------------------------------------------------------------------


@router.event("subscribe", "subscribe_scan")
def subscribe(ctx: Context) -> Reply:
    user = ctx.user  # created by the pipeline's touch on first contact
    now = ctx.now
    scene = getattr(ctx.msg, "scene_id", None) if ctx.inbound.event == "subscribe_scan" else None
    if user is not None:
        user.following, user.subscribed_at, user.unsubscribed_at = True, now, None
        user.subscribe_scene = (scene or None) and str(scene)[:64]
        ctx.session.add(user)
    return ctx.say("welcome", customer=ctx.customer, **capabilities(ctx))


@router.event("unsubscribe")
def unsubscribe(ctx: Context) -> Reply:
    ctx.session.execute(update(WechatUser).where(WechatUser.openid == ctx.openid)
                        .values(following=False, unsubscribed_at=ctx.now))
    return Reply()  # WeChat shows nothing to someone who left


@router.event("scan")
def scan(ctx: Context) -> Reply:
    return ctx.say("scan")


@router.event("view", "location")
def silent(ctx: Context) -> Reply:
    return Reply()


@router.event("templatesendjobfinish")
def template_finished(ctx: Context) -> Reply:
    status = getattr(ctx.msg, "status", "") or ""
    msgid = getattr(ctx.msg, "id", None)
    if status != "success":
        log.warning("template message to %s… not delivered: %s", ctx.openid[:6], status)
    if msgid:
        notify.delivery_result(ctx.session, int(msgid), status)
    return Reply()

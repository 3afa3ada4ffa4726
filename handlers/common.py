"""Greeting, help, FAQ, human hand-over and the WeChat events every account must handle."""
from __future__ import annotations

import logging

from sqlalchemy import update

from bot.conversation import Context, Reply, Router
from menus import Key
from models import WechatUser

log = logging.getLogger(__name__)
router = Router()


@router.key(Key.HELP)
def help_(ctx: Context) -> Reply:
    return ctx.say("help")


@router.key(Key.FAQ)
def faq(ctx: Context) -> Reply:
    return ctx.say("faq")


@router.key(Key.HEALTH_ADVISOR)
def health_advisor(ctx: Context) -> Reply:
    return ctx.say("health_advisor")


@router.key(Key.HUMAN)
def human(ctx: Context) -> Reply:
    start, end = ctx.services.settings.service_hours
    if start <= ctx.now.time().replace(tzinfo=None) < end:
        return Reply(transfer=True)
    return ctx.say("human_closed", start=start.strftime("%H:%M"), end=end.strftime("%H:%M"))


@router.event("subscribe", "subscribe_scan")
def subscribe(ctx: Context) -> Reply:
    user = ctx.user  # created by the pipeline's touch on first contact
    now = ctx.now
    scene = getattr(ctx.msg, "scene_id", None) if ctx.inbound.event == "subscribe_scan" else None
    if user is not None:
        user.following, user.subscribed_at, user.unsubscribed_at = True, now, None
        user.subscribe_scene = (scene or None) and str(scene)[:64]
        ctx.session.add(user)
    customer = ctx.customer
    return ctx.say("welcome", customer=customer)


@router.event("unsubscribe")
def unsubscribe(ctx: Context) -> Reply:
    ctx.session.execute(update(WechatUser).where(WechatUser.openid == ctx.openid)
                        .values(following=False, unsubscribed_at=ctx.now))
    return Reply()  # WeChat shows nothing to someone who left


@router.event("scan")
def scan(ctx: Context) -> Reply:
    return ctx.say("scan")


@router.event("view", "location", "masssendjobfinish")
def silent(ctx: Context) -> Reply:
    return Reply()


@router.event("templatesendjobfinish")
def template_finished(ctx: Context) -> Reply:
    status = getattr(ctx.msg, "status", "")
    if status != "success":
        log.warning("template message to %s… not delivered: %s", ctx.openid[:6], status)
    return Reply()

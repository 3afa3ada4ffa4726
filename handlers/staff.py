"""Staff chat commands (#…). Only openids registered as staff reach them, except `#注册`,
which links a new staff member's openid with a one-time code. A command whose arguments do
not fit gets its usage (the engine), never a guess; a refusal names its reason."""
from __future__ import annotations

import re
import time
from datetime import date

from bot.conversation import Arg, Context, Reply, Router
from bot.domain import broadcasts
from bot.domain import messages as left
from bot.domain.accounts import BindRules
from bot.domain import staff_desk as desk
from bot.domain import staff_login
from bot.domain.bookings import calendar
from bot.domain.staff_desk import StaffRefused
from bot.domain.vocab import BookingStatus, Role
from bot.infra.privacy import mask_name, mask_phone
from menus import VOCABULARY

router = Router(VOCABULARY)
ADMIN = (Role.ADMIN.value,)
BROADCAST = "broadcast"  # the mode holding a staff member's pending broadcast

# --- Argument parsers (the words staff type) --------------------------------------------------

STATUS_WORDS = {
    "受理": (BookingStatus.SUBMITTED,), "待确认": (BookingStatus.SUBMITTED,),
    "已确认": (BookingStatus.CONFIRMED,), "确认": (BookingStatus.CONFIRMED,),
    "预约成功": (BookingStatus.CONFIRMED,),
    "已完成": (BookingStatus.COMPLETED,), "完成": (BookingStatus.COMPLETED,),
    "爽约": (BookingStatus.NO_SHOW,),
    "已取消": (BookingStatus.CANCELLED, BookingStatus.CANCELLED_LATE),
    "取消": (BookingStatus.CANCELLED, BookingStatus.CANCELLED_LATE),
    "逾期取消": (BookingStatus.CANCELLED_LATE,),
    "全部": tuple(BookingStatus),
}
OPEN_STATUSES = (BookingStatus.SUBMITTED, BookingStatus.CONFIRMED)
UNHANDLED = ("未处理",)


def booking_no(value: str) -> str:
    if not desk.BOOKING_NO.fullmatch(value):
        raise ValueError(value)
    return value.upper()


def day(value: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(value)
    return date.fromisoformat(value)


def hhmm(value: str) -> str:
    m = re.fullmatch(r"(\d{1,2})[:：](\d{2})", value)
    if not m or not (0 <= int(m[1]) < 24 and 0 <= int(m[2]) < 60):
        raise ValueError(value)
    return f"{int(m[1]):02d}:{m[2]}"


def _status(value: str) -> tuple[str, ...]:
    if value not in STATUS_WORDS:
        raise ValueError(value)
    return STATUS_WORDS[value]


def service_word(value: str, ctx: Context) -> str | None:
    """A bookable service by code or name (洁牙, 体检, 专家门诊 …); 全部 for any."""
    if value == "全部":
        return ""
    rules = ctx.services.rules
    for s in rules.services:
        if s.code not in rules.booking.services:
            continue
        names = {s.code, s.name, s.name.removesuffix("预约"), s.name.removeprefix("健康")}
        if value in names:
            return s.code
    raise ValueError(value)


def tier_word(value: str, ctx: Context) -> str:
    if value != broadcasts.ALL and value not in {t.name for t in ctx.services.rules.tiers}:
        raise ValueError(value)
    return value


def number(value: str) -> int:
    if not value.isdigit():
        raise ValueError(value)
    return int(value)


def unhandled(value: str) -> bool:
    if value not in UNHANDLED:
        raise ValueError(value)
    return True


def refused(ctx: Context, exc: StaffRefused) -> Reply:
    return ctx.say("staff/refused", code=exc.code, **exc.facts)


def who(ctx: Context) -> str:
    return ctx.openid


# --- Help and registration -----------------------------------------------------------------------


@router.command("#帮助", summary="列出您可以使用的员工指令")
def staff_help(ctx: Context) -> Reply:
    commands = [(c.usage, c.summary) for c in ctx.router.commands.values()
                if ctx.staff.role in c.roles and not c.public]
    return ctx.say("staff/help", commands=commands, role=ctx.staff.role)


@router.command("#注册", Arg("邀请码", key="code"), public=True,
                summary="用管理员发给您的一次性邀请码，把本微信号登记为员工")
def register(ctx: Context, code: str) -> Reply:
    try:
        limits = BindRules.of(ctx.services.settings, ctx.services.rules)
        member = desk.redeem_invite(ctx.session, ctx.services.settings.secret_key, code,
                                    ctx.openid, ctx.now, limits=limits)
    except StaffRefused as exc:
        return refused(ctx, exc)
    ctx._staff = member
    return ctx.say("staff/registered", name=member.name, role=member.role)


@router.command("#登录", summary="获取工作台的一次性登录链接（5分钟内有效）")
def sign_in_link(ctx: Context) -> Reply:
    settings = ctx.services.settings
    base = settings.public_base_url.rstrip("/")
    if not settings.admin_enabled or not base:
        return ctx.say("staff/signin_link", url=None)
    token = staff_login.create_link(ctx.session, settings.secret_key, ctx.openid, ctx.now)
    return ctx.say("staff/signin_link", url=f"{base}/admin/login/link?t={token}",
                   minutes=staff_login.LINK_MINUTES)


# --- Bookings --------------------------------------------------------------------------------


@router.command("#预约", Arg("状态", _status, optional=True, key="statuses"),
                Arg("服务", service_word, optional=True, with_ctx=True, key="service"),
                Arg("城市", optional=True, key="city"),
                summary="预约队列，按服务日期最近的在前（默认：受理和已确认；“全部”不限）")
def booking_queue(ctx: Context, statuses, service, city) -> Reply:
    lines = desk.queue(ctx.session, statuses or OPEN_STATUSES, service or None, city)
    rules = ctx.services.rules
    names = {s.code: s.name for s in rules.services}
    rows = [dict(number=q.booking.number, service=names.get(q.booking.service, q.booking.service),
                 person=mask_name(q.person), city=q.city, preferred=q.booking.preferred_date,
                 confirmed=q.booking.confirmed_date, at=q.booking.confirmed_time,
                 status=q.booking.status, notes=q.notes,
                 note=q.booking.visit_note) for q in lines]
    return ctx.say("staff/queue", rows=rows)


@router.command("#确认", Arg("预约号", booking_no, key="no"), Arg("YYYY-MM-DD", day, key="on"),
                Arg("HH:MM", hhmm, key="at"), Arg("机构名称", optional=True, rest=True, key="place"),
                summary="确认预约的日期、时间和机构（不写机构即客户所选）")
def confirm(ctx: Context, no: str, on: date, at: str, place: str | None) -> Reply:
    try:
        done = desk.confirm_booking(ctx.session, who(ctx), no, on, at, place, ctx.now,
                                    ctx.services.rules, calendar(),
                                    version=desk.booking_version(ctx.session, no))
    except StaffRefused as exc:
        return refused(ctx, exc)
    b = done.booking
    return ctx.say("staff/confirmed", outcome=done.outcome, number=b.number, day=b.confirmed_date,
                   at=b.confirmed_time, place=done.place.name, warnings=done.warnings)


def _close(ctx: Context, no: str, status: BookingStatus) -> Reply:
    try:
        b = desk.close_booking(ctx.session, who(ctx), no, status, ctx.now,
                               version=desk.booking_version(ctx.session, no))
    except StaffRefused as exc:
        return refused(ctx, exc)
    return ctx.say("staff/closed", number=b.number, status=b.status)


@router.command("#完成", Arg("预约号", booking_no, key="no"), summary="服务已完成（客户已签字）")
def complete(ctx: Context, no: str) -> Reply:
    return _close(ctx, no, BookingStatus.COMPLETED)


@router.command("#爽约", Arg("预约号", booking_no, key="no"), summary="客户未到场（计次）")
def no_show(ctx: Context, no: str) -> Reply:
    return _close(ctx, no, BookingStatus.NO_SHOW)


@router.command("#取消", Arg("预约号", booking_no, key="no"), Arg("原因", rest=True, key="reason"),
                summary="由专员取消预约（不计次），并告知客户原因")
def cancel(ctx: Context, no: str, reason: str) -> Reply:
    try:
        b = desk.staff_cancel(ctx.session, who(ctx), no, reason, ctx.now,
                              version=desk.booking_version(ctx.session, no))
    except StaffRefused as exc:
        return refused(ctx, exc)
    return ctx.say("staff/cancelled", number=b.number, reason=reason)


# --- Customers, messages and visits ---------------------------------------------------------------


@router.command("#查询", Arg("手机号|保单号|预约号", key="key"),
                summary="客户概况：层级、今年预约、剩余次数、最近联系")
def lookup(ctx: Context, key: str) -> Reply:
    found = desk.lookup(ctx.session, key, ctx.today, ctx.services.rules)
    if found is None:
        return ctx.say("staff/lookup_none")
    c = found.customer
    return ctx.say("staff/lookup", name=mask_name(c.name), phone=mask_phone(c.phone),
                   tier=ctx.services.rules.tier(found.tier).name, year=ctx.today.year,
                   bookings=found.bookings_this_year, quotas=found.quotas,
                   last=found.last_contact, matches=found.matches)


def _caller(row: desk.CallBack) -> dict:
    """Who to call back: the masked name, and the phone (in full when the desk reveals it)."""
    c = row.customer
    if c is None:
        return dict(name=None, phone=None)
    return dict(name=mask_name(c.name), phone=c.phone if row.reveal else mask_phone(c.phone))


@router.command("#留言", Arg("未处理", unhandled, optional=True, key="open_only"),
                summary="客户留言和回电号码（“未处理”只看未回复的）")
def messages(ctx: Context, open_only: bool | None) -> Reply:
    rows = [dict(id=r.item.id, at=r.item.created_at, text=r.item.text,
                 closed=r.item.closed_at is not None, **_caller(r))
            for r in desk.left_messages(ctx.session, who(ctx), ctx.now,
                                        open_only=bool(open_only))]
    return ctx.say("staff/messages", rows=rows)


@router.command("#回复", Arg("留言号", number, key="message_id"), Arg("内容", rest=True, key="text"),
                summary="以客服消息回复留言，并关闭留言")
def reply(ctx: Context, message_id: int, text: str) -> Reply:
    try:
        left.reply_to_message(ctx.session, who(ctx), message_id, text, ctx.now)
    except StaffRefused as exc:
        return refused(ctx, exc)
    return ctx.say("staff/replied", id=message_id)


@router.command("#探视", Arg("未处理", unhandled, optional=True, key="open_only"),
                summary="理赔住院探视申请（“未处理”只看待探视的）")
def visits(ctx: Context, open_only: bool | None) -> Reply:
    rows = [dict(id=r.item.id, hospital=r.item.hospital, ward=r.item.ward,
                 admission=r.item.admission_date, done=r.item.status == "done", **_caller(r))
            for r in desk.visits(ctx.session, who(ctx), ctx.now, open_only=bool(open_only))]
    return ctx.say("staff/visits", rows=rows)


@router.command("#探视完成", Arg("编号", number, key="visit_id"), summary="探视已完成")
def visit_done(ctx: Context, visit_id: int) -> Reply:
    try:
        desk.close_visit(ctx.session, who(ctx), visit_id, ctx.now)
    except StaffRefused as exc:
        return refused(ctx, exc)
    return ctx.say("staff/visit_done", id=visit_id)


# --- Broadcasts ----------------------------------------------------------------------------------


@router.command("#群发", Arg("层级…|全部", tier_word, many=True, with_ctx=True, key="words"),
                Arg("内容", rest=True, key="content"), roles=ADMIN,
                summary="群发预览：人数和本月剩余次数；回复“#确认群发”才发送")
def broadcast(ctx: Context, words: list[str], content: str) -> Reply:
    rules = ctx.services.rules
    tiers = broadcasts.parse_tiers(words, rules)
    if tiers is None:
        return ctx.say("staff/refused", code="bad_tiers")
    try:
        found = broadcasts.preview(ctx.session, tiers, ctx.now)
    except StaffRefused as exc:
        return _broadcast_refused(ctx, exc)
    rows = [dict(name=rules.tier(p.tier).name, audience=p.audience, left=p.left) for p in found]
    ctx.enter(BROADCAST, tiers=tiers, content=content, at=time.time())
    return ctx.say("staff/broadcast_preview", rows=rows, total=sum(p.audience for p in found),
                   content=content, limit=broadcasts.MONTHLY_LIMIT)


def _broadcast_refused(ctx: Context, exc: StaffRefused) -> Reply:
    """A refusal naming tiers by their names (the domain gives codes)."""
    facts = dict(exc.facts)
    if "tiers" in facts:
        facts["tiers"] = [ctx.services.rules.tier(t).name for t in facts["tiers"]]
    return ctx.say("staff/refused", code=exc.code, **facts)


@router.command("#确认群发", roles=ADMIN, summary="发送待发送的群发")
def broadcast_confirm(ctx: Context) -> Reply:
    pending = ctx.record.data if ctx.mode == BROADCAST else None
    minutes = ctx.services.settings.flow_timeout_minutes
    if not pending or time.time() - float(pending.get("at", 0)) > minutes * 60:
        if ctx.mode == BROADCAST:
            ctx.record.clear()
        return ctx.say("staff/broadcast_none")
    tiers, content = list(pending["tiers"]), pending["content"]
    try:
        rows = broadcasts.send(ctx.session, who(ctx), tiers, content, ctx.now)
    except StaffRefused as exc:
        ctx.record.clear()
        return _broadcast_refused(ctx, exc)
    ctx.record.clear()
    rules = ctx.services.rules
    return ctx.say("staff/broadcast_sent", names=[rules.tier(r.tier).name for r in rows],
                   audience=sum(r.audience for r in rows))


@router.command("#取消群发", roles=ADMIN, summary="放弃待发送的群发")
def broadcast_drop(ctx: Context) -> Reply:
    if ctx.mode != BROADCAST:
        return ctx.say("staff/broadcast_none")
    ctx.record.clear()
    return ctx.say("staff/broadcast_dropped")


@router.mode(BROADCAST)
def pending_broadcast(ctx: Context) -> None:
    """Anything but #确认群发 drops the pending broadcast (the engine clears the mode)."""
    ctx.notices.append(ctx.say("staff/broadcast_dropped").text)
    return None


@router.command("#群发记录", roles=ADMIN, summary="最近的群发及微信回报的送达结果")
def broadcast_history(ctx: Context) -> Reply:
    rules = ctx.services.rules
    rows = [dict(at=b.created_at, name=rules.tier(b.tier).name if rules.has_tier(b.tier) else b.tier,
                 content=b.content, audience=b.audience, status=b.status,
                 total=b.total_count, filtered=b.filter_count, sent=b.sent_count,
                 errors=b.error_count, msg_id=b.msg_id)
            for b in broadcasts.history(ctx.session)]
    return ctx.say("staff/broadcast_history", rows=rows)


@router.event("masssendjobfinish")
def mass_send_finished(ctx: Context) -> Reply:
    """WeChat's report of a mass send (sent, filtered and error counts), by msg_id."""
    msg = ctx.msg
    msg_id = int(getattr(msg, "id", 0) or 0)
    if msg_id:
        broadcasts.record_result(
            ctx.session, msg_id, getattr(msg, "status", "") or "",
            {"total": getattr(msg, "total_count", None), "filter": getattr(msg, "filter_count", None),
             "sent": getattr(msg, "sent_count", None), "error": getattr(msg, "error_count", None)},
            ctx.now)
    return Reply()  # "success": WeChat expects no reply to an event

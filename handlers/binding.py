"""Identity binding (绑定): name, ID number and the phone on file, then an SMS code.
Five failures lock binding for that WeChat account for 30 minutes."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from datetime import timedelta

from bot.conversation import Context, Flow, FlowData, Invalid, Reply, Router, Step
from bot.domain import accounts
from bot.domain.identity import (is_valid_phone, mask_id_number, mask_name, mask_phone,
                                 normalize_id_number, validate_id_number)
from bot.infra.texts import render
from menus import Key
from models import Customer

log = logging.getLogger(__name__)
router = Router()

MAX_FAILURES = 5
LOCK_MINUTES = 30
CODE_TTL = 300  # seconds
RESEND_AFTER = 60
_NAME = re.compile(r"[\u4e00-\u9fa5A-Za-z·•. ]{1,30}")


# --- Lock-out ------------------------------------------------------------------------------


def locked_until(ctx: Context):
    account = ctx.account
    if account and account.bind_locked_until and account.bind_locked_until > ctx.now:
        return account.bind_locked_until
    return None


def fail(ctx: Context, template: str, *, goto: str | None = None) -> Invalid:
    """Count one failure; on the fifth, lock binding and end the flow."""
    user = ctx.user
    user.bind_failures += 1
    left = MAX_FAILURES - user.bind_failures
    if left <= 0:
        user.bind_failures = 0
        user.bind_locked_until = ctx.now + timedelta(minutes=LOCK_MINUTES)
        ctx.session.add(user)
        log.warning("binding locked for %s… after %d failures", ctx.openid[:6], MAX_FAILURES)
        return Invalid("binding/locked", end=True, minutes=LOCK_MINUTES,
                       until=user.bind_locked_until.astimezone(ctx.now.tzinfo).strftime("%H:%M"))
    ctx.session.add(user)
    return Invalid(template, goto=goto, left=left)


# --- Steps -----------------------------------------------------------------------------------


class BindingData(FlowData):
    name: str | None = None
    id_number: str | None = None
    phone: str | None = None
    code: str | None = None
    code_hash: str = ""
    code_sent_at: float = 0.0


def parse_name(ctx: Context, text: str, data: BindingData) -> str:
    name = text.strip()
    if not _NAME.fullmatch(name):
        raise Invalid("binding/bad_name")
    return name


def parse_id_number(ctx: Context, text: str, data: BindingData) -> str:
    try:
        return validate_id_number(normalize_id_number(text), today=ctx.today)
    except ValueError:
        raise Invalid("binding/bad_id_number") from None


def parse_phone(ctx: Context, text: str, data: BindingData) -> str:
    phone = re.sub(r"[\s-]", "", text)
    if not is_valid_phone(phone):
        raise Invalid("binding/bad_phone")
    customer = accounts.customer_by_id_number(ctx.session, data.id_number)
    if customer is None or customer.name != data.name or customer.phone != phone:
        log.info("binding mismatch for %s… (ID %s)", ctx.openid[:6], mask_id_number(data.id_number))
        raise fail(ctx, "binding/mismatch", goto="name")
    if accounts.bound_elsewhere(ctx.session, customer, ctx.openid):
        raise Invalid("binding/bound_elsewhere", end=True)
    if ctx.services.sms.sends_codes:
        send_code(ctx, data, phone)
    return phone


def send_code(ctx: Context, data: BindingData, phone: str) -> None:
    code = f"{secrets.randbelow(10**6):06d}"
    data.code_hash = _hash(ctx.openid, code)
    data.code_sent_at = time.time()
    text = render("sms/bind_code", code=code, minutes=CODE_TTL // 60)
    sms = ctx.services.sms
    ctx.after_commit.append(lambda: sms.send(phone, text))


def parse_code(ctx: Context, text: str, data: BindingData) -> str:
    text = text.strip()
    if text in ("重发", "重新发送"):
        if time.time() - data.code_sent_at < RESEND_AFTER:
            raise Invalid("binding/resend_wait", seconds=RESEND_AFTER)
        send_code(ctx, data, data.phone)
        raise Invalid("binding/resent", phone=mask_phone(data.phone))
    if time.time() - data.code_sent_at > CODE_TTL:
        raise Invalid("binding/code_expired")
    if not re.fullmatch(r"\d{6}", text):
        raise Invalid("binding/bad_code_format")
    if not hmac.compare_digest(_hash(ctx.openid, text), data.code_hash):
        raise fail(ctx, "binding/wrong_code")
    return "ok"


def _hash(openid: str, code: str) -> str:
    return hashlib.sha256(f"{openid}:{code}".encode()).hexdigest()


def begin(ctx: Context) -> dict | Reply:
    customer = ctx.customer
    if customer is not None:
        return ctx.say("binding/already", name=mask_name(customer.name))
    until = locked_until(ctx)
    if until:
        return ctx.say("binding/still_locked", until=until.astimezone(ctx.now.tzinfo).strftime("%H:%M"))
    return {}


def finish(ctx: Context, data: BindingData) -> Reply:
    customer = accounts.customer_by_id_number(ctx.session, data.id_number)
    try:
        accounts.bind(ctx.session, ctx.openid, customer, ctx.now)
    except accounts.BoundElsewhere:
        raise Invalid("binding/bound_elsewhere", end=True) from None
    log.info("bound %s… to customer %s", ctx.openid[:6], mask_id_number(customer.id_number))
    return ctx.say("binding/done", customer=customer)


binding = router.flow(Flow(
    name="binding", title="身份绑定",
    steps=[
        Step("name", "binding/ask_name", parse_name, free_text=True),
        Step("id_number", "binding/ask_id_number", parse_id_number),
        Step("phone", "binding/ask_phone", parse_phone),
        Step("code", "binding/ask_code", parse_code,
             when=lambda ctx, data: ctx.services.sms.sends_codes,
             context=lambda ctx, data: {"phone": mask_phone(data.phone or "")}),
    ],
    begin=begin, finish=finish, model=BindingData,
))


@router.key(Key.BIND)
def start_binding(ctx: Context) -> Reply:
    return ctx.start(binding)


# --- Unbinding ---------------------------------------------------------------------------------


class UnbindData(FlowData):
    name: str = ""
    confirm: bool | None = None


def _confirm(ctx: Context, text: str, data: UnbindData) -> bool:
    if text not in ("确认", "确认解除", "是"):
        raise Invalid("binding/unbind_confirm_again")
    return True


def _unbind_begin(ctx: Context) -> dict | Reply:
    customer = ctx.customer
    if customer is None:
        return ctx.say("binding/not_bound")
    return {"name": mask_name(customer.name)}


def _unbind_finish(ctx: Context, data: UnbindData) -> Reply:
    accounts.unbind(ctx.session, ctx.openid)
    return ctx.say("binding/unbound")


unbinding = router.flow(Flow(
    name="unbinding", title="解除绑定",
    steps=[Step("confirm", "binding/unbind_confirm", _confirm,
                context=lambda ctx, data: {"name": data.name})],
    begin=_unbind_begin, finish=_unbind_finish, model=UnbindData,
))


@router.key(Key.UNBIND)
def start_unbinding(ctx: Context) -> Reply:
    return ctx.start(unbinding)


def require_customer(ctx: Context) -> Customer | Reply:
    """The bound customer, or a reply that leads the user into binding."""
    customer = ctx.customer
    if customer is not None:
        return customer
    started = ctx.start(binding)
    return Reply(render("binding/needed") + "\n" + started.text)

"""Identity binding (绑定): name, ID number and the phone on file, then an SMS code.

Nothing the customer types is kept readable in the flow's state (which lives in the
database or Redis): the name only as a keyed digest until the ID number is matched, then
only the matched customer's id and whether the name matched; the phone is compared with
that customer's and not stored; the code only as a keyed digest.

The limits (failures per WeChat account and per customer, codes per phone) are the
domain's (`bot.domain.accounts`); their numbers are settings."""
from __future__ import annotations

import hmac
import logging
import math
import re
import secrets

from bot.conversation import Context, Flow, FlowData, Invalid, Reply, Router, Step
from bot.conversation.flow import PARENT
from bot.conversation.intents import normalize, yes_no
from bot.domain import accounts, notify, privacy
from bot.domain.broadcasts import sync_user
from bot.domain.identity import (compact, is_valid_phone, mask_id_number, mask_name, mask_phone,
                                 normalize_phone, plausible_name, typed_id_number,
                                 validate_id_number)
from bot.infra.texts import render
from menus import VOCABULARY, Key
from models import Customer

log = logging.getLogger(__name__)
router = Router(VOCABULARY)

RESEND = ("重发", "重新发送")
_CODE = re.compile(r"[0-9]{6}")  # the SMS code's shape


def rules_of(ctx: Context) -> accounts.BindRules:
    return accounts.BindRules.of(ctx.services.settings, ctx.services.rules)


def _secret(ctx: Context) -> str:
    return ctx.services.settings.secret_key


def _minutes(ctx: Context, when) -> int:
    return max(1, math.ceil((when - ctx.now).total_seconds() / 60))


# --- Lock-out ------------------------------------------------------------------------------


def locked_until(ctx: Context):
    return accounts.openid_locked_until(ctx.conn, ctx.openid, ctx.now)


def _locked(ctx: Context, until) -> Invalid:
    return Invalid("binding/locked", end=True, minutes=_minutes(ctx, until), until=until)


def fail(ctx: Context, template: str, *, goto: str | None = None,
         customer_id: int | None = None) -> Invalid:
    """Count one failure of this WeChat account, and with `customer_id` one against that
    customer too; the last one allowed locks binding and ends the flow."""
    rules = rules_of(ctx)
    mine = accounts.count_openid_failure(ctx.conn, ctx.openid, ctx.now, rules)
    theirs = (accounts.count_customer_failure(ctx.conn, customer_id, ctx.now, rules)
              if customer_id else None)
    locks = [f.locked_until for f in (mine, theirs) if f is not None and f.locked_until]
    if locks:
        log.warning("binding locked for %s…%s", ctx.openid[:6],
                    f" and customer {customer_id}" if theirs and theirs.locked_until else "")
        return _locked(ctx, max(locks))
    left = min(f.left for f in (mine, theirs) if f is not None)
    return Invalid(template, goto=goto, left=left)


def _customer_lock(ctx: Context, customer_id: int) -> Invalid | None:
    until = accounts.customer_locked_until(ctx.conn, customer_id, ctx.now)
    if until is None:
        return None
    return Invalid("binding/customer_locked", end=True, minutes=_minutes(ctx, until),
                   until=until)


# --- Steps -----------------------------------------------------------------------------------


class BindingData(FlowData):
    # Each step's answer is only a mark that it was answered (True); what was typed is not kept.
    consent: bool | None = None  # agreed to the privacy notice (PIPL) before any question
    name: bool | str | None = None
    name_mac: str = ""  # keyed digest of the typed name, until the ID number is matched
    id_number: bool | str | None = None
    customer_id: int = 0  # the customer the ID number matched (0: none)
    name_ok: bool = False
    phone: bool | str | None = None
    code: str | None = None
    code_hash: str = ""
    code_sent_at: float = 0.0
    code_fresh: bool = False  # a code was sent by this very message


def _name_digest(ctx: Context, name: str) -> str:
    return accounts.keyed_digest(_secret(ctx), "name", compact(name).casefold())


def parse_name(ctx: Context, text: str, data: BindingData) -> bool:
    name = text.strip()
    if not plausible_name(name):
        raise Invalid("binding/bad_name", said=name if len(name) <= 12 else "")
    data.name_mac = _name_digest(ctx, name)
    return True


def parse_id_number(ctx: Context, text: str, data: BindingData) -> bool:
    try:
        number = validate_id_number(typed_id_number(text), today=ctx.today)
    except ValueError:
        raise Invalid("binding/bad_id_number", name=text.strip() if plausible_name(text) else "") from None
    customer = accounts.customer_by_id_number(ctx.session, number)
    matched = customer.id if customer else 0
    if data.name_mac:
        data.name_ok = customer is not None and hmac.compare_digest(
            data.name_mac, _name_digest(ctx, customer.name))
    elif matched != data.customer_id:  # back at this step: the name was checked for another
        data.name_ok = False
    data.customer_id, data.name_mac = matched, ""
    return True


def _customer(ctx: Context, data: BindingData) -> Customer | None:
    return ctx.session.get(Customer, data.customer_id) if data.customer_id else None


def parse_phone(ctx: Context, text: str, data: BindingData) -> bool:
    phone = normalize_phone(text)
    if not is_valid_phone(phone):
        raise Invalid("binding/bad_phone")
    customer = _customer(ctx, data)
    if customer is None or not data.name_ok or normalize_phone(customer.phone) != phone:
        log.info("binding mismatch for %s… (customer %s)", ctx.openid[:6], data.customer_id or "-")
        raise fail(ctx, "binding/mismatch", goto="name")
    locked = _customer_lock(ctx, customer.id)
    if locked:
        raise locked
    if accounts.bound_elsewhere(ctx.session, customer, ctx.openid):
        failure = accounts.count_customer_failure(ctx.conn, customer.id, ctx.now, rules_of(ctx))
        if failure.locked_until:
            log.warning("binding of customer %s locked after attempts from other accounts",
                        customer.id)
        raise Invalid("binding/bound_elsewhere", end=True)
    if ctx.services.sms.sends_codes:
        send_code(ctx, data, customer.phone, end=True)
    return True


def send_code(ctx: Context, data: BindingData, phone: str, *, end: bool) -> None:
    """Send a new code, within the phone's hourly and daily limits."""
    rules = rules_of(ctx)
    wait = accounts.claim_code_sms(ctx.conn, _secret(ctx), normalize_phone(phone), ctx.now, rules)
    if wait:
        log.warning("binding code for %s… refused: phone over its SMS limit", ctx.openid[:6])
        raise Invalid("binding/sms_limit", end=end, minutes=max(1, math.ceil(wait / 60)))
    code = f"{secrets.randbelow(10**6):06d}"
    data.code_hash = _code_digest(ctx, code)
    data.code_sent_at = ctx.now.timestamp()
    data.code_fresh = True
    notify.binding_code(ctx.session, phone, code, rules.code_ttl_seconds // 60, ctx.now,
                        key=f"bindcode:{ctx.openid}:{secrets.token_hex(8)}")


def parse_code(ctx: Context, text: str, data: BindingData) -> str:
    data.code_fresh = False
    rules = rules_of(ctx)
    customer = _customer(ctx, data)
    if customer is None:  # gone since the phone step
        raise Invalid("binding/mismatch", goto="name", left=rules.max_failures)
    locked = _customer_lock(ctx, customer.id)
    if locked:
        raise locked
    elapsed = ctx.now.timestamp() - data.code_sent_at
    if text.strip() in RESEND:
        if elapsed < rules.resend_after_seconds:
            raise Invalid("binding/resend_wait",
                          seconds=max(1, math.ceil(rules.resend_after_seconds - elapsed)))
        send_code(ctx, data, customer.phone, end=False)
        data.code_fresh = False  # the reason says it was sent; the prompt need not repeat it
        raise Invalid("binding/resent", phone=mask_phone(customer.phone))
    if elapsed > rules.code_ttl_seconds:
        raise Invalid("binding/code_expired")
    code = compact(text)
    if not _CODE.fullmatch(code):
        raise Invalid("binding/bad_code_format")
    if not hmac.compare_digest(_code_digest(ctx, code), data.code_hash):
        raise fail(ctx, "binding/wrong_code", customer_id=customer.id)
    return "ok"


def looks_like_phone(text: str) -> bool:
    """The phone step's answer shape (its parser counts failures and sends the code)."""
    return is_valid_phone(normalize_phone(text))


def looks_like_code(text: str) -> bool:
    """The code step's answer shape: six digits, or 重发 (its parser counts failures)."""
    return text in RESEND or _CODE.fullmatch(compact(text)) is not None


def _code_digest(ctx: Context, code: str) -> str:
    return accounts.keyed_digest(_secret(ctx), "code", f"{ctx.openid}:{code}")


def _code_prompt(ctx: Context, data: BindingData) -> dict:
    customer = _customer(ctx, data)
    return {"phone": mask_phone(customer.phone if customer else ""), "sent": data.code_fresh,
            "minutes": rules_of(ctx).code_ttl_seconds // 60}


def parse_consent(ctx: Context, text: str, data: BindingData) -> bool:
    """同意 (or any yes word) before the first question; no ends binding politely."""
    norm = normalize(text)
    answer = True if norm in ("同意", "我同意") else False if norm in ("不同意", "拒绝") else yes_no(text)
    if answer is None:
        raise Invalid("binding/consent_again", again=False)  # a short re-ask, not the notice again
    if not answer:
        raise Invalid("binding/consent_declined", end=True)
    return True


def begin(ctx: Context) -> dict | Reply:
    customer = ctx.customer
    if customer is not None:
        return ctx.say("binding/already", name=mask_name(customer.name))
    until = locked_until(ctx)
    if until:
        return ctx.say("binding/still_locked", until=until)
    return {}


def finish(ctx: Context, data: BindingData) -> Reply:
    customer = _customer(ctx, data)
    if customer is None:
        raise Invalid("binding/mismatch", goto="name", left=rules_of(ctx).max_failures)
    try:
        accounts.bind(ctx.session, ctx.openid, customer, ctx.now)
        retag_after_commit(ctx)  # the new customer joins their tier's tag
    except accounts.BoundElsewhere:
        raise Invalid("binding/bound_elsewhere", end=True) from None
    log.info("bound %s… to customer %s", ctx.openid[:6], mask_id_number(customer.id_number))
    # Nested (asked for by 预约洁牙 …): what was asked for follows, not the menu's hint.
    return ctx.say("binding/done", customer=customer, going_on=getattr(data, PARENT, None) is not None)


binding = router.flow(Flow(
    name="binding", title="身份绑定",
    steps=[
        Step("consent", "binding/privacy", parse_consent, reask="binding/consent_again",
             context=lambda ctx, data: {"url": ctx.services.settings.privacy_policy_url}),
        Step("name", "binding/ask_name", parse_name, free_text=True),
        Step("id_number", "binding/ask_id_number", parse_id_number, digits=True),
        Step("phone", "binding/ask_phone", parse_phone, digits=True, takes=looks_like_phone),
        Step("code", "binding/ask_code", parse_code, digits=True, takes=looks_like_code,
             when=lambda ctx, data: ctx.services.sms.sends_codes, context=_code_prompt),
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


UNBIND_PHRASE = "确认解除"


def _confirm(ctx: Context, text: str, data: UnbindData) -> bool:
    """Unbinding destroys the binding and what the bot stored: it takes only its distinct
    phrase 确认解除 (docs/programme.md); a bare yes (确认, 是) asks again, a no word keeps everything."""
    if normalize(text) == UNBIND_PHRASE:
        return True
    if yes_no(text) is False:
        raise Invalid("binding/unbind_kept", end=True)
    raise Invalid("binding/unbind_confirm_again")


def _unbind_begin(ctx: Context) -> dict | Reply:
    customer = ctx.customer
    if customer is None:
        return ctx.say("binding/not_bound")
    return {"name": mask_name(customer.name)}


def _unbind_finish(ctx: Context, data: UnbindData) -> Reply:
    customer_id = ctx.account.customer_id
    accounts.unbind(ctx.session, ctx.openid)
    # The flow state is cleared on finish; the rest of what the bot stored in chat here.
    privacy.erase_chat_data(ctx.session, ctx.openid, customer_id)
    retag_after_commit(ctx)  # unbinding removes the user's tier tag
    return ctx.say("binding/unbound")


def retag_after_commit(ctx: Context) -> None:
    """Put the user's WeChat tier tag in step once this message has committed (on the WeChat
    lane: never holds up the reply)."""
    services, openid = ctx.services, ctx.openid
    ctx.after_commit.append(lambda: services.submit(
        lambda: sync_user(services.engine, services.wechat, services.rules, openid),
        "tier tag sync"))


unbinding = router.flow(Flow(
    name="unbinding", title="解除绑定",
    steps=[Step("confirm", "binding/unbind_confirm", _confirm,
                context=lambda ctx, data: {"name": data.name})],
    begin=_unbind_begin, finish=_unbind_finish, model=UnbindData,
))


@router.key(Key.UNBIND)
def start_unbinding(ctx: Context) -> Reply:
    return ctx.start(unbinding)


@router.when_unbound
def lead_into_binding(ctx: Context) -> Reply:
    """A personal key (menus.PERSONAL) from a user with no bound customer: binding first,
    nested, so that the key is served once binding has finished."""
    started = ctx.start(binding, parent=ctx.key)
    return Reply(render("binding/needed") + "\n" + started.text)

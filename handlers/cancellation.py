"""取消预约 by chat: which booking, its terms (free until the deadline, else counted: asked
with 「确认取消」), then the cancellation. Whether a booking can be cancelled at all is
`bookings.check_cancellation`; the terms are `bookings.cancellation_terms`.

Which booking is meant is read from what the customer says, at the entry (我爸的体检不去了,
取消1月3号的预约) and at the step that lists them (父母, 1月3号的, 明年的): `said_of` reads
the service, the person, the date or the year, `Said.fits` judges a booking by them.
Also here: 改期, which is a cancellation and a new booking (there is no change of date), and
a booking declined (不想约体检), which starts nothing."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from bot.conversation import Choice, Context, Flow, FlowData, Invalid, Option, Reply, Router, Step
from bot.conversation.flow import name_core, offered_of
from bot.conversation.intents import normalize, yes_no
from bot.domain import booking_store as store
from bot.domain import notify
from bot.domain.bookings import (BOOKING_NO, calendar, cancellation_terms, check_cancellation,
                                 service_date, upcoming_first)
from bot.domain.dates import normalize as date_text
from bot.domain.dates import parse_date
from bot.domain.vocab import RELATION_WORDS
from bot.infra.texts import render
from handlers.booking import WHO, bound_customer, label, stored, who
from menus import SERVICE_OF, VOCABULARY, Key
from models import Customer

router = Router(VOCABULARY)

LATE_PHRASE = "确认取消"


def terms(ctx: Context, booking) -> tuple[bool, Any]:
    """(free, deadline) of cancelling `booking` now, under rules.toml's cut-off and grace."""
    rules = ctx.services.rules
    return cancellation_terms(booking, ctx.now, calendar(), cutoff=rules.booking.cancel_cutoff,
                              grace_hours=rules.booking.confirm_grace_hours)


class CancelData(FlowData):
    which: str | None = None  # booking number
    free: bool | None = None  # the terms the customer was shown
    confirm: bool | None = None
    among: list[str] | None = None  # the bookings what was said fits (several): the ones listed
    note: str = ""  # said once, before the next prompt (what was said fits several, or none)
    rebook: bool = False  # 改期: once cancelled, the customer is told how to book again


# --- What the customer says about which booking they mean --------------------------------

SELF = "self"
SELF_WORDS = ("本人", "我自己", "自己")
# A date said inside a sentence (1月3号的, 取消12月18日的体检, 2027-01-03), after the date
# parser's normalising (十二月十八号 → 12月18号); a day word (明天, 下周三) is the date parser's.
_MONTH_DAY = re.compile(r"(?:(\d{4})[年\-/.])?(\d{1,2})[月\-/.](\d{1,2})(?:[日号]|(?!\d))|"
                        r"(?<![\d月])(\d{1,2})[日号]|(\d{1,2})月份?(?!\d)")
_DAY_WORD = re.compile(r"大后天|后天|明天|今天|(?:这|本|下下?)?个?(?:周|星期|礼拜)[一二三四五六日天]")
_YEAR = re.compile(r"(\d{4})年(?!\d)|(今年)|(明年)")


@dataclass(frozen=True)
class Said:
    """What a customer said about which booking they mean; every part may be missing."""

    service: str | None = None  # a code of rules.toml
    relation: str | None = None  # SELF, or a family relation (spouse, parent, child)
    sex: str | None = None  # the sex the relation word says (爸: M), or None
    year: int | None = None
    month: int | None = None
    day: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def fits(self, booking, family: dict) -> bool:
        """Whether `booking` is one the customer may mean (`family`: members by id)."""
        day = service_date(booking)
        if self.service is not None and booking.service != self.service:
            return False
        if any(want is not None and want != got for want, got in
               ((self.year, day.year), (self.month, day.month), (self.day, day.day))):
            return False
        if self.relation == SELF:
            return booking.family_member_id is None
        if self.relation is not None:
            member = family.get(booking.family_member_id)
            return member is not None and member.relation == self.relation and \
                self.sex in (None, member.sex)
        return True

    def shown(self, ctx: Context) -> dict:
        """The parts as the templates name them (booking/cancel/_said.j2)."""
        parts = asdict(self)
        parts["service"] = ctx.services.rules.service(self.service).name if self.service else None
        return parts


def said_of(ctx: Context, text: str) -> Said:
    """The service, person, date and year a message names (我爸的体检, 1月3号的, 明年的)."""
    norm = normalize(text)
    relation = sex = None
    hit = RELATION_WORDS.get(name_core(text)) or next(
        ((rel, sx) for word, rel, sx in WHO if word in norm), None)
    if hit is not None:
        relation, sex = hit[0].value, hit[1]
    elif name_core(text) == "我" or any(word in norm for word in SELF_WORDS):
        relation = SELF
    year = month = day = None
    dated = date_text(text)
    if m := _YEAR.search(dated):
        year = int(m[1]) if m[1] else ctx.today.year + (1 if m[3] else 0)
    if m := _MONTH_DAY.search(dated):
        if m[2]:
            year, month, day = int(m[1]) if m[1] else year, int(m[2]), int(m[3])
        else:
            day, month = (int(m[4]), None) if m[4] else (None, int(m[5]))
    elif m := _DAY_WORD.search(dated):
        parsed = parse_date(m[0], ctx.now, calendar())
        if parsed.ok:
            year, month, day = parsed.date.year, parsed.date.month, parsed.date.day
    return Said(service=VOCABULARY.service_named(text), relation=relation, sex=sex, year=year,
                month=month, day=day)


def bookings_said(ctx: Context, said: Said, listed: list) -> list:
    """The bookings of `listed` that fit what was said."""
    family = {p.family_member_id: p for p in stored(ctx).family}
    return [b for b in listed if said.fits(b, family)]


def _own_active(ctx: Context, customer: Customer) -> list:
    """The bookings the customer may still cancel, soonest first (as 我的预约 lists them)."""
    return upcoming_first([b for b in store.bookings_of(ctx.session, customer.id, limit=50)
                           if check_cancellation(b, ctx.now) is None], ctx.today)


def which_options(ctx: Context, data: CancelData) -> list[Option]:
    """The bookings the customer may cancel; only the ones what was said fits, when it fits
    several (`CancelData.among`)."""
    customer = bound_customer(ctx)
    rules = ctx.services.rules
    active = _own_active(ctx, customer)
    among = [b for b in active if b.number in (data.among or ())]
    return [Option(b.number, label("booking", number=b.number, service=rules.service(b.service).name),
                   note=label("booking_note", day=service_date(b), who=who(ctx, customer, b)),
                   words=(b.number,))
            for b in among or active]


def which_context(ctx: Context, data: CancelData) -> dict:
    note, data.note = data.note, ""
    return {"note": note}


def _booking(ctx: Context, number: str):
    """The customer's own booking with this number, or an Invalid that ends the flow."""
    booking = store.booking_by_number(ctx.session, number)
    if booking is None or booking.customer_id != bound_customer(ctx).id:
        raise Invalid("booking/cancel/not_found", end=True, number=number)
    why = check_cancellation(booking, ctx.now)
    if why is not None:
        raise Invalid(f"booking/cancel/{why}", end=True, number=number,
                      status=render("booking/status", status=booking.status))
    return booking


def parse_which(ctx: Context, text: str, data: CancelData) -> str | None:
    """The step's own parser: the one listed booking what was said fits (父母, 1月3号的,
    明年的, 洁牙那个); several: only those are listed again, to choose from; none: said so.
    None when the text names no service, person, date or year."""
    said = said_of(ctx, text)
    if not said:
        return None
    offered = {code for code, *_ in offered_of(data)}
    hits = bookings_said(ctx, said, [b for b in _own_active(ctx, bound_customer(ctx))
                                     if b.number in offered])
    if len(hits) == 1:
        return hits[0].number
    if hits:
        data.among = [b.number for b in hits]
        raise Invalid("booking/cancel/several", count=len(hits), said=said.shown(ctx))
    data.among = None
    raise Invalid("booking/cancel/no_match", said=said.shown(ctx))


def check_which(ctx: Context, code: str, data: CancelData) -> str:
    _booking(ctx, code)
    data.among = None  # chosen: 返回 lists them all again
    return code


def cancel_context(ctx: Context, data: CancelData) -> dict:
    booking = store.booking_by_number(ctx.session, data.which)
    free, deadline = terms(ctx, booking)
    data.free = free
    rules = ctx.services.rules
    summary = render("booking/cancel/summary", number=booking.number,
                     service=rules.service(booking.service).name,
                     person=who(ctx, bound_customer(ctx), booking), date=service_date(booking))
    note, data.note = data.note, ""
    return dict(summary=summary, free=free, deadline=deadline, year=booking.quota_year,
                service=rules.service(booking.service).name, note=note)


def parse_cancel_confirm(ctx: Context, text: str, data: CancelData) -> bool:
    """A free cancellation takes a yes; a late (counted) one only 「确认取消」."""
    late_phrase = normalize(text) == LATE_PHRASE
    if data.free:
        if yes_no(text) is True or late_phrase:
            return True
        if yes_no(text) is False:
            raise Invalid("booking/cancel/kept", end=True)
        raise Invalid("booking/cancel/confirm_free_again")
    if late_phrase:
        return True
    if yes_no(text) is False:
        raise Invalid("booking/cancel/kept", end=True)
    raise Invalid("booking/cancel/confirm_late_again")


def cancel_finish(ctx: Context, data: CancelData) -> Reply:
    rules = ctx.services.rules
    booking = _booking(ctx, data.which)
    free, _ = terms(ctx, booking)
    if data.free and not free:  # the free deadline passed while the customer was deciding
        raise Invalid("booking/cancel/terms_changed", goto="confirm")
    free = store.cancel_booking(ctx.session, booking, ctx.now, calendar(), rules)
    notify.booking_cancelled(ctx.session, booking, ctx.now, counted=not free)
    return ctx.say("booking/cancel/cancelled_free" if free else "booking/cancel/cancelled_late",
                   number=booking.number, year=booking.quota_year,
                   service=rules.service(booking.service).name,
                   rebook=booking_label(booking.service) if data.rebook and free else None)


def booking_label(service_code: str) -> str | None:
    """What the customer replies to book `service_code` again (预约洁牙)."""
    key = next((k for k, code in SERVICE_OF.items() if code == service_code), None)
    return VOCABULARY.label.get(key)


class CancelConfirm(Step):
    """Free: a yes; late (counted): only 「确认取消」."""

    def ask(self, ctx: Context, data: Any) -> str:
        values = cancel_context(ctx, data)
        return render("booking/cancel/confirm_free" if values["free"]
                      else "booking/cancel/confirm_late", **values)


cancel_flow = router.flow(Flow(
    name="cancel_booking", title="取消预约",
    steps=[Choice("which", "booking/cancel/ask_which", options=which_options,
                  parse=parse_which, check=check_which, context=which_context),
           CancelConfirm("confirm", "booking/cancel/confirm_free", parse_cancel_confirm)],
    finish=cancel_finish, model=CancelData,
))


@router.key(Key.CANCEL_BOOKING)
def cancel(ctx: Context) -> Reply:
    """取消预约, and a command that names the booking (取消体检, 我爸的体检不去了, 取消1月3号的
    预约, YY2612020001)."""
    return start_cancel(ctx, said_of(ctx, ctx.text or ""))


def start_cancel(ctx: Context, said: Said, **initial: Any) -> Reply:
    """The cancellation of the booking a number names, or of the one booking `said` fits,
    at its terms; several it fits are listed to choose from; none: said so, with every
    booking that may be cancelled."""
    customer = ctx.customer  # a personal key: the router served it to a bound customer
    m = BOOKING_NO.search(ctx.text or "")
    if m:
        number = m.group(0).upper()
        try:
            _booking(ctx, number)
        except Invalid as exc:
            return Reply(exc.render())
        return ctx.start(cancel_flow, which=number, **initial)
    active = _own_active(ctx, customer)
    if not active:
        return ctx.say("booking/cancel/none")
    hits = bookings_said(ctx, said, active) if said else active
    if len(hits) == 1:
        return ctx.start(cancel_flow, which=hits[0].number, **initial)
    if not hits:
        initial["note"] = render("booking/cancel/no_match", said=said.shown(ctx))
    elif said:
        initial.update(among=[b.number for b in hits],
                       note=render("booking/cancel/several", count=len(hits),
                                   said=said.shown(ctx)))
    return ctx.start(cancel_flow, **initial)


@router.key(Key.RESCHEDULE)
def reschedule(ctx: Context) -> Reply:
    """改期 (我想改个日子, 帮我改期, 体检往后推一周): a booking's date is not changed, it is
    cancelled and booked again; so said, and the cancellation starts (of the booking the
    service or person said names: a date said is the new one), with how to book again once
    it is done."""
    said = replace(said_of(ctx, ctx.text or ""), year=None, month=None, day=None)
    started = start_cancel(ctx, said, rebook=True)
    return Reply(f"{render('booking/cancel/reschedule')}\n{started.text}")


@router.key(Key.NO_BOOKING)
def no_booking(ctx: Context) -> Reply:
    """不想约体检, 不用预约了: nothing starts; how to book later, or cancel one booked."""
    service = VOCABULARY.service_named(ctx.text or "")
    return ctx.say("booking/cancel/no_booking", label=booking_label(service) if service else None)

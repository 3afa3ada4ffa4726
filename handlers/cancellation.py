"""取消预约 by chat: which booking, its terms (free until the deadline, else counted: asked
with 「确认取消」), then the cancellation. Whether a booking can be cancelled at all is
`bookings.check_cancellation`; the terms are `bookings.cancellation_terms`."""
from __future__ import annotations

from typing import Any

from bot.conversation import Choice, Context, Flow, FlowData, Invalid, Option, Reply, Router, Step
from bot.conversation.intents import normalize, yes_no
from bot.domain import booking_store as store
from bot.domain import notify
from bot.domain.bookings import (BOOKING_NO, calendar, cancellation_terms, check_cancellation,
                                 service_date, upcoming_first)
from bot.infra.texts import render
from handlers.booking import booking_named, bound_customer, label, who
from menus import VOCABULARY, Key
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


def _own_active(ctx: Context, customer: Customer) -> list:
    """The bookings the customer may still cancel, soonest first (as 我的预约 lists them)."""
    return upcoming_first([b for b in store.bookings_of(ctx.session, customer.id, limit=50)
                           if check_cancellation(b, ctx.now) is None], ctx.today)


def which_options(ctx: Context, data: CancelData) -> list[Option]:
    customer = bound_customer(ctx)
    rules = ctx.services.rules
    return [Option(b.number, label("booking", number=b.number, service=rules.service(b.service).name),
                   note=label("booking_note", day=service_date(b), who=who(ctx, customer, b)),
                   words=(b.number,))
            for b in _own_active(ctx, customer)]


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
    return booking_named(ctx, text, data, _own_active(ctx, bound_customer(ctx)))


def check_which(ctx: Context, code: str, data: CancelData) -> str:
    _booking(ctx, code)
    return code


def cancel_context(ctx: Context, data: CancelData) -> dict:
    booking = store.booking_by_number(ctx.session, data.which)
    free, deadline = terms(ctx, booking)
    data.free = free
    rules = ctx.services.rules
    summary = render("booking/cancel/summary", number=booking.number,
                     service=rules.service(booking.service).name,
                     person=who(ctx, bound_customer(ctx), booking), date=service_date(booking))
    return dict(summary=summary, free=free, deadline=deadline, year=booking.quota_year,
                service=rules.service(booking.service).name)


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
                   service=rules.service(booking.service).name)


class CancelConfirm(Step):
    """Free: a yes; late (counted): only 「确认取消」."""

    def ask(self, ctx: Context, data: Any) -> str:
        values = cancel_context(ctx, data)
        return render("booking/cancel/confirm_free" if values["free"]
                      else "booking/cancel/confirm_late", **values)


cancel_flow = router.flow(Flow(
    name="cancel_booking", title="取消预约",
    steps=[Choice("which", "booking/cancel/ask_which", options=which_options,
                  parse=parse_which, check=check_which),
           CancelConfirm("confirm", "booking/cancel/confirm_free", parse_cancel_confirm)],
    finish=cancel_finish, model=CancelData,
))


@router.key(Key.CANCEL_BOOKING)
def cancel(ctx: Context) -> Reply:
    customer = ctx.customer  # a personal key: the router served it to a bound customer
    m = BOOKING_NO.search(ctx.text or "")
    if m:
        number = m.group(0).upper()
        try:
            _booking(ctx, number)
        except Invalid as exc:
            return Reply(exc.render())
        return ctx.start(cancel_flow, which=number)
    active = _own_active(ctx, customer)
    if not active:
        return ctx.say("booking/cancel/none")
    if len(active) == 1:
        return ctx.start(cancel_flow, which=active[0].number)
    return ctx.start(cancel_flow)

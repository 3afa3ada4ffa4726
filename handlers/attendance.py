"""我的预约 (the customer's bookings, soonest first, with what each allows), a date typed
alone (to book that day, or to see the bookings?) and 确认, the answer to the day-before
reminder (tomorrow's booking marked attendance-confirmed)."""
from __future__ import annotations

from datetime import timedelta

from bot.conversation import Choice, Context, Flow, FlowData, Invalid, Option, Reply, Router
from bot.domain import booking_store as store
from bot.domain import notify
from bot.domain.bookings import calendar, check_cancellation, service_date, upcoming_first
from bot.domain.dates import parse_date
from handlers.booking import booking_named, bound_customer, stored, who
from handlers.cancellation import booking_label, terms
from handlers.tiers import held_tier
from menus import VOCABULARY, Key
from models import Customer, Institution

router = Router(VOCABULARY)


@router.key(Key.MY_BOOKINGS)
def my_bookings(ctx: Context) -> Reply:
    customer = ctx.customer  # a personal key: the router served it to a bound customer
    rules = ctx.services.rules
    items = []
    for b in upcoming_first(store.bookings_of(ctx.session, customer.id), ctx.today):
        cancellable = check_cancellation(b, ctx.now) is None
        free, until = terms(ctx, b) if cancellable else (False, None)
        place = stored(ctx).place_by_id(b.institution_id) if b.institution_id else None
        items.append(dict(number=b.number, service=rules.service(b.service).name,
                          person=who(ctx, customer, b), date=service_date(b),
                          time=b.confirmed_time, status=b.status,
                          place=place.name if place else "", cancellable=cancellable,
                          free=cancellable and free, free_until=until if cancellable and free else None,
                          attended_at=b.attendance_confirmed_at,
                          cancel_reason=b.cancel_reason))
    if not items:
        return ctx.say("booking/no_bookings")
    return ctx.say("booking/my_bookings", items=items)


@router.key(Key.DAY_SAID)
def day_said(ctx: Context) -> Reply:
    """A date typed alone outside any flow (12月18日): asked back, to book that day (each
    service the held tier books, the date carried along) or to see the bookings; a day
    past only offers the bookings; an unbound user is told to bind first."""
    parsed = parse_date(ctx.text, ctx.now, calendar())
    customer = ctx.customer if ctx.account and ctx.account.customer_id else None
    books = []
    if customer is not None and parsed.ok:
        tier = held_tier(ctx, customer).code
        books = [booking_label(s.code) for s in ctx.services.rules.bookable_services_for(tier)]
    return ctx.say("booking/day_said", day=parsed.date, said=ctx.text.strip()[:20],
                   bound=customer is not None, books=[b for b in books if b],
                   mine=VOCABULARY.label[Key.MY_BOOKINGS], bind=VOCABULARY.label[Key.BIND])


# --- 确认: the answer to the day-before reminder --------------------------------------------


def _tomorrow(ctx: Context, customer: Customer) -> list:
    """The customer's confirmed bookings for tomorrow (the reminder is for these), soonest
    first."""
    tomorrow = ctx.today + timedelta(days=1)
    return upcoming_first([b for b in store.bookings_of(ctx.session, customer.id, limit=50)
                           if b.status == "confirmed" and b.confirmed_date == tomorrow],
                          ctx.today)


def _unanswered(ctx: Context, customer: Customer) -> list:
    """Tomorrow's bookings whose attendance is not confirmed yet (the ones still to choose)."""
    return [b for b in _tomorrow(ctx, customer) if b.attendance_confirmed_at is None]


def _attend(ctx: Context, booking) -> Reply:
    if not notify.confirm_attendance(ctx.session, booking, ctx.now):
        return ctx.say("booking/attendance/already")
    place = ctx.session.get(Institution, booking.institution_id) if booking.institution_id else None
    return ctx.say("booking/attendance/confirmed", number=booking.number,
                   service=ctx.services.rules.service(booking.service).name,
                   when=booking.confirmed_time or "", place=place.name if place else "")


class AttendData(FlowData):
    which: str | None = None


def attend_options(ctx: Context, data: AttendData) -> list[Option]:
    customer = bound_customer(ctx)
    rules = ctx.services.rules
    return [Option(b.number, f"{b.number} {rules.service(b.service).name}",
                   note=f"{b.confirmed_time or ''}，{who(ctx, customer, b)}", words=(b.number,))
            for b in _unanswered(ctx, customer)]


def parse_attend(ctx: Context, text: str, data: AttendData) -> str | None:
    return booking_named(ctx, text, data, _unanswered(ctx, bound_customer(ctx)))


def attend_finish(ctx: Context, data: AttendData) -> Reply:
    booking = store.booking_by_number(ctx.session, data.which)
    if booking is None or booking.customer_id != bound_customer(ctx).id:
        raise Invalid("booking/cancel/not_found", end=True, number=data.which)
    return _attend(ctx, booking)


attend_flow = router.flow(Flow(
    name="confirm_attendance", title="确认到场",
    steps=[Choice("which", "booking/attendance/ask_which", options=attend_options,
                  parse=parse_attend)],
    finish=attend_finish, model=AttendData,
))


@router.key(Key.CONFIRM_ATTENDANCE)
def confirm_attendance(ctx: Context) -> Reply:
    """确认 after the day-before reminder: tomorrow's booking is marked attendance-confirmed
    (staff see it); with several bookings tomorrow not confirmed yet, the bot asks which
    (one already confirmed is not offered again)."""
    customer = ctx.customer  # a personal key: the router served it to a bound customer
    tomorrow = _tomorrow(ctx, customer)
    if not tomorrow:
        return ctx.say("booking/attendance/none")
    pending = _unanswered(ctx, customer)
    if len(pending) <= 1:  # one to confirm, or all confirmed already (said so)
        return _attend(ctx, (pending or tomorrow)[0])
    return ctx.start(attend_flow)

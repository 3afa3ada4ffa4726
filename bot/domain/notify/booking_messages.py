"""A booking's messages: 预约已受理, 预约成功 (with the SMS and, after the reminder hour for
tomorrow, the reminder at once) and 预约已取消."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select as sa_select
from sqlmodel import Session

from bot.domain.bookings import calendar, cancellation_terms
from bot.infra import outbox
from bot.infra.texts import render
from models import Booking, Notification
from bot.domain.notify.channels import sms
from bot.domain.notify.config import (_booking_rules, _day, _facts, _service_name, _starts,
                                      _template, _values, _when_text, config)
from bot.domain.notify.reminders import drop_reminders, reminder


def booking_received(session: Session, booking: Booking, now: datetime) -> list[int]:
    """预约已受理: a template message to the policyholder (sent at once)."""
    f = _facts(session, booking)
    row = _template(session, f, "booking_received", now, f"booking:{booking.id}:received",
                    _values(f), _starts(booking))
    return [r for r in (row,) if r]


def booking_confirmed(session: Session, booking: Booking, now: datetime) -> list[int]:
    """预约成功: template message and SMS (service, institution, address, date and time, the ID
    card; fees for 专家门诊/特种检查; until when it can be cancelled free). A booking
    confirmed for tomorrow after the reminder hour gets its reminder at once."""
    f = _facts(session, booking)
    fees = booking.service in _booking_rules().customer_pays_fees
    key = f"booking:{booking.id}:confirmed:{_day(booking)}:{booking.confirmed_time}"
    note = render("notify/confirmed_note", fees=fees)
    free_until = _free_until(booking, now)  # an instant: a time field shows it in TIMEZONE
    rows = [_template(session, f, "booking_confirmed", now, key,
                      _values(f, note=note, free_until=free_until), _starts(booking))]
    if f.customer is not None and f.customer.phone:
        params = [_service_name(booking.service), _when_text(booking),
                  f.place.name if f.place else "", f.place.address if f.place else "",
                  booking.number]
        text = render("sms/booking_confirmed", service=params[0], when=params[1],
                      place=params[2], address=params[3], number=booking.number, fees=fees,
                      free_until=free_until)
        rows.append(sms(session, f.customer.phone, "booking_confirmed", params, now,
                        key=key + ":sms", expires_at=_starts(booking),
                        _text=text, _customer_id=booking.customer_id, _booking_id=booking.id))
    here = now.astimezone(config().tz)
    if (booking.confirmed_date == here.date() + timedelta(days=1) and config().reminder_time
            and here.time() >= config().reminder_time and booking.reminded_at is None):
        rows += reminder(session, booking, now)
    return [r for r in rows if r]


def _free_until(booking: Booking, now: datetime) -> datetime | None:
    """Until when (exclusive) the confirmed booking can be cancelled free: 12:00 on the last
    working day before the service, or the grace period of a late confirmation (DOMAIN);
    None when it no longer can."""
    try:
        rules = config().rules
        free, deadline = cancellation_terms(booking, now, calendar(),
                                            cutoff=rules.booking.cancel_cutoff,
                                            grace_hours=rules.booking.confirm_grace_hours)
    except Exception:  # no rules configured (a bare script): say nothing rather than wrong
        return None
    if not free or deadline is None:
        return None
    return deadline


def booking_cancelled(session: Session, booking: Booking, now: datetime, *, counted: bool,
                      by_staff: bool = False, reason: str | None = None) -> list[int]:
    """预约已取消 (whether the use was counted). Queued reminders of the booking are dropped.
    A cancellation by staff goes by SMS too when the confirmation did (the customer may rely
    on the SMS alone)."""
    drop_reminders(session, booking, "booking cancelled")
    f = _facts(session, booking)
    note = render("notify/cancelled_note", counted=counted, by_staff=by_staff, reason=reason)
    key = f"booking:{booking.id}:cancelled"
    rows = [_template(session, f, "booking_cancelled", now, key, _values(f, note=note),
                      now + timedelta(days=2))]
    if by_staff and f.customer is not None and f.customer.phone and _confirmed_by_sms(session, booking):
        params = [_service_name(booking.service), _when_text(booking), booking.number,
                  reason or ""]
        text = render("sms/booking_cancelled", service=params[0], when=params[1],
                      number=booking.number, reason=reason)
        rows.append(sms(session, f.customer.phone, "booking_cancelled", params, now,
                        key=key + ":sms", expires_at=now + timedelta(days=2), _text=text,
                        _customer_id=booking.customer_id, _booking_id=booking.id))
    return [r for r in rows if r]


def _confirmed_by_sms(session: Session, booking: Booking) -> bool:
    c = Notification.__table__.c
    return session.execute(sa_select(c.id).where(
        c.booking_id == booking.id, c.channel == outbox.SMS,
        c.dedupe_key.like(f"booking:{booking.id}:confirmed:%:sms")).limit(1)).first() is not None

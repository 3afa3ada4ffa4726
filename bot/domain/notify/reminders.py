"""The day-before reminder (template message and SMS), the sweep that queues the due ones,
and the customer's 确认 on a reminder."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import and_, update
from sqlmodel import Session, select

from bot.domain.vocab import BookingStatus
from bot.infra import outbox
from bot.infra.texts import render
from models import Booking, Notification
from bot.domain.notify.channels import sms
from bot.domain.notify.config import _facts, _service_name, _starts, _template, _values, _when_text, config


def drop_reminders(session: Session, booking: Booking, reason: str, *,
                   requeue: bool = False) -> int:
    """Drop the booking's reminders not yet sent. With `requeue` (a re-confirmation), each
    may be queued again with what the booking now says."""
    c = Notification.__table__.c
    return outbox.drop_pending(session, and_(c.booking_id == booking.id,
                                             c.dedupe_key.like(f"reminder:{booking.id}:%")),
                               reason, free_keys=requeue)


def reminder(session: Session, booking: Booking, now: datetime) -> list[int]:
    """The day-before reminder (template message and SMS), once per booking and date; sets
    `booking.reminded_at`. Nothing for a booking that is no longer confirmed."""
    if booking.status != BookingStatus.CONFIRMED or booking.confirmed_date is None:
        return []
    f = _facts(session, booking)
    key = f"reminder:{booking.id}:{booking.confirmed_date}"
    rows = [_template(session, f, "reminder", now, key,
                      _values(f, note=render("notify/reminder_note")), _starts(booking))]
    if f.customer is not None and f.customer.phone:
        params = [_when_text(booking), f.place.name if f.place else "",
                  f.place.address if f.place else "", _service_name(booking.service),
                  booking.number]
        today = now.astimezone(config().tz).date()  # 明天 only when it is tomorrow here
        text = render("sms/reminder", day=booking.confirmed_date, today=today,
                      tomorrow=today + timedelta(days=1), when=booking.confirmed_time or "",
                      place=params[1], address=params[2], service=params[3],
                      number=booking.number)
        rows.append(sms(session, f.customer.phone, "reminder", params, now, key=key + ":sms",
                        expires_at=_starts(booking), _text=text,
                        _customer_id=booking.customer_id, _booking_id=booking.id))
    booking.reminded_at = now
    session.add(booking)
    return [r for r in rows if r]


def due_reminders(session: Session, day: date, now: datetime, *, limit: int = 1000) -> int:
    """Queue the reminders of confirmed bookings for `day` + 1 not yet reminded; returns how
    many bookings were reminded. Idempotent: `reminded_at` and the outbox key."""
    tomorrow = day + timedelta(days=1)
    done = 0
    while True:
        batch = session.exec(select(Booking).where(
            Booking.status == BookingStatus.CONFIRMED, Booking.confirmed_date == tomorrow,
            Booking.reminded_at.is_(None)).order_by(Booking.id).limit(limit)).all()
        batch = [b[0] if isinstance(b, tuple) else b for b in batch]
        if not batch:
            return done
        for booking in batch:
            reminder(session, booking, now)
            done += 1
        session.flush()


def confirm_attendance(session: Session, booking: Booking, now: datetime) -> bool:
    """The customer's 确认 on a reminder: False when it was already confirmed."""
    if booking.attendance_confirmed_at is not None:
        return False
    session.execute(update(Booking).where(Booking.id == booking.id)
                    .values(attendance_confirmed_at=now, updated_at=now))
    booking.attendance_confirmed_at = now
    return True
